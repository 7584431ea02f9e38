#!/usr/bin/env bash
# check-build-types.sh: configures and builds the whole project, tests included, with
# warnings as errors, once per CMake build type given (default: Release MinSizeRel),
# each in its own folder under --root (default build-types/). GCC's format-truncation
# and null-argument warnings only appear with optimisation, so the sanitizer build of
# scripts/test.sh cannot see them; ctest runs this as the test `build_types`.
#   scripts/check-build-types.sh [--root DIR] [TYPE...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$ROOT/build-types"
types=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --root) [ $# -ge 2 ] || { echo "check-build-types: --root needs a folder" >&2; exit 2; }; out="$2"; shift ;;
    Debug|Release|RelWithDebInfo|MinSizeRel) types+=("$1") ;;
    *) echo "check-build-types: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#types[@]} -gt 0 ] || types=(Release MinSizeRel)
for t in "${types[@]}"; do
  dir="$out/$t"
  mkdir -p "$out"
  echo "check-build-types: $t in $dir"
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$t" -DCONCERT_TESTS=ON -DCONCERT_WERROR=ON \
    -DCONCERT_SANITIZE=OFF >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
  ninja -C "$dir" >"$dir.build.log" 2>&1 || { grep -E 'error|warning' "$dir.build.log" | head -40; echo "check-build-types: $t does not build (log $dir.build.log)" >&2; exit 1; }
done
echo "check-build-types: ${types[*]} build"
