#!/usr/bin/env bash
# test.sh: installs what is missing, builds with AddressSanitizer + UBSan and runs the
# whole test suite with ctest (Criterion binaries). Every test starts its own services
# (redis-server, Kafka, concert-server) on free loopback ports in temp folders and
# stops them by pid, so nothing already running on this machine is touched.
#   scripts/test.sh [--no-install] [--no-sanitize] [-- ctest args...]
# Environment: CONCERT_TEST_BUILD_DIR (default build-test).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

install=1
sanitize=ON
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --no-install) install=0 ;;
    --no-sanitize) sanitize=OFF ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[ "$install" -eq 1 ] && scripts/install-deps.sh

BUILD="${CONCERT_TEST_BUILD_DIR:-build-test}"
build_type=Debug
[ "$sanitize" = OFF ] && build_type=RelWithDebInfo
cmake -S . -B "$BUILD" -G Ninja -DCONCERT_TESTS=ON -DCONCERT_SANITIZE="$sanitize" \
  -DCMAKE_BUILD_TYPE="$build_type" > "$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; exit 1; }
ninja -C "$BUILD"

# Sanitizers: fail on the first UB report; leak checks stay on.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
ctest --test-dir "$BUILD" --output-on-failure --timeout 900 "${ctest_args[@]}"
