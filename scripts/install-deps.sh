#!/usr/bin/env bash
# Installs every build and test dependency of the project, idempotently and without
# questions, on Debian 12 as root (or with sudo): Debian packages (compilers, gRPC,
# Redis, a JDK and Maven when no JDK 17+ / mvn is on PATH, promtool from `prometheus`,
# python3-venv, openssl), then the Kafka jars (install-kafka.sh), the Go tools
# (install-go-tools.sh, which installs Debian's Go when no Go is found) and the
# Python venv (install-python.sh). Used by the README commands, .ci/run and the
# Dockerfile. Safe to run again.
#   scripts/install-deps.sh            # everything
#   scripts/install-deps.sh --debian   # only the Debian packages
#   scripts/install-deps.sh --build    # only what compiling needs (the Dockerfile's build stage)
#   scripts/install-deps.sh --help
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
only_debian=0 build_only=0
for a in "$@"; do
  case "$a" in
    -h|--help) usage; exit 0 ;;
    --debian) only_debian=1 ;;
    --build) only_debian=1 build_only=1 ;;
    *) echo "install-deps: unknown argument: $a" >&2; exit 2 ;;
  esac
done

pkgs=(build-essential cmake ninja-build pkg-config git python3
      libgrpc-dev protobuf-compiler libprotobuf-c-dev protobuf-c-compiler
      libhiredis-dev librdkafka-dev libuv1-dev libcriterion-dev
      redis-server redis-sentinel gnuplot-nox procps
      prometheus python3-venv openssl libssl-dev util-linux ca-certificates jq python3-cryptography
      nghttp2-client valgrind strace)
# nghttp2-client: h2load, the near-free HTTP/2 client of scripts/bench-h2load.sh (issue 13);
# valgrind, strace: the per-call evidence (callgrind, strace -c) of docs/PERFORMANCE.md
# python3-cryptography: the admission-receipt check (client/python/verify_receipt.py)
# prometheus: promtool, which checks our /metrics pages and alert rules
if [ "$build_only" -eq 1 ]; then
  pkgs=(build-essential cmake ninja-build pkg-config git ca-certificates libgrpc-dev protobuf-compiler
        libprotobuf-c-dev protobuf-c-compiler libhiredis-dev librdkafka-dev libuv1-dev libssl-dev)
fi
# A JDK 17+ and Maven for Kafka (jars from Maven Central) and the Java client check,
# from Debian only when none is on PATH.
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
need_jdk=0
if ! command -v javac >/dev/null 2>&1; then need_jdk=1
else v="$(java_major)"; [ "${v:-0}" -ge 17 ] || need_jdk=1
fi
[ "$build_only" -eq 0 ] && [ "$need_jdk" -eq 1 ] && pkgs+=(openjdk-17-jdk-headless)
[ "$build_only" -eq 1 ] || command -v mvn >/dev/null 2>&1 || pkgs+=(maven)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: installed ${#missing[@]} Debian packages: ${missing[*]}"
else
  echo "install-deps: Debian packages present"
fi
[ "$only_debian" -eq 1 ] && exit 0

# Debian's JDK may not be on PATH yet in this shell's hash table.
hash -r
"$here/install-kafka.sh"
"$here/install-go-tools.sh"
"$here/install-python.sh"

