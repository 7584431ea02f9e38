#!/usr/bin/env bash
# install-go-tools.sh: owns the pinned Go CLI tools used by tests and benchmarks
# (grpcurl, ghz, grpc-health-probe). Idempotent: `go install`s each pinned
# version into ${GOBIN:-$HOME/go/bin}, skipping a tool whose binary already
# reports that version. Exits non-zero if any tool failed to install or run.
set -euo pipefail

# name|package@version|version flag|ldflags variable (the releases stamp their
# version this way; `go install` alone would report "dev")
TOOLS=(
  "grpcurl|github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3|-version|main.version"
  "ghz|github.com/bojand/ghz/cmd/ghz@v0.121.0|--version|main.version"
  "grpc-health-probe|github.com/grpc-ecosystem/grpc-health-probe@v0.4.62|-version|main.versionTag"
)

command -v go >/dev/null 2>&1 || { echo "install-go-tools: go not found on PATH" >&2; exit 1; }
BIN_DIR="${GOBIN:-$HOME/go/bin}"
mkdir -p "$BIN_DIR"
export GOBIN="$BIN_DIR"

# True if the binary runs and prints the pinned version.
has_version() { # BIN FLAG VERSION
  [[ -x "$1" ]] || return 1
  local out
  out="$("$1" "$2" 2>&1)" || return 1
  [[ "$out" == *"$3"* ]]
}

installed=() skipped=() failed=()
for spec in "${TOOLS[@]}"; do
  IFS='|' read -r name pkgver vflag var <<<"$spec"
  ver="${pkgver##*@}"
  bin="$BIN_DIR/$name"
  if has_version "$bin" "$vflag" "$ver"; then
    skipped+=("$name@$ver")
    continue
  fi
  if ! go install -buildvcs=false -ldflags "-X $var=$ver" "$pkgver"; then
    echo "install-go-tools: FAILED: go install $pkgver" >&2
    failed+=("$name@$ver")
  elif ! has_version "$bin" "$vflag" "$ver"; then
    echo "install-go-tools: FAILED: $bin $vflag does not report $ver: $("$bin" "$vflag" 2>&1 | head -1)" >&2
    failed+=("$name@$ver")
  else
    installed+=("$name@$ver")
  fi
done

echo "go tools in $BIN_DIR: installed=[${installed[*]:-}] already=[${skipped[*]:-}] failed=[${failed[*]:-}]"
[[ ${#failed[@]} -eq 0 ]]
