# scripts/lib/proc.sh: shell helpers shared by demo.sh and bench.sh (sourced, not run).

# Stops one process we started: SIGTERM, up to 5 s, then SIGKILL. Only this pid.
stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
