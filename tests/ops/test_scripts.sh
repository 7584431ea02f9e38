#!/usr/bin/env bash
# test_scripts: every script's --help prints help and does nothing else: exit 0, a
# usage text on stdout, and nothing written to a fresh HOME (install-kafka.sh and
# install-go-tools.sh used to install instead). An unknown argument fails (non-zero,
# a reason on stderr) and changes nothing either.
source "$(dirname "$0")/lib.sh"
H="$OPS_TMP/home"
for s in "$OPS_ROOT"/scripts/*.sh; do
  n="$(basename "$s")"
  mkdir -p "$H"
  check_rc "$n --help exits 0" 0 env -i PATH=/usr/bin:/bin HOME="$H" bash "$s" --help
  check_grep "$n --help prints a usage text" '[Uu]sage|^ *scripts/' env -i PATH=/usr/bin:/bin HOME="$H" bash "$s" --help
  check "$n --help wrote nothing to HOME" bash -c "[[ -z \$(ls -A '$H') ]]"
  check "$n --no-such-flag fails with a reason" bash -c "! env -i PATH=/usr/bin:/bin HOME='$H' bash '$s' --no-such-flag 2>'$OPS_TMP/err' >/dev/null && [[ -s '$OPS_TMP/err' ]]"
  check "$n --no-such-flag wrote nothing to HOME" bash -c "[[ -z \$(ls -A '$H') ]]"
  rm -rf "$H"
done
ops_done
