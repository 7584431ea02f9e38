#!/usr/bin/env bash
# install-kafka.sh: owns the local Apache Kafka (KRaft) install used by tests,
# drills and benchmarks. Fetches the broker + admin-tool jars named in
# scripts/kafka/pom.xml from Maven Central into one classpath dir:
#   ${CONCERT_KAFKA_HOME:-$HOME/.cache/concert/kafka}/libs
# and trains JVM class-data-sharing archives for faster starts into cds/.
# Idempotent: skips the fetch when libs/ was already built from the same pom
# (and the training when cds/ matches this JDK). Needs only a JDK (17+) and
# Maven (python3 for the optional CDS step). Run scripts/kafka.sh to start brokers.
#   scripts/install-kafka.sh [--help]
# Environment: CONCERT_KAFKA_HOME (install dir), CONCERT_KAFKA_CDS=0 (skip the CDS step).
set -euo pipefail

case "${1:-}" in
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "install-kafka: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_HOME="${CONCERT_KAFKA_HOME:-$HOME/.cache/concert/kafka}"
LIBS="$KAFKA_HOME/libs"
MARKER="$LIBS/.installed"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

for tool in java mvn sha256sum flock; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-kafka: '$tool' not found on PATH" >&2; exit 1; }
done
[[ -f "$POM" ]] || { echo "install-kafka: missing $POM" >&2; exit 1; }

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -1)"
stamp="$(sha256sum "$POM" | cut -d' ' -f1)"

mkdir -p "$KAFKA_HOME"
exec 9>"$KAFKA_HOME/.install.lock"
flock 9   # one installer at a time (parallel test jobs)

jar_count() { local j=("$1"/*.jar); echo "${#j[@]}"; }
has_jars() { compgen -G "$LIBS/kafka_2.13-$version.jar" >/dev/null && compgen -G "$LIBS/kafka-tools-$version.jar" >/dev/null; }

CDS="$KAFKA_HOME/cds"

# Class-data-sharing archives (JDK dynamic AppCDS) cut JVM start time by about
# a third: broker ~4.4 s -> ~3.1 s to open its port, admin tools ~1.5 s ->
# ~0.8 s on the 2-core machine. They are trained here by one short 1-node
# broker run and are tied to this JDK build and these exact jars; kafka.sh
# uses them only when cds/jdk matches `java -version`, and the JVM itself
# ignores (silently, -Xshare:auto) an archive that does not match.
# Best effort: a failure only means slower starts. CONCERT_KAFKA_CDS=0 skips.
jdk_id() { java -version 2>&1 | tr -s ' \n' ' '; }

build_cds() {
  [[ "${CONCERT_KAFKA_CDS:-1}" != 0 ]] || return 0
  if [[ -f "$CDS/broker.jsa" && -f "$CDS/tools.jsa" && -f "$CDS/jdk" && "$(cat "$CDS/jdk")" == "$(jdk_id)" ]]; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || { echo "install-kafka: no python3, skipping CDS archives" >&2; return 0; }
  local t0=$SECONDS work bport cport pid ok=0 i t args jsa
  rm -rf "$CDS"
  work="$(mktemp -d "$KAFKA_HOME/cds-train.XXXXXX")"
  read -r bport cport < <(python3 -c '
import random, socket
got, held = [], []
for p in random.sample(range(20000, 32000), 200):
    s = socket.socket()
    try: s.bind(("127.0.0.1", p))
    except OSError: s.close(); continue
    held.append(s); got.append(p)
    if len(got) == 2: break
print(*got)')
  cat >"$work/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
log.dirs=$work/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
PROPS
  printf 'rootLogger.level = WARN\nrootLogger.appenderRef.f.ref = F\nappender.f.type = File\nappender.f.name = F\nappender.f.fileName = %s/server.log\nappender.f.layout.type = PatternLayout\nappender.f.layout.pattern = %%d %%p %%m%%n\n' "$work" >"$work/log4j2.properties"
  local jl=(-Dlog4j2.configurationFile="$work/log4j2.properties" -cp "$LIBS/*")
  if java -Xmx256m "${jl[@]}" kafka.tools.StorageTool format -t "$(java "${jl[@]}" kafka.tools.StorageTool random-uuid)" \
       -c "$work/server.properties" >"$work/format.log" 2>&1; then
    java -XX:ArchiveClassesAtExit="$work/broker.jsa" -Xlog:cds=off -Xlog:cds+dynamic=off -Xmx384m "${jl[@]}" \
      kafka.Kafka "$work/server.properties" </dev/null >"$work/broker.out" 2>&1 &
    pid=$!
    for ((i = 0; i < 600; i++)); do
      (exec 3<>"/dev/tcp/127.0.0.1/$bport") 2>/dev/null && { ok=1; break; }
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if [[ $ok == 1 ]]; then
      for t in create describe; do
        args=(--bootstrap-server "127.0.0.1:$bport" "--$t" --topic cds-train)
        [[ $t == create ]] && args+=(--partitions 3 --replication-factor 1)
        jsa=(); [[ $t == describe ]] && jsa=(-XX:ArchiveClassesAtExit="$work/tools.jsa" -Xlog:cds=off -Xlog:cds+dynamic=off)
        java "${jsa[@]}" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${jl[@]}" \
          org.apache.kafka.tools.TopicCommand "${args[@]}" >>"$work/tools.out" 2>&1 || ok=0
      done
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; ok=0; fi
    wait "$pid" 2>/dev/null || true
  fi
  if [[ $ok == 1 && -s "$work/broker.jsa" && -s "$work/tools.jsa" ]]; then
    mkdir -p "$CDS.tmp"
    mv "$work/broker.jsa" "$work/tools.jsa" "$CDS.tmp/"
    jdk_id >"$CDS.tmp/jdk"
    mv "$CDS.tmp" "$CDS"
    echo "install-kafka: CDS archives trained in $((SECONDS - t0))s: $CDS" >&2
  else
    echo "install-kafka: CDS training failed (slower starts only); see $work" >&2
    rm -rf "$CDS.tmp"
    return 0
  fi
  rm -rf "$work"
}

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$stamp" ]] && has_jars; then
  build_cds
  echo "kafka $version already installed: $LIBS ($(jar_count "$LIBS") jars)"
  exit 0
fi

tmp="$KAFKA_HOME/libs.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
if ! mvn -B -q -f "$POM" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_HOME/install.log" 2>&1; then
  echo "install-kafka: maven failed, see $KAFKA_HOME/install.log:" >&2
  tail -20 "$KAFKA_HOME/install.log" >&2
  exit 1
fi
compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null || { echo "install-kafka: kafka_2.13-$version.jar not fetched" >&2; exit 1; }
echo "$stamp" >"$tmp/.installed"
rm -rf "$LIBS" "$CDS"
mv "$tmp" "$LIBS"
trap - EXIT
build_cds
echo "kafka $version installed: $LIBS ($(jar_count "$LIBS") jars, $((SECONDS - start))s)"
