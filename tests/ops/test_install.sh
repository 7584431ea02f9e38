#!/usr/bin/env bash
# test_install: the fresh-machine install path for real. Runs scripts/install-deps.sh
# with PATH=/usr/bin:/bin, an empty environment and a fresh HOME (no Go tools, no Kafka
# jars, no Maven or Go module cache, no venv), then checks that every tool the tests
# need is there and runs; then runs it again (idempotent: nothing reinstalled). Debian
# packages already installed stay (apt is a no-op then); the Kafka jars, Go modules and
# PyPI packages are downloaded again from their registries. Label `install` (slow:
# ~4-6 minutes, mostly compiling the Go tools): `ctest -LE install` skips it.
source "$(dirname "$0")/lib.sh"
H="$OPS_TMP/home"
mkdir -p "$H"
OPS_CLEANUPS+=("chmod -R u+w '$H'") # the Go module cache is read-only
FRESH=(env -i PATH=/usr/bin:/bin HOME="$H" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}")
[[ -n "${CI:-}" ]] && FRESH+=(CI="$CI")

t0=$SECONDS
check "install-deps.sh with PATH=/usr/bin:/bin and a fresh HOME exits 0" \
  bash -c "${FRESH[*]@Q} bash '$OPS_ROOT/scripts/install-deps.sh' >'$OPS_TMP/install1.log' 2>&1 || { tail -n 30 '$OPS_TMP/install1.log'; exit 1; }"
log "first install took $((SECONDS - t0)) s"
echo "# first install: $((SECONDS - t0)) s"

T=(env -i PATH="$H/go/bin:/usr/bin:/bin" HOME="$H")
tool() { check "tool: $*" "${T[@]}" "$@"; }
tool grpcurl -version
tool ghz --version
tool grpc-health-probe -version
tool protoc-gen-go --version
tool protoc-gen-go-grpc --version
tool buf --version
check "the Go tools are the pinned versions" bash -c "
  for t in grpcurl ghz grpc-health-probe protoc-gen-go protoc-gen-go-grpc buf; do
    v=\$(${T[*]@Q} '$OPS_ROOT/scripts/install-go-tools.sh' --list | sed -n \"s#^\$t|.*@##p\")
    f=--version; [[ \$t == grpcurl || \$t == grpc-health-probe ]] && f=-version
    out=\$('$H/go/bin/'\$t \$f 2>&1); [[ \$out == *\"\${v#v}\"* ]] || { echo \"\$t: \$out, want \$v\"; exit 1; }
  done"
check "Kafka jars in the fresh HOME" bash -c "ls '$H/.cache/concert/kafka/libs/'kafka_2.13-*.jar"
check "a broker starts from them" bash -c "
  ${T[*]@Q} CONCERT_KAFKA_HOME='$H/.cache/concert/kafka' '$OPS_ROOT/scripts/kafka.sh' start --nodes 1 --dir '$OPS_TMP/k' >'$OPS_TMP/k.log' 2>&1;
  rc=\$?; '$OPS_ROOT/scripts/kafka.sh' stop --dir '$OPS_TMP/k' >/dev/null 2>&1; exit \$rc"
check "the venv: grpcio, grpcio-tools, PyYAML, check-jsonschema" bash -c "
  '$H/.cache/concert/venv/bin/python' -c 'import grpc, grpc_tools.protoc, yaml' &&
  '$H/.cache/concert/venv/bin/check-jsonschema' --version"
for t in promtool redis-server redis-sentinel redis-cli java javac mvn protoc protoc-c cmake ninja gcc pkg-config openssl python3; do
  check "on /usr/bin:/bin: $t" "${T[@]}" bash -c "command -v $t"
done
check "promtool runs" "${T[@]}" promtool --version
check "java is 17 or newer" bash -c "v=\$(${T[*]@Q} java -version 2>&1 | sed -n 's/.*version \"\\([0-9]*\\).*/\\1/p'); ((v >= 17))"
check "pkg-config finds every C library" "${T[@]}" pkg-config --exists grpc gpr libprotobuf-c hiredis rdkafka libuv criterion openssl

t1=$SECONDS
check_grep "a second run reinstalls nothing" 'already installed.*installed=\[\] already=|installed=\[\] already=' \
  bash -c "${FRESH[*]@Q} bash '$OPS_ROOT/scripts/install-deps.sh' 2>&1"
check "... and is quick (under 60 s)" test $((SECONDS - t1)) -lt 60
echo "# second run: $((SECONDS - t1)) s"
ops_done
