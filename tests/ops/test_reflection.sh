#!/usr/bin/env bash
# test_reflection: server reflection serves descriptors with source info, so that
# `grpcurl describe` (no proto files) shows the comments written in proto/ - the
# field rules a client developer needs. Fails if the descriptor set is built without
# --include_source_info (the comments vanish from the output).
source "$(dirname "$0")/lib.sh"
need redis-server redis-cli grpcurl
start_redis
start_server refl --redis "$REDIS_URL" || die "concert-server did not start"
g() { grpcurl -plaintext -max-time 10 "$SERVER_ADDR" "$@"; }
check_grep "a message's field comment (IssueTokenRequest.user_id)" '// Who is asking; trusted.*1\.\.128 bytes, no control characters' \
  g describe concert.v1.IssueTokenRequest
check_grep "a method's comment (QueueService.IssueToken)" 'Idempotent per \(user_id, concert_id\)' g describe concert.v1.QueueService
check_grep "a field rule in BookingService's file (seat_numbers)" '// 1\.\.10 distinct seat numbers' g describe concert.v1.ReserveSeatsRequest
check_grep "an enum value's comment (QueueState)" '// Admitted: may book until expires_at_unix_ms' g describe concert.v1.QueueState
check_grep "a method of PaymentService" 'rpc Pay' g describe concert.v1.PaymentService
check_grep "health is described too" 'rpc Check' g describe grpc.health.v1.Health
# The comments come from the protos themselves, not from a copy: every comment line
# grpcurl shows for IssueTokenRequest is in proto/concert/v1/queue.proto.
check "each comment line shown is in queue.proto" bash -c "
  grpcurl -plaintext -max-time 10 '$SERVER_ADDR' describe concert.v1.IssueTokenRequest | sed -n 's#^ *// ##p' >'$OPS_TMP/c.txt'
  [[ -s '$OPS_TMP/c.txt' ]] && while IFS= read -r l; do grep -qF -- \"\$l\" '$OPS_ROOT/proto/concert/v1/queue.proto' || exit 1; done <'$OPS_TMP/c.txt'"
check "stops with exit 0 on SIGTERM" stop_server
ops_done
