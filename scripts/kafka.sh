#!/usr/bin/env bash
# kafka.sh: owns local Apache Kafka (KRaft) clusters for tests, failure drills and
# benchmarks: 1 node or 3 nodes, each a combined broker+controller, on free
# 127.0.0.1 ports, with all state (configs, data, logs, pid files) under one
# --dir. It only ever signals the pids recorded in that dir. Jars come from
# scripts/install-kafka.sh (run automatically when missing). See --help.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_HOME="${CONCERT_KAFKA_HOME:-$HOME/.cache/concert/kafka}"
LIBS="$KAFKA_HOME/libs"
READY_TOPIC="_concert_ready"
START_TIMEOUT="${CONCERT_KAFKA_START_TIMEOUT:-90}"   # seconds, start/start-node
STOP_TIMEOUT="${CONCERT_KAFKA_STOP_TIMEOUT:-30}"     # seconds before SIGKILL
# Short-lived admin JVMs: small heap, fast start.
TOOL_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -Djava.awt.headless=true)

usage() {
  cat <<'EOF'
usage: scripts/kafka.sh COMMAND [options]

Local Apache Kafka (KRaft; each node is broker+controller) on 127.0.0.1 only.

commands:
  start --nodes 1|3 --dir DIR [--data-dir DATA]
        Format and start a cluster in DIR (or restart the stopped nodes of the
        cluster already in DIR, keeping its data). Waits until a topic with
        replication factor = node count can be created (timeout
        $CONCERT_KAFKA_START_TIMEOUT, default 90 s), then prints the bootstrap
        list (also in DIR/bootstrap). 1 node: RF 1, min.insync.replicas 1;
        3 nodes: RF 3, min.insync.replicas 2. --data-dir puts node N's log
        directory in DATA/nodeN instead of DIR/nodeN/data (e.g. a small
        filesystem for the disk-full drill); kept in DIR for restarts.
  stop --dir DIR
        SIGTERM the nodes whose pids are in DIR/nodeN.pid, SIGKILL after
        $CONCERT_KAFKA_STOP_TIMEOUT (default 30 s). Data stays in DIR.
  kill-node --dir DIR --node N
        SIGKILL node N (failure drill). Its data stays.
  start-node --dir DIR --node N
        Restart node N with its existing data; waits until it is back in the
        ISR of the readiness topic.
  create-topic --dir DIR --topic T --partitions P [--rf R] [--config K=V]...
        Create T (no-op if it exists). RF defaults to the node count.
  status --dir DIR
        One line per node: id, pid or "down", broker port.
  bootstrap --dir DIR
        Print the bootstrap list.
  tool --dir DIR CLASS [ARGS...]
        Run a Kafka admin tool class against the cluster, e.g.
        tool --dir D org.apache.kafka.tools.ConsumerGroupCommand --describe --all-groups
        (--bootstrap-server is added). TopicCommand, ConsumerGroupCommand,
        GetOffsetShell, MetadataQuorumCommand... live in org.apache.kafka.tools.
  -h, --help

environment:
  CONCERT_KAFKA_HOME   install dir holding libs/ (default ~/.cache/concert/kafka)
  CONCERT_KAFKA_HEAP   broker heap, e.g. "-Xmx512m" (default -Xmx512m for 1 node,
                       -Xmx384m each for 3 nodes)
  CONCERT_KAFKA_GC     JVM collector flags (default "-XX:+UseG1GC -XX:MaxGCPauseMillis=20")
  CONCERT_KAFKA_NETWORK_THREADS, CONCERT_KAFKA_IO_THREADS
                       num.network.threads / num.io.threads (default 2 / 4); the
                       measured effect of each: docs/PERFORMANCE.md, Kafka settings

layout of DIR: bootstrap, cluster.id, nodes, nodeN.pid, nodeN/{server.properties,
  data/, logs/server.log, stdout.log}
EOF
}

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

# ---------- argument parsing ----------
CMD="${1:-}"
[[ -n "$CMD" ]] || { usage >&2; exit 2; }
shift
case "$CMD" in
  -h|--help|help) usage; exit 0 ;;
  start|stop|kill-node|start-node|create-topic|status|bootstrap|tool) ;;
  *) echo "kafka.sh: unknown command '$CMD' (see --help)" >&2; exit 2 ;;
esac

DIR="" DATA_DIR="" NODES="" NODE="" TOPIC="" PARTITIONS="" RF="" TOPIC_CONFIGS=() TOOL_ARGS=()
if [[ "$CMD" == tool ]]; then
  [[ "${1:-}" == --dir && -n "${2:-}" ]] || die "usage: tool --dir DIR CLASS [ARGS...]"
  DIR="$2"; shift 2
  TOOL_ARGS=("$@")
  set --
fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
    --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift 2 ;;
    --nodes) NODES="${2:?--nodes needs a value}"; shift 2 ;;
    --node) NODE="${2:?--node needs a value}"; shift 2 ;;
    --topic) TOPIC="${2:?--topic needs a value}"; shift 2 ;;
    --partitions) PARTITIONS="${2:?--partitions needs a value}"; shift 2 ;;
    --rf|--replication-factor) RF="${2:?--rf needs a value}"; shift 2 ;;
    --config) TOPIC_CONFIGS+=("${2:?--config needs K=V}"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n "$DIR" ]] || die "--dir DIR is required"
if [[ "$CMD" == start ]]; then mkdir -p "$DIR"; fi
[[ -d "$DIR" ]] || die "no such dir: $DIR"
DIR="$(cd "$DIR" && pwd)"

# ---------- helpers ----------
ensure_libs() {
  if ! compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
    log "kafka jars missing in $LIBS; running install-kafka.sh"
    "$SCRIPT_DIR/install-kafka.sh" >&2
  fi
  command -v java >/dev/null 2>&1 || die "java not found on PATH"
}

node_count() { [[ -f "$DIR/nodes" ]] && cat "$DIR/nodes" || echo 0; }
node_dir() { echo "$DIR/node$1"; }
prop() { sed -n "s/^$2=//p" "$(node_dir "$1")/server.properties" | head -1; }
broker_port() { prop "$1" listeners | sed -n 's#^PLAINTEXT://127\.0\.0\.1:\([0-9]*\),.*#\1#p'; }

# pid of node N if it is alive AND is our java for that node (guards pid reuse).
node_pid() {
  local n="$1" pidf="$DIR/node$1.pid" pid
  [[ -f "$pidf" ]] || return 1
  pid="$(cat "$pidf")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(node_dir "$n")/server.properties" || return 1
  echo "$pid"
}

# True while PID is a live process (a zombie whose parent has not reaped it
# yet counts as dead).
alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints N distinct free ports on 127.0.0.1, below the ephemeral range so an
# outgoing connection cannot grab them between pick and bind. Never 9092/9093.
pick_ports() {
  local want="$1"
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$want" <<'PY'
import random, socket, sys
want = int(sys.argv[1]); got = []; held = []
cands = [p for p in range(20000, 32000) if p not in (9092, 9093)]
random.shuffle(cands)
for p in cands:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close(); continue
    held.append(s); got.append(p)  # keep bound until all are picked: distinct
    if len(got) == want: break
for s in held: s.close()
print(" ".join(map(str, got)))
PY
  else
    local ports=() p
    while [[ ${#ports[@]} -lt $want ]]; do
      p=$((20000 + RANDOM % 12000))
      [[ " ${ports[*]} " == *" $p "* ]] && continue
      port_open "$p" && continue
      ports+=("$p")
    done
    echo "${ports[*]}"
  fi
}

tool_log4j() {
  local f="$DIR/tools-log4j2.properties"
  [[ -f "$f" ]] || cat >"$f" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %d{HH:mm:ss.SSS} %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
  echo "$f"
}

# JVM flags to use the class-data-sharing archive KIND (broker|tools) that
# install-kafka.sh trained, if it was trained on this JDK. The JVM silently
# ignores an archive that does not match the jars.
CDS_DIR="$KAFKA_HOME/cds"
CDS_OK=""
CDS_FLAGS=()
cds_flags() { # KIND: sets CDS_FLAGS
  CDS_FLAGS=()
  if [[ -z "$CDS_OK" ]]; then
    CDS_OK=no
    if [[ "${CONCERT_KAFKA_CDS:-1}" != 0 && -f "$CDS_DIR/jdk" ]] &&
       [[ "$(cat "$CDS_DIR/jdk")" == "$(java -version 2>&1 | tr -s ' \n' ' ')" ]]; then
      CDS_OK=yes
    fi
  fi
  if [[ $CDS_OK == yes && -f "$CDS_DIR/$1.jsa" ]]; then
    CDS_FLAGS=("-XX:SharedArchiveFile=$CDS_DIR/$1.jsa" -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off)
  fi
}

run_class() { # CLASS ARGS... (admin / storage tools)
  local cls="$1"; shift
  cds_flags tools
  java "${TOOL_JVM_OPTS[@]}" "${CDS_FLAGS[@]+"${CDS_FLAGS[@]}"}" -Dlog4j2.configurationFile="$(tool_log4j)" -cp "$LIBS/*" "$cls" "$@"
}

# A Kafka cluster id (base64url of a random UUID, as `StorageTool random-uuid`
# prints), made without paying for a JVM start when python3 is there.
new_cluster_id() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"): print(s); break'
  else
    run_class kafka.tools.StorageTool random-uuid
  fi
}

bootstrap() { [[ -f "$DIR/bootstrap" ]] || die "no cluster in $DIR (no $DIR/bootstrap)"; cat "$DIR/bootstrap"; }

write_node_config() { # N NODES BROKER_PORT VOTERS
  local n="$1" nodes="$2" bport="$3" voters="$4" cport="$5" nd
  nd="$(node_dir "$n")"
  local data="$nd/data"
  [[ -n "$DATA_DIR" ]] && data="$(cd "$DATA_DIR" && pwd)/node$n"
  mkdir -p "$data" "$nd/logs"
  local rf=$nodes minisr=1
  [[ $nodes -ge 3 ]] && minisr=2
  cat >"$nd/server.properties" <<EOF
# generated by scripts/kafka.sh for node $n of $nodes
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data

# durability: the product's HA shape is RF 3 + min.insync.replicas 2
default.replication.factor=$rf
min.insync.replicas=$minisr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$minisr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$minisr
unclean.leader.election.enable=false
auto.create.topics.enable=false
num.partitions=1

# fast start and fast failure detection for tests and drills
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
replica.lag.time.max.ms=10000
controlled.shutdown.enable=true

# modest footprint: 2-core machine shared with Redis and our services
num.network.threads=${CONCERT_KAFKA_NETWORK_THREADS:-2}
num.io.threads=${CONCERT_KAFKA_IO_THREADS:-4}
num.recovery.threads.per.data.dir=1
background.threads=4
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
EOF
  cat >"$nd/log4j2.properties" <<EOF
status = error
appender.f.type = RollingFile
appender.f.name = FILE
appender.f.fileName = $nd/logs/server.log
appender.f.filePattern = $nd/logs/server.log.%i
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
appender.f.policies.type = Policies
appender.f.policies.size.type = SizeBasedTriggeringPolicy
appender.f.policies.size.size = 50MB
appender.f.strategy.type = DefaultRolloverStrategy
appender.f.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.f.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

launch_node() { # N
  local n="$1" nd heap
  nd="$(node_dir "$n")"
  if [[ -n "${CONCERT_KAFKA_HEAP:-}" ]]; then heap="$CONCERT_KAFKA_HEAP"
  elif [[ "$(node_count)" -ge 3 ]]; then heap="-Xmx384m"
  else heap="-Xmx512m"; fi
  cds_flags broker
  # shellcheck disable=SC2086 # heap may hold several flags
  local gc="${CONCERT_KAFKA_GC:--XX:+UseG1GC -XX:MaxGCPauseMillis=20}"
  # shellcheck disable=SC2086 # gc may hold several flags
  java $heap "${CDS_FLAGS[@]+"${CDS_FLAGS[@]}"}" -Xms128m $gc \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$nd/log4j2.properties" -Dkafka.logs.dir="$nd/logs" \
    -cp "$LIBS/*" kafka.Kafka "$nd/server.properties" \
    </dev/null >>"$nd/stdout.log" 2>&1 &
  echo $! >"$DIR/node$n.pid"
  LAUNCHED+=("$n:$!")
}

LAUNCHED=()   # "N:PID" of nodes this invocation started (killed if start fails)

fail_start() { # N MESSAGE
  local n="$1"; shift
  log "$*"
  local nd; nd="$(node_dir "$n")"
  [[ -f "$nd/stdout.log" ]] && { log "--- tail $nd/stdout.log"; tail -5 "$nd/stdout.log" >&2; }
  [[ -f "$nd/logs/server.log" ]] && { log "--- errors in $nd/logs/server.log"; grep -E 'ERROR|FATAL' "$nd/logs/server.log" | tail -10 >&2 || true; }
  local entry
  for entry in "${LAUNCHED[@]+"${LAUNCHED[@]}"}"; do
    if alive "${entry#*:}"; then
      log "killing node ${entry%%:*} (pid ${entry#*:}) started by this failed command"
      kill -KILL "${entry#*:}" 2>/dev/null || true
    fi
    rm -f "$DIR/node${entry%%:*}.pid"
  done
  exit 1
}

# Wait until node N's process is alive and its broker port accepts connections.
wait_port() { # N DEADLINE
  local n="$1" deadline="$2" port
  port="$(broker_port "$n")"
  while ! port_open "$port"; do
    check_launched_alive
    [[ $SECONDS -lt $deadline ]] || fail_start "$n" "node $n: port $port not open after ${START_TIMEOUT}s"
    sleep 0.2
  done
}

# Fail fast (and clean up) if a node started by this command has died.
check_launched_alive() {
  local entry
  for entry in "${LAUNCHED[@]+"${LAUNCHED[@]}"}"; do
    alive "${entry#*:}" || fail_start "${entry%%:*}" "node ${entry%%:*} exited during startup"
  done
}

check_all_alive() {
  local n
  check_launched_alive
  for n in $(seq 1 "$(node_count)"); do
    node_pid "$n" >/dev/null || fail_start "$n" "node $n is not running"
  done
}

# ---------- commands ----------
cmd_start() {
  [[ "$NODES" == 1 || "$NODES" == 3 ]] || [[ -f "$DIR/nodes" ]] || die "start needs --nodes 1|3"
  ensure_libs
  local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) n
  if [[ -f "$DIR/cluster.id" && -f "$DIR/nodes" ]]; then
    [[ -z "$NODES" || "$NODES" == "$(node_count)" ]] || die "$DIR already holds a $(node_count)-node cluster"
    NODES="$(node_count)"
    log "restarting existing $NODES-node cluster in $DIR"
  else
    compgen -G "$DIR/node*" >/dev/null && die "$DIR holds node dirs but no cluster.id; use an empty dir"
    local ports voters="" i=0
    read -r -a ports <<<"$(pick_ports $((NODES * 2)))"
    [[ ${#ports[@]} -eq $((NODES * 2)) ]] || die "could not find $((NODES * 2)) free ports"
    for n in $(seq 1 "$NODES"); do
      voters+="${voters:+,}$n@127.0.0.1:${ports[$((2 * (n - 1) + 1))]}"
    done
    echo "$NODES" >"$DIR/nodes"
    local bs=""
    for n in $(seq 1 "$NODES"); do
      write_node_config "$n" "$NODES" "${ports[$((2 * (n - 1)))]}" "$voters" "${ports[$((2 * (n - 1) + 1))]}"
      bs+="${bs:+,}127.0.0.1:${ports[$((2 * (n - 1)))]}"
    done
    local cid
    cid="$(new_cluster_id)" || die "could not make a cluster id"
    # Static quorum (controller.quorum.voters): every node formatted with the
    # same cluster id, no --standalone/--initial-controllers needed.
    local pids=()
    for n in $(seq 1 "$NODES"); do
      run_class kafka.tools.StorageTool format --ignore-formatted -t "$cid" \
        -c "$(node_dir "$n")/server.properties" >"$(node_dir "$n")/format.log" 2>&1 &
      pids+=($!)
    done
    for i in "${!pids[@]}"; do
      wait "${pids[$i]}" || { cat "$(node_dir $((i + 1)))/format.log" >&2; die "format of node $((i + 1)) failed"; }
    done
    echo "$cid" >"$DIR/cluster.id"
    echo "$bs" >"$DIR/bootstrap"
  fi
  for n in $(seq 1 "$NODES"); do
    if node_pid "$n" >/dev/null; then log "node $n already running"; else launch_node "$n"; fi
  done
  for n in $(seq 1 "$NODES"); do wait_port "$n" "$deadline"; done
  # Ready = all nodes registered and unfenced: a topic with RF = node count can
  # be created (the controller refuses RF > live unfenced brokers). On a
  # restart the topic exists: then its ISR must hold every node again.
  local out created=0
  while :; do
    check_all_alive
    if [[ $created == 0 ]] && out="$(run_class org.apache.kafka.tools.TopicCommand \
          --bootstrap-server "$(bootstrap)" --create --if-not-exists --topic "$READY_TOPIC" \
          --partitions 1 --replication-factor "$NODES" 2>&1)"; then
      created=1
      [[ "$out" == *"Created topic"* ]] && break   # fresh topic: ISR = all nodes
    fi
    [[ $created == 1 ]] && isr_full && break
    [[ $SECONDS -lt $deadline ]] || { log "$out"; fail_start 1 "cluster not ready after ${START_TIMEOUT}s"; }
    sleep 0.5
  done
  log "$NODES-node cluster ready in $((SECONDS - t0))s (dir $DIR)"
  bootstrap
}

# ISR of the readiness topic (comma list of node ids), from TopicCommand --describe.
ready_isr() {
  run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" \
    --describe --topic "$READY_TOPIC" 2>/dev/null |
    sed -n 's/.*Partition: 0.*Isr: \([0-9,]*\).*/\1/p' | head -1
}

isr_full() {
  local isr; isr="$(ready_isr)"
  [[ -n "$isr" && $(tr ',' '\n' <<<"$isr" | grep -c .) -eq "$(node_count)" ]]
}

# SIGTERM the given nodes ("N:PID"...), SIGKILL what is left after STOP_TIMEOUT.
# A broker's clean shutdown needs the controller quorum (it asks the active
# controller for a controlled shutdown). Once fewer than a majority of the
# nodes (each also a controller) are alive, the survivors can never finish
# it (they would hang for minutes), so they get QUORUM_GRACE seconds to close
# and are then SIGKILLed: KRaft recovers their logs at the next start.
QUORUM_GRACE=5
stop_pids() {
  local entry left deadline=$((SECONDS + STOP_TIMEOUT)) majority=$(($(node_count) / 2 + 1)) lost_at=""
  for entry in "$@"; do kill -TERM "${entry#*:}" 2>/dev/null || true; done
  while :; do
    left=()
    for entry in "$@"; do alive "${entry#*:}" && left+=("$entry"); done
    [[ ${#left[@]} -eq 0 ]] && break
    # nodes outside "$@" are already down, so "left" is every live node
    if [[ ${#left[@]} -lt $majority && -z "$lost_at" ]]; then lost_at=$SECONDS; fi
    local why=""
    if [[ $SECONDS -ge $deadline ]]; then why="ignored SIGTERM for ${STOP_TIMEOUT}s"
    elif [[ -n "$lost_at" && $((SECONDS - lost_at)) -ge $QUORUM_GRACE ]]; then why="controller quorum gone, cannot shut down cleanly"
    fi
    if [[ -n "$why" ]]; then
      for entry in "${left[@]}"; do
        log "node ${entry%%:*} (pid ${entry#*:}): $why: SIGKILL"
        kill -KILL "${entry#*:}" 2>/dev/null || true
      done
      for entry in "${left[@]}"; do
        while alive "${entry#*:}"; do sleep 0.1; done
      done
      break
    fi
    sleep 0.2
  done
  for entry in "$@"; do rm -f "$DIR/node${entry%%:*}.pid"; done
}

cmd_stop() {
  local n pid running=()
  for n in $(seq 1 "$(node_count)"); do
    if pid="$(node_pid "$n")"; then running+=("$n:$pid"); else rm -f "$DIR/node$n.pid"; fi
  done
  if [[ ${#running[@]} -gt 0 ]]; then stop_pids "${running[@]}"; fi
  log "stopped ${#running[@]} node(s) in $DIR"
}

need_node() {
  [[ "$NODE" =~ ^[0-9]+$ && "$NODE" -ge 1 && "$NODE" -le "$(node_count)" ]] ||
    die "--node must be 1..$(node_count) for the cluster in $DIR"
}

cmd_kill_node() {
  need_node
  local pid
  pid="$(node_pid "$NODE")" || die "node $NODE is not running"
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.1; done
  rm -f "$DIR/node$NODE.pid"
  log "node $NODE (pid $pid) killed"
}

cmd_start_node() {
  need_node
  ensure_libs
  local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) isr
  if node_pid "$NODE" >/dev/null; then log "node $NODE already running"; else launch_node "$NODE"; fi
  wait_port "$NODE" "$deadline"
  while :; do
    node_pid "$NODE" >/dev/null || fail_start "$NODE" "node $NODE exited during startup"
    isr="$(ready_isr || true)"
    [[ ",$isr," == *",$NODE,"* ]] && break
    [[ $SECONDS -lt $deadline ]] || fail_start "$NODE" "node $NODE not back in ISR after ${START_TIMEOUT}s (isr: $isr)"
    sleep 0.5
  done
  log "node $NODE back in ${READY_TOPIC} ISR in $((SECONDS - t0))s"
}

cmd_create_topic() {
  [[ -n "$TOPIC" && -n "$PARTITIONS" ]] || die "create-topic needs --topic T --partitions P"
  ensure_libs
  local rf="${RF:-$(node_count)}" args=() c
  for c in "${TOPIC_CONFIGS[@]+"${TOPIC_CONFIGS[@]}"}"; do args+=(--config "$c"); done
  run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" \
    --create --if-not-exists --topic "$TOPIC" --partitions "$PARTITIONS" \
    --replication-factor "$rf" "${args[@]+"${args[@]}"}" >&2
}

cmd_status() {
  local n pid
  for n in $(seq 1 "$(node_count)"); do
    pid="$(node_pid "$n")" || pid=down
    echo "node $n pid $pid port $(broker_port "$n")"
  done
}

cmd_tool() {
  [[ ${#TOOL_ARGS[@]} -ge 1 ]] || die "tool needs a CLASS"
  ensure_libs
  local cls="${TOOL_ARGS[0]}"
  run_class "$cls" --bootstrap-server "$(bootstrap)" "${TOOL_ARGS[@]:1}"
}

case "$CMD" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill-node) cmd_kill_node ;;
  start-node) cmd_start_node ;;
  create-topic) cmd_create_topic ;;
  status) cmd_status ;;
  bootstrap) bootstrap ;;
  tool) cmd_tool ;;
  *) usage >&2; die "unknown command '$CMD'" ;;
esac
