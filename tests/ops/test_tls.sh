#!/usr/bin/env bash
# test_tls: concert-server over TLS and mutual TLS, with certificates made here by
# openssl (a server CA, a client CA, a stranger CA). Proves: concertctl, concert-bench,
# grpcurl and grpc-health-probe talk TLS to the server when they trust its CA; a
# client trusting another CA, a plaintext client and a client with the system's roots
# are refused; under mTLS a client without a certificate, or with one from another CA,
# is refused; bad certificate files stop the server (and concertctl) at start with a
# one-line reason naming the flag.
source "$(dirname "$0")/lib.sh"
need openssl redis-server redis-cli grpcurl grpc-health-probe

P="$OPS_TMP/pki"
mkdir -p "$P"
mkca() { # NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/$1.key" -out "$P/$1.pem" \
    -days 2 -subj "/CN=$1" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
mkleaf() { # CA NAME SAN EKU
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/$2.key" -out "$P/$2.csr" \
    -subj "/CN=$2" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$3" "$4" >"$P/$2.ext"
  openssl x509 -req -in "$P/$2.csr" -CA "$P/$1.pem" -CAkey "$P/$1.key" -CAcreateserial -days 2 \
    -extfile "$P/$2.ext" -out "$P/$2.pem" 2>/dev/null
}
mkca server-ca && mkca client-ca && mkca stranger-ca || die "openssl could not make the CAs"
mkleaf server-ca server "IP:127.0.0.1,DNS:localhost" serverAuth
mkleaf server-ca named "DNS:concert.test" serverAuth
mkleaf client-ca alice "DNS:alice" clientAuth
mkleaf stranger-ca mallory "DNS:mallory" clientAuth
[[ -s "$P/server.pem" && -s "$P/alice.pem" && -s "$P/mallory.pem" && -s "$P/named.pem" ]] || die "openssl made no leaf"

start_redis
CTL="$BUILD/client/concertctl"
BENCH="$BUILD/client/concert-bench"

# ---- TLS, no client certificates ----
start_server tls --redis "$REDIS_URL" --tls-cert "$P/server.pem" --tls-key "$P/server.key" || die "TLS server did not start"
check_grep "the listening line says tls=tls" 'tls=tls( |$)' cat "$SERVER_LOG"
check "concertctl --tls-ca (the server's CA): SERVING" "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --timeout-ms 5000 health
check "CONCERT_TLS_CA works like --tls-ca" env CONCERT_TLS_CA="$P/server-ca.pem" "$CTL" --server "$SERVER_ADDR" --timeout-ms 5000 health
check_rc "concertctl trusting another CA: UNAVAILABLE (14)" 14 "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/stranger-ca.pem" --timeout-ms 3000 health
check_rc "concertctl with the system's roots: UNAVAILABLE (14)" 14 "$CTL" --server "$SERVER_ADDR" --tls --timeout-ms 3000 health
check_rc "plaintext concertctl against the TLS port: UNAVAILABLE (14)" 14 "$CTL" --server "$SERVER_ADDR" --timeout-ms 3000 health
check "grpcurl -cacert lists the services (reflection over TLS)" \
  bash -c "grpcurl -cacert '$P/server-ca.pem' '$SERVER_ADDR' list | grep -qx concert.v1.QueueService"
check_rc "grpcurl -plaintext against the TLS port fails" 1 grpcurl -plaintext -max-time 3 "$SERVER_ADDR" list
check "grpc-health-probe -tls -tls-ca-cert: SERVING" \
  grpc-health-probe -addr "$SERVER_ADDR" -tls -tls-ca-cert "$P/server-ca.pem" -connect-timeout 3s -rpc-timeout 3s
check "concert-bench ping over TLS: calls succeed" bash -c \
  "'$BENCH' --server '$SERVER_ADDR' --tls-ca '$P/server-ca.pem' --quiet --json --warmup 0 --duration 1 --concurrency 4 ping >'$OPS_TMP/bench.json' && python3 -c 'import json,sys; t=json.load(open(\"$OPS_TMP/bench.json\"))[\"sections\"][0][\"total\"]; sys.exit(0 if t[\"ok\"] > 0 and t[\"errors\"] == 0 else 1)'"
check_rc "concert-bench trusting another CA cannot run (exit 1)" 1 \
  "$BENCH" --server "$SERVER_ADDR" --tls-ca "$P/stranger-ca.pem" --quiet --warmup 0 --duration 1 ping
check "stops with exit 0 on SIGTERM" stop_server

# ---- the name in the certificate ----
start_server named --redis "$REDIS_URL" --tls-cert "$P/named.pem" --tls-key "$P/named.key" || die "named server did not start"
check_rc "a certificate for another name is refused (14)" 14 "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --timeout-ms 3000 health
check "--tls-server-name concert.test accepts it" "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --tls-server-name concert.test --timeout-ms 5000 health
check "stops with exit 0 on SIGTERM" stop_server

# ---- mutual TLS ----
start_server mtls --redis "$REDIS_URL" --tls-cert "$P/server.pem" --tls-key "$P/server.key" --tls-client-ca "$P/client-ca.pem" ||
  die "mTLS server did not start"
check_grep "the listening line says tls=mtls" 'tls=mtls' cat "$SERVER_LOG"
check "a client certificate from the client CA is accepted" \
  "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --tls-cert "$P/alice.pem" --tls-key "$P/alice.key" --timeout-ms 5000 health
check "the same through CONCERT_TLS_CLIENT_CERT/KEY" env CONCERT_TLS_CA="$P/server-ca.pem" CONCERT_TLS_CLIENT_CERT="$P/alice.pem" \
  CONCERT_TLS_CLIENT_KEY="$P/alice.key" "$CTL" --server "$SERVER_ADDR" --timeout-ms 5000 health
check_rc "no client certificate: refused (14)" 14 "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --timeout-ms 3000 health
check_rc "a client certificate from another CA: refused (14)" 14 \
  "$CTL" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --tls-cert "$P/mallory.pem" --tls-key "$P/mallory.key" --timeout-ms 3000 health
check "grpcurl -cert/-key with the client certificate works" \
  bash -c "grpcurl -cacert '$P/server-ca.pem' -cert '$P/alice.pem' -key '$P/alice.key' '$SERVER_ADDR' list | grep -qx concert.v1.QueueService"
check_rc "grpcurl without a client certificate fails" 1 grpcurl -cacert "$P/server-ca.pem" -max-time 3 "$SERVER_ADDR" list
check "concert-bench ping with a client certificate" \
  "$BENCH" --server "$SERVER_ADDR" --tls-ca "$P/server-ca.pem" --tls-cert "$P/alice.pem" --tls-key "$P/alice.key" --quiet --warmup 0 --duration 1 --concurrency 4 ping
check "stops with exit 0 on SIGTERM" stop_server

# ---- bad files fail at start, naming the flag ----
srv() { "$BUILD/server/concert-server" --listen 127.0.0.1:0 --redis "$REDIS_URL" "$@"; }
check_grep "--tls-cert without --tls-key: exit 2 naming the flag" '^concert-server: --tls-cert: needs --tls-key' \
  bash -c "'$BUILD/server/concert-server' --listen 127.0.0.1:0 --redis '$REDIS_URL' --tls-cert '$P/server.pem'; echo rc=\$?"
check_grep "... and the exit status is 2" 'rc=2' bash -c "'$BUILD/server/concert-server' --listen 127.0.0.1:0 --redis '$REDIS_URL' --tls-cert '$P/server.pem' 2>/dev/null; echo rc=\$?"
check_grep "a key that is not the certificate's" '--tls-key: .* is not the key of the certificate' \
  srv --tls-cert "$P/server.pem" --tls-key "$P/alice.key"
check_grep "a missing file" '--tls-cert: cannot read .*/nope.pem' srv --tls-cert "$P/nope.pem" --tls-key "$P/server.key"
check_grep "a CA file that holds no certificate" '--tls-client-ca: .* holds no PEM certificate' \
  srv --tls-cert "$P/server.pem" --tls-key "$P/server.key" --tls-client-ca "$P/server.key"
check_grep "--tls-client-ca without a server certificate" '--tls-client-ca: needs --tls-cert' srv --tls-client-ca "$P/client-ca.pem"
check_rc "concertctl with an unreadable --tls-ca: usage error (2)" 2 "$CTL" --server 127.0.0.1:1 --tls-ca "$P/nope.pem" health
check_grep "... naming the flag" '--tls-ca: cannot read' "$CTL" --server 127.0.0.1:1 --tls-ca "$P/nope.pem" health
check_rc "concertctl --tls-cert without --tls-key: usage error (2)" 2 "$CTL" --server 127.0.0.1:1 --tls-ca "$P/server-ca.pem" --tls-cert "$P/alice.pem" health

ops_done
