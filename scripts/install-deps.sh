#!/usr/bin/env bash
# Installs every build and test dependency of the project, idempotently and without
# questions: Debian packages now; Kafka jars and Go tools through their own scripts.
# Used by the README commands, .ci/run and the Dockerfile. Safe to run again.
#   scripts/install-deps.sh            # everything
#   scripts/install-deps.sh --debian   # only the Debian packages (the Dockerfile's build stage)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
only_debian=0
for a in "$@"; do
  case "$a" in
    -h|--help) usage; exit 0 ;;
    --debian) only_debian=1 ;;
    *) echo "install-deps: unknown argument: $a" >&2; exit 2 ;;
  esac
done

pkgs=(build-essential cmake ninja-build pkg-config git python3
      libgrpc-dev protobuf-compiler libprotobuf-c-dev protobuf-c-compiler
      libhiredis-dev librdkafka-dev libuv1-dev libcriterion-dev
      redis-server redis-sentinel gnuplot-nox procps
      prometheus)  # prometheus: promtool, which checks our /metrics pages and alert rules

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

# Later parts (Kafka broker jars, Go tools) join here when present.
if [ -x "$here/install-kafka.sh" ]; then "$here/install-kafka.sh"; fi
if [ -x "$here/install-go-tools.sh" ]; then "$here/install-go-tools.sh"; fi
