#!/usr/bin/env bash
# test_clients: the API in proto/ is a clean source for clients in other languages.
#  - `buf lint` passes under proto/buf.yaml (every exception justified there);
#  - Go: protoc-gen-go + protoc-gen-go-grpc (pinned, from the Go module proxy via
#    scripts/install-go-tools.sh) generate without a warning, and the code builds and
#    vets in a module named by go_package (github.com/concert-tickets/concert);
#  - Java: protoc --java_out generates without a warning and javac compiles it against
#    protobuf-java from Maven Central (the version of the machine's protoc);
#  - Python: grpcio-tools generates messages, stubs and .pyi without a warning, and
#    every module imports with its services.
# Nothing generated is kept.
source "$(dirname "$0")/lib.sh"
need protoc go java javac mvn
PROTO="$OPS_ROOT/proto"
mapfile -t FILES < <(cd "$PROTO" && ls concert/v1/*.proto)
G="$OPS_TMP/gen"
mkdir -p "$G"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# quiet NAME CMD...: CMD must exit 0 and print nothing (no warning of any kind).
quiet() {
  local out="$OPS_TMP/$1.quiet"; shift
  "$@" >"$out" 2>&1 || { cat "$out"; return 1; }
  [[ ! -s "$out" ]] || { echo "printed:"; cat "$out"; return 1; }
}

# ---- buf lint ----
check "buf lint proto/: clean, nothing printed" quiet buf buf lint "$PROTO"
check_grep "buf.yaml justifies each exception (a comment above every rule)" '^ok$' python3 - "$PROTO/buf.yaml" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
bad = []
for i, l in enumerate(lines):
    m = re.match(r'^    ([A-Z_]+):\s*$', l)
    if m and not lines[i - 1].lstrip().startswith('#'):
        bad.append(m.group(1))
print("missing justification: " + " ".join(bad) if bad else "ok")
PY
check_grep "buf lint still catches a bad name (the check can fail)" 'should be (PascalCase|in PascalCase)|PascalCase' bash -c "
  mkdir -p '$OPS_TMP/lintbad/concert/v1' && cp '$PROTO/buf.yaml' '$OPS_TMP/lintbad/' &&
  printf 'syntax = \"proto3\";\npackage concert.v1;\noption go_package = \"x.y/z;z\";\nmessage bad_name { string a = 1; }\n' >'$OPS_TMP/lintbad/concert/v1/bad.proto' &&
  buf lint '$OPS_TMP/lintbad'"

# ---- Go ----
gover="$(go env GOVERSION)"
pgg="$(protoc-gen-go --version 2>&1 | awk '{print $2}')"
# Runtime modules that match the generators (install-go-tools.sh pins both sets).
case "$pgg" in
  v1.31.*) PB=google.golang.org/protobuf@v1.31.0 GRPC=google.golang.org/grpc@v1.56.3 ;;
  *) PB=google.golang.org/protobuf@v1.36.12 GRPC=google.golang.org/grpc@v1.79.3 ;;
esac
mkdir -p "$G/go"
check "protoc --go_out --go-grpc_out: no warning ($gover, protoc-gen-go $pgg)" quiet go-gen \
  protoc -I "$PROTO" --go_out="$G/go" --go_opt=module=github.com/concert-tickets/concert \
  --go-grpc_out="$G/go" --go-grpc_opt=module=github.com/concert-tickets/concert "${FILES[@]}"
check "the Go package lands at gen/go/concert/v1 (go_package is a module path)" \
  test -f "$G/go/gen/go/concert/v1/queue_grpc.pb.go"
check "the Go client builds and vets" bash -c "
  cd '$G/go' && go mod init github.com/concert-tickets/concert >/dev/null 2>&1 &&
  go get $PB $GRPC >'$OPS_TMP/go-get.log' 2>&1 && go build ./... && go vet ./..." 
check_grep "... with a QueueServiceClient" 'func NewQueueServiceClient' cat "$G/go/gen/go/concert/v1/queue_grpc.pb.go"

# ---- Java ----
pv="$(protoc --version | awk '{print $2}')" # 3.21.12 on Debian 12: protobuf-java 3.21.12
mkdir -p "$G/java" "$G/classes" "$G/jars"
check "protoc --java_out: no warning" quiet java-gen protoc -I "$PROTO" --java_out="$G/java" "${FILES[@]}"
check "java_package + java_multiple_files: one class per message" \
  test -f "$G/java/io/github/concerttickets/concert/v1/IssueTokenRequest.java"
check "protobuf-java $pv from Maven Central" bash -c "
  mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact=com.google.protobuf:protobuf-java:$pv -DoutputDirectory='$G/jars' >'$OPS_TMP/mvn.log' 2>&1 ||
  { tail -n 20 '$OPS_TMP/mvn.log'; exit 1; }"
check "javac compiles the generated Java: no warning" quiet javac \
  javac -Xlint:all -encoding UTF-8 -d "$G/classes" -cp "$G/jars/protobuf-java-$pv.jar" $(find "$G/java" -name '*.java')
check "the classes round-trip a message" bash -c "
  cat >'$G/RoundTrip.java' <<'J'
import io.github.concerttickets.concert.v1.IssueTokenRequest;
public class RoundTrip {
  public static void main(String[] a) throws Exception {
    IssueTokenRequest r = IssueTokenRequest.newBuilder().setUserId(\"alice\").setConcertId(\"c1\").build();
    IssueTokenRequest back = IssueTokenRequest.parseFrom(r.toByteArray());
    if (!back.getUserId().equals(\"alice\")) throw new AssertionError(back);
    System.out.println(\"ok\");
  }
}
J
  javac -d '$G/classes' -cp '$G/classes:$G/jars/protobuf-java-$pv.jar' '$G/RoundTrip.java' &&
  java -cp '$G/classes:$G/jars/protobuf-java-$pv.jar' RoundTrip | grep -qx ok"

# ---- Python ----
PYV="$CONCERT_VENV/bin/python"
[[ -x "$PYV" ]] || die "no venv at $CONCERT_VENV (scripts/install-python.sh)"
mkdir -p "$G/py"
check "grpc_tools.protoc --python_out --pyi_out --grpc_python_out: no warning" quiet py-gen \
  "$PYV" -m grpc_tools.protoc -I "$PROTO" --python_out="$G/py" --pyi_out="$G/py" --grpc_python_out="$G/py" "${FILES[@]}"
check "every Python module imports; the stubs have every service" "$PYV" -W error -c "
import importlib, sys
sys.path.insert(0, '$G/py')
want = {'queue': 'QueueServiceStub', 'booking': 'BookingServiceStub', 'wallet': 'WalletServiceStub',
        'payment': 'PaymentServiceStub', 'admin': 'AdminServiceStub'}
for f in ['admin', 'booking', 'events', 'payment', 'queue', 'wallet']:
    importlib.import_module('concert.v1.%s_pb2' % f)
    g = importlib.import_module('concert.v1.%s_pb2_grpc' % f)
    if f in want: getattr(g, want[f])
"
ops_done
