#!/usr/bin/env bash
# install-go-tools.sh: owns the pinned Go command-line tools of the tests, benchmarks
# and the image: grpcurl, ghz, grpc-health-probe, protoc-gen-go, protoc-gen-go-grpc
# and buf, built with `go install` from the Go module proxy into ${GOBIN:-~/go/bin}.
#   scripts/install-go-tools.sh [--only NAME[,NAME...]] [--no-apt] [--list] [--help]
# Which Go: $CONCERT_GO if set, else the newest of `go` on PATH, /usr/local/go/bin/go
# and /usr/lib/go-*/bin/go; with none, Debian's golang-go (Go 1.19 on Debian 12) is
# installed first (not with --no-apt). Go 1.22 or newer gets the "current" pins,
# Go 1.19-1.21 the "go1.19" pins (the last releases that build with Debian 12's Go).
# Idempotent: a tool whose binary already reports its pinned version is skipped.
# GOTOOLCHAIN=local: the go command never fetches another toolchain by itself.
# Exits non-zero if a tool failed to install or does not report its version.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
only="" apt=1 list=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --only) only="${2:?--only needs NAME[,NAME...]}"; shift 2 ;;
    --only=*) only="${1#--only=}"; shift ;;
    --no-apt) apt=0; shift ;;
    --list) list=1; shift ;;
    *) echo "install-go-tools: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

# name|package@version|version flag|ldflags variable that stamps the version ("" = none:
# the tool knows its own version; the releases stamp it this way, `go install` alone
# would report "dev").
CURRENT=(
  "grpcurl|github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3|-version|main.version"
  "ghz|github.com/bojand/ghz/cmd/ghz@v0.121.0|--version|main.version"
  "grpc-health-probe|github.com/grpc-ecosystem/grpc-health-probe@v0.4.62|-version|main.versionTag"
  "protoc-gen-go|google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12|--version|"
  "protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1|--version|"
  "buf|github.com/bufbuild/buf/cmd/buf@v1.75.0|--version|"
)
GO119=(
  "grpcurl|github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.8.7|-version|main.version"
  "ghz|github.com/bojand/ghz/cmd/ghz@v0.114.0|--version|main.version"
  "grpc-health-probe|github.com/grpc-ecosystem/grpc-health-probe@v0.4.15|-version|main.versionTag"
  "protoc-gen-go|google.golang.org/protobuf/cmd/protoc-gen-go@v1.31.0|--version|"
  "protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.3.0|--version|"
  "buf|github.com/bufbuild/buf/cmd/buf@v1.15.1|--version|"
)

export GOTOOLCHAIN=local
# "1.26.8" -> 12608 (comparable); "" when the binary is no Go.
go_num() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9]*\)\.\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \2 \4/p' |
  { read -r a b c && echo $((a * 10000 + b * 100 + ${c:-0})); } || true; }
pick_go() {
  local best="" best_n=0 g n
  if [[ -n "${CONCERT_GO:-}" ]]; then [[ -n "$(go_num "$CONCERT_GO")" ]] && echo "$CONCERT_GO"; return; fi
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go /usr/lib/go-*/bin/go; do
    [[ -n "$g" && -x "$g" ]] || continue
    n="$(go_num "$g")"
    [[ -n "$n" ]] && ((n > best_n)) && { best="$g"; best_n=$n; }
  done
  [[ -n "$best" ]] && echo "$best"
}

GO="$(pick_go || true)"
if [[ -z "$GO" ]]; then
  if [[ $apt == 0 ]]; then echo "install-go-tools: no Go found (and --no-apt)" >&2; exit 1; fi
  sudo=""; [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  echo "install-go-tools: no Go found; installing Debian's golang-go" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends golang-go >/dev/null ||
    { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends golang-go >/dev/null; }
  GO="$(pick_go || true)"
  [[ -n "$GO" ]] || { echo "install-go-tools: golang-go installed but no go found" >&2; exit 1; }
fi
n="$(go_num "$GO")"
if ((n >= 12200)); then set_name=current; TOOLS=("${CURRENT[@]}")
elif ((n >= 11900)); then set_name=go1.19; TOOLS=("${GO119[@]}")
else echo "install-go-tools: $GO is $("$GO" env GOVERSION); need Go 1.19 or newer" >&2; exit 1
fi
if [[ $list == 1 ]]; then
  echo "go: $GO ($("$GO" env GOVERSION)), pins: $set_name"
  printf '%s\n' "${TOOLS[@]}" | cut -d'|' -f1,2
  exit 0
fi

BIN_DIR="${GOBIN:-$HOME/go/bin}"
mkdir -p "$BIN_DIR"
export GOBIN="$BIN_DIR"
exec 9>"$BIN_DIR/.install-go-tools.lock"
flock 9 # one installer at a time

# True if the binary runs and prints the pinned version (with or without the v).
has_version() { # BIN FLAG VERSION
  [[ -x "$1" ]] || return 1
  local out
  out="$("$1" "$2" 2>&1)" || return 1
  [[ "$out" == *"$3"* || "$out" == *"${3#v}"* ]]
}

installed=() skipped=() failed=()
for spec in "${TOOLS[@]}"; do
  IFS='|' read -r name pkgver vflag var <<<"$spec"
  [[ -z "$only" || ",$only," == *",$name,"* ]] || continue
  ver="${pkgver##*@}"
  bin="$BIN_DIR/$name"
  if has_version "$bin" "$vflag" "$ver"; then
    skipped+=("$name@$ver")
    continue
  fi
  ld=()
  [[ -n "$var" ]] && ld=(-ldflags "-X $var=$ver")
  if ! "$GO" install -buildvcs=false "${ld[@]}" "$pkgver"; then
    echo "install-go-tools: FAILED: go install $pkgver" >&2
    failed+=("$name@$ver")
  elif ! has_version "$bin" "$vflag" "$ver"; then
    echo "install-go-tools: FAILED: $bin $vflag does not report $ver: $("$bin" "$vflag" 2>&1 | head -1)" >&2
    failed+=("$name@$ver")
  else
    installed+=("$name@$ver")
  fi
done

echo "go tools in $BIN_DIR (go $("$GO" env GOVERSION), pins $set_name): installed=[${installed[*]:-}] already=[${skipped[*]:-}] failed=[${failed[*]:-}]"
[[ ${#failed[@]} -eq 0 ]]
