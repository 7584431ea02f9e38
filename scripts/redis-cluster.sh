#!/usr/bin/env bash
# redis-cluster.sh: owns local Redis Clusters for tests, drills and benchmarks: Debian
# redis-server processes in cluster mode on free 127.0.0.1 ports, with all state
# (configs, data, logs, pid files) under one --dir. It only ever signals the pids
# recorded in that dir (and checks that each is our redis-server for that node).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/redis-cluster.sh COMMAND --dir DIR [options]

A local Redis Cluster (Debian redis-server, cluster-enabled yes) on 127.0.0.1 only.

commands:
  start --dir DIR [--primaries 3] [--replicas 1] [--node-timeout-ms 1000]
        [--maxmemory MB]
        Start primaries*(1+replicas) nodes on free ports (each with its own cluster
        bus port), join them with `redis-cli --cluster create`, and wait until every
        node reports cluster_state:ok. Prints the seed list (host:port,...; also in
        DIR/seeds). If DIR already holds a stopped cluster, restarts its nodes.
  stop --dir DIR
        SIGTERM every node (SIGKILL after 10 s). Data stays in DIR.
  kill-node --dir DIR --node N
        SIGKILL node N (1-based; failure drill).
  start-node --dir DIR --node N
        Restart node N with its nodes.conf and data; waits until the cluster is ok
        again from that node's point of view.
  move-slot --dir DIR --slot S --to-node N [--batch K] [--pause-ms MS]
        Live resharding of one slot to node N (a primary) while clients run: the
        steps of `redis-cli --cluster reshard` (SETSLOT IMPORTING/MIGRATING,
        MIGRATE in batches of K keys (default 100) with MS between batches
        (default 0), SETSLOT NODE everywhere), plus a fence: while the slot moves,
        every concert-server/payment-consumer Lua script on a hash tag of that slot
        answers TRYAGAIN (the clients retry), because our scripts touch keys they do
        not declare and would otherwise see half-moved data. See docs/DATA.md.
  status --dir DIR
        One line per node: N, port, pid or "down", role (master/slave) as it says.
  seeds --dir DIR
        Print the seed list.
  port --dir DIR --node N
        Print node N's port.
  -h, --help

Nodes 1..primaries start as the primaries; the rest are their replicas, in order
(redis-cli assigns them). Persistence is off (appendonly no, no RDB snapshots) so
that a killed node comes back empty unless a replica re-syncs it: a drill tests
failover, not disk recovery.

environment:
  CONCERT_REDIS_CLUSTER_TIMEOUT   seconds to wait for cluster_state:ok (default 30)

layout of DIR: seeds, nodes (count), nodeN/{redis.conf, nodes.conf, redis.log}, nodeN.pid
EOF
}

die() { echo "redis-cluster.sh: $*" >&2; exit 1; }
log() { echo "redis-cluster.sh: $*" >&2; }

CMD="${1:-}"
[[ -n "$CMD" ]] || { usage >&2; exit 2; }
shift
case "$CMD" in -h|--help|help) usage; exit 0 ;; esac

DIR="" PRIMARIES=3 REPLICAS=1 NODE="" NODE_TIMEOUT=1000 MAXMEM="" SLOT="" BATCH=100 PAUSE_MS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
    --primaries) PRIMARIES="${2:?--primaries needs a value}"; shift 2 ;;
    --replicas) REPLICAS="${2:?--replicas needs a value}"; shift 2 ;;
    --node) NODE="${2:?--node needs a value}"; shift 2 ;;
    --node-timeout-ms) NODE_TIMEOUT="${2:?--node-timeout-ms needs a value}"; shift 2 ;;
    --maxmemory) MAXMEM="${2:?--maxmemory needs a value}"; shift 2 ;;
    --slot) SLOT="${2:?--slot needs a value}"; shift 2 ;;
    --to-node) NODE="${2:?--to-node needs a value}"; shift 2 ;;
    --batch) BATCH="${2:?--batch needs a value}"; shift 2 ;;
    --pause-ms) PAUSE_MS="${2:?--pause-ms needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n "$DIR" ]] || die "--dir DIR is required"
[[ "$PRIMARIES" =~ ^[0-9]+$ && "$PRIMARIES" -ge 3 ]] || die "--primaries must be at least 3 (Redis Cluster needs 3 primaries)"
[[ "$REPLICAS" =~ ^[0-9]+$ ]] || die "--replicas must be a number"
if [[ "$CMD" == start ]]; then mkdir -p "$DIR"; fi
[[ -d "$DIR" ]] || die "no such dir: $DIR"
DIR="$(cd "$DIR" && pwd)"
TIMEOUT="${CONCERT_REDIS_CLUSTER_TIMEOUT:-30}"
command -v redis-server >/dev/null || die "redis-server not found (Debian package redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (Debian package redis-tools)"

node_count() { [[ -f "$DIR/nodes" ]] && cat "$DIR/nodes" || echo 0; }
node_dir() { echo "$DIR/node$1"; }
node_port() { sed -n 's/^port //p' "$(node_dir "$1")/redis.conf" 2>/dev/null | head -1; }
need_node() {
  [[ "$NODE" =~ ^[0-9]+$ && "$NODE" -ge 1 && "$NODE" -le "$(node_count)" ]] || die "--node must be 1..$(node_count)"
}

# pid of node N if it is alive AND is our redis-server for that node's port.
node_pid() {
  local pidf="$DIR/node$1.pid" pid
  [[ -f "$pidf" ]] || return 1
  pid="$(cat "$pidf")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  local st
  st="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ "$st" != Z && "$st" != X ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server 127.0.0.1:$(node_port "$1")" || return 1
  echo "$pid"
}

# N free ports on 127.0.0.1 below the ephemeral range; never 6379 or its bus port.
pick_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
want = int(sys.argv[1]); got = []; held = []
cands = [p for p in range(20000, 32000) if p not in (6379, 16379)]
random.shuffle(cands)
for p in cands:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close(); continue
    held.append(s); got.append(p)
    if len(got) == want: break
for s in held: s.close()
print(" ".join(map(str, got)))
PY
}

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

launch_node() {
  local n="$1" d pid
  d="$(node_dir "$n")"
  (cd "$d" && exec redis-server "$d/redis.conf" >>"$d/redis.log" 2>&1) &
  pid=$!
  echo "$pid" >"$DIR/node$n.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    cli "$(node_port "$n")" PING >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { tail -5 "$d/redis.log" >&2; die "node $n exited at start"; }
    sleep 0.05
  done
  die "node $n did not answer PING"
}

cluster_ok() { cli "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | grep -q '^cluster_state:ok'; }

# Every running node agrees the cluster is ok and knows every slot.
wait_ok() {
  local deadline=$((SECONDS + TIMEOUT)) n all
  while ((SECONDS < deadline)); do
    all=1
    for ((n = 1; n <= $(node_count); n++)); do
      node_pid "$n" >/dev/null || continue
      cluster_ok "$(node_port "$n")" || { all=0; break; }
    done
    ((all)) && return 0
    sleep 0.1
  done
  return 1
}

write_seeds() {
  local n s=""
  for ((n = 1; n <= $(node_count); n++)); do s+="${s:+,}127.0.0.1:$(node_port "$n")"; done
  echo "$s" >"$DIR/seeds"
  echo "$s"
}

cmd_start() {
  if [[ "$(node_count)" -gt 0 ]]; then
    local n
    for ((n = 1; n <= $(node_count); n++)); do node_pid "$n" >/dev/null || launch_node "$n"; done
    wait_ok || die "cluster in $DIR not ok after ${TIMEOUT}s"
    write_seeds
    return
  fi
  local total=$((PRIMARIES * (1 + REPLICAS))) ports n addrs=()
  read -r -a ports <<<"$(pick_ports $((total * 2)))"
  [[ "${#ports[@]}" -eq $((total * 2)) ]] || die "could not find $((total * 2)) free ports"
  echo "$total" >"$DIR/nodes"
  for ((n = 1; n <= total; n++)); do
    local d port bus
    d="$(node_dir "$n")"
    port="${ports[$(((n - 1) * 2))]}"
    bus="${ports[$(((n - 1) * 2 + 1))]}"
    mkdir -p "$d"
    {
      echo "port $port"
      echo "bind 127.0.0.1"
      echo "cluster-enabled yes"
      echo "cluster-port $bus"
      echo "cluster-config-file $d/nodes.conf"
      echo "cluster-node-timeout $NODE_TIMEOUT"
      echo "cluster-replica-validity-factor 0"
      # A failed primary must not stop the others: with full coverage required (the
      # default) every node answers CLUSTERDOWN until the failover is over.
      echo "cluster-require-full-coverage no"
      echo "cluster-allow-reads-when-down no"
      echo "dir $d"
      echo "save \"\""
      echo "appendonly no"
      echo "daemonize no"
      echo "protected-mode no"
      if [[ -n "$MAXMEM" ]]; then echo "maxmemory ${MAXMEM}mb"; echo "maxmemory-policy volatile-lru"; fi
    } >"$d/redis.conf"
    launch_node "$n"
    addrs+=("127.0.0.1:$port")
  done
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$REPLICAS" --cluster-yes \
      >"$DIR/create.log" 2>&1; then
    cat "$DIR/create.log" >&2
    cmd_stop
    die "redis-cli --cluster create failed"
  fi
  wait_ok || { cmd_stop; die "cluster not ok after ${TIMEOUT}s"; }
  write_seeds
}

cmd_stop() {
  local n pid pids=()
  for ((n = 1; n <= $(node_count); n++)); do
    if pid="$(node_pid "$n")"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  local deadline=$((SECONDS + 10)) p
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null || true
  done
  return 0
}

# The port of the primary serving SLOT now, from any running node's CLUSTER NODES:
# "<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>".
slot_owner() {
  local n port
  for ((n = 1; n <= $(node_count); n++)); do
    node_pid "$n" >/dev/null || continue
    port="$(cli "$(node_port "$n")" CLUSTER NODES 2>/dev/null | tr -d '\r' | awk -v s="$1" '
      $3 ~ /master/ && $3 !~ /fail/ {
        for (i = 9; i <= NF; i++) {
          if ($i ~ /^\[/) continue
          split($i, r, "-"); lo = r[1] + 0; hi = (r[2] == "" ? lo : r[2] + 0)
          if (s >= lo && s <= hi) { split($2, a, "[:@]"); print a[2]; exit }
        }
      }')"
    [[ -n "$port" ]] && { echo "$port"; return 0; }
  done
  return 1
}

cmd_move_slot() {
  [[ "$SLOT" =~ ^[0-9]+$ && "$SLOT" -lt 16384 ]] || die "--slot must be 0..16383"
  need_node
  local dst src src_id dst_id
  dst="$(node_port "$NODE")"
  src="$(slot_owner "$SLOT")" || die "no node serves slot $SLOT"
  [[ "$src" != "$dst" ]] || { log "slot $SLOT is already on node $NODE"; return 0; }
  src_id="$(cli "$src" CLUSTER MYID | tr -d '\r')"
  dst_id="$(cli "$dst" CLUSTER MYID | tr -d '\r')"
  # Every hash tag of ours in the slot gets a fence on both sides before anything moves.
  local tags
  tags="$(cli "$src" --raw CLUSTER GETKEYSINSLOT "$SLOT" 1000000 | sed -n 's/^\(cc:{[^}]*}:\).*/\1/p' | sort -u)"
  local t
  for t in $tags; do cli "$src" SET "${t}frozen" 1 >/dev/null; done
  cli "$dst" CLUSTER SETSLOT "$SLOT" IMPORTING "$src_id" >/dev/null
  for t in $tags; do printf 'ASKING\nSET %s 1\n' "${t}frozen" | cli "$dst" >/dev/null; done
  cli "$src" CLUSTER SETSLOT "$SLOT" MIGRATING "$dst_id" >/dev/null
  local keys moved=0
  while :; do
    mapfile -t keys < <(cli "$src" --raw CLUSTER GETKEYSINSLOT "$SLOT" $((BATCH + 64)) | grep -v ':frozen$' | head -n "$BATCH")
    [[ "${#keys[@]}" -gt 0 && -n "${keys[0]}" ]] || break
    local out
    out="$(cli "$src" MIGRATE 127.0.0.1 "$dst" "" 0 5000 KEYS "${keys[@]}")"
    [[ "$out" == OK || "$out" == NOKEY ]] || die "MIGRATE failed: $out"
    moved=$((moved + ${#keys[@]}))
    if [[ "$PAUSE_MS" -gt 0 ]]; then sleep "$(awk -v m="$PAUSE_MS" 'BEGIN { printf "%.3f", m / 1000 }')"; fi
  done
  for t in $tags; do cli "$src" DEL "${t}frozen" >/dev/null; done
  cli "$dst" CLUSTER SETSLOT "$SLOT" NODE "$dst_id" >/dev/null
  cli "$src" CLUSTER SETSLOT "$SLOT" NODE "$dst_id" >/dev/null
  local n p
  for ((n = 1; n <= $(node_count); n++)); do
    p="$(node_port "$n")"
    [[ "$p" == "$src" || "$p" == "$dst" ]] && continue
    node_pid "$n" >/dev/null || continue
    [[ "$(cli "$p" ROLE | head -1 | tr -d '\r')" == master ]] || continue
    cli "$p" CLUSTER SETSLOT "$SLOT" NODE "$dst_id" >/dev/null
  done
  for t in $tags; do cli "$dst" DEL "${t}frozen" >/dev/null; done
  log "slot $SLOT moved from 127.0.0.1:$src to 127.0.0.1:$dst ($moved keys, fenced tags: $(echo $tags | wc -w))"
}

case "$CMD" in
  start) cmd_start ;;
  move-slot) cmd_move_slot ;;
  stop) cmd_stop ;;
  kill-node)
    need_node
    pid="$(node_pid "$NODE")" || die "node $NODE is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    ;;
  start-node)
    need_node
    node_pid "$NODE" >/dev/null && die "node $NODE is already running"
    launch_node "$NODE"
    deadline=$((SECONDS + TIMEOUT))
    until cluster_ok "$(node_port "$NODE")"; do
      ((SECONDS < deadline)) || die "node $NODE: cluster not ok after ${TIMEOUT}s"
      sleep 0.1
    done
    ;;
  status)
    for ((n = 1; n <= $(node_count); n++)); do
      port="$(node_port "$n")"
      if pid="$(node_pid "$n")"; then
        role="$(cli "$port" ROLE 2>/dev/null | head -1 | tr -d '\r')"
        echo "$n $port $pid ${role:-?}"
      else
        echo "$n $port down"
      fi
    done
    ;;
  seeds) [[ -f "$DIR/seeds" ]] && cat "$DIR/seeds" || die "no cluster in $DIR" ;;
  port) need_node; node_port "$NODE" ;;
  *) die "unknown command '$CMD' (see --help)" ;;
esac
