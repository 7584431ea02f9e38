#!/usr/bin/env bash
# install-python.sh: owns the project's Python virtual environment, used by the
# Python example client (client/python/), the generated-clients check and the
# compose-file check: grpcio + grpcio-tools (stubs generated from proto/ at build/test
# time), grpcio-status + googleapis-common-protos (google.rpc error details, decoded
# by tests/ops/test_error_details.sh), check-jsonschema (it ships the Compose
# Specification schema) and PyYAML, all pinned, from PyPI. Idempotent: skips pip
# when the venv already holds these pins.
#   scripts/install-python.sh [--help]
# Environment: CONCERT_VENV (default ~/.cache/concert/venv), CONCERT_PYTHON
# (interpreter to build it with, default python3; needs Debian's python3-venv).
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "install-python: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

VENV="${CONCERT_VENV:-$HOME/.cache/concert/venv}"
PY="${CONCERT_PYTHON:-python3}"
PINS=(grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-status==1.85.1 googleapis-common-protos==1.76.0
      check-jsonschema==0.39.0 PyYAML==6.0.3)
stamp="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)"

command -v "$PY" >/dev/null 2>&1 || { echo "install-python: '$PY' not found on PATH" >&2; exit 1; }
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9 # one installer at a time

if [[ -x "$VENV/bin/python" && -f "$VENV/.installed" && "$(cat "$VENV/.installed")" == "$stamp" ]] &&
   "$VENV/bin/python" -c 'import grpc, grpc_tools, grpc_status, google.rpc.error_details_pb2, yaml' 2>/dev/null && [[ -x "$VENV/bin/check-jsonschema" ]]; then
  echo "python venv already installed: $VENV (${PINS[*]})"
  exit 0
fi
t0=$SECONDS
# A working venv gets the new pins added in place (tests may be using it right now);
# only a broken one is made again.
if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || { echo "install-python: '$PY -m venv' failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
if ! "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >"$VENV.log" 2>&1; then
  echo "install-python: pip failed, see $VENV.log:" >&2
  tail -n 20 "$VENV.log" >&2
  exit 1
fi
"$VENV/bin/python" -c 'import grpc, grpc_tools, grpc_status, google.rpc.error_details_pb2, yaml' ||
  { echo "install-python: the venv does not import grpc, grpc_status and google.rpc" >&2; exit 1; }
echo "$stamp" >"$VENV/.installed"
echo "python venv installed: $VENV (${PINS[*]}, $((SECONDS - t0))s)"
