#!/usr/bin/env python3
"""concert_flow: an example Python client of the concert API, end to end.

Generates the Python stubs from proto/ (grpcio-tools; nothing generated is committed)
into --stubs-dir when they are missing or older than the protos, then runs the whole
flow a client developer needs, printing one logfmt line per step on stderr:

  admin: CreateConcert + CreateSchedule (x-admin-key)    queue: IssueToken,
  WatchQueueStatus until ACTIVE                          wallet: Charge
  booking: ListSchedules, ListSeats (every page),        payment: Pay, WatchPayment
  ReserveSeats (authorization: Bearer <token>)           until COMPLETED
  admin: Audit of the concert (must be ok)

A failed step's line carries the error's structured details when grpcio-status is
installed (google.rpc.ErrorInfo reason and field, RetryInfo delay).

Every call has a deadline, so a broken server makes it fail, not hang. Exit status:
0 the flow completed and the audit is ok; 1 a step failed (the line says which, with
the gRPC code); 2 usage error.

Environment: CONCERT_SERVER, CONCERT_ADMIN_KEY, CONCERT_TLS_CA, CONCERT_TLS_CLIENT_CERT,
CONCERT_TLS_CLIENT_KEY (the same names as concertctl's), CONCERT_PY_STUBS (stubs dir).
"""
import argparse
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTOS = ["admin", "booking", "events", "payment", "queue", "wallet"]


def log(event, **kv):
    """One logfmt line on stderr."""
    parts = ["ts=%s" % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "comp=concert-flow", "event=" + event]
    for k, v in kv.items():
        v = str(v)
        parts.append("%s=%s" % (k, '"%s"' % v.replace('"', "'") if (" " in v or not v) else v))
    print(" ".join(parts), file=sys.stderr, flush=True)


def error_details(e):
    """The google.rpc details of a failed call (grpc-status-details-bin) as log fields."""
    try:
        from grpc_status import rpc_status  # grpcio-status, installed by scripts/install-python.sh
        from google.rpc import error_details_pb2
    except ImportError:
        return {}
    st = rpc_status.from_call(e) if hasattr(e, "trailing_metadata") else None
    out = {}
    for d in st.details if st else []:
        for name, T in (("ErrorInfo", error_details_pb2.ErrorInfo), ("RetryInfo", error_details_pb2.RetryInfo)):
            if d.Is(T.DESCRIPTOR):
                m = T()
                d.Unpack(m)
                if name == "ErrorInfo":
                    out["reason"] = m.reason
                    if "field" in m.metadata:
                        out["field"] = m.metadata["field"]
                else:
                    out["retry_ms"] = m.retry_delay.seconds * 1000 + m.retry_delay.nanos // 1000000
    return out


def ensure_stubs(stubs_dir):
    """Generates concert/v1/*_pb2(_grpc).py from proto/ unless they are up to date."""
    srcs = [os.path.join(PROTO_DIR, "concert", "v1", p + ".proto") for p in PROTOS]
    outs = [os.path.join(stubs_dir, "concert", "v1", p + s) for p in PROTOS for s in ("_pb2.py", "_pb2_grpc.py")]
    newest = max(os.path.getmtime(s) for s in srcs)
    if all(os.path.exists(o) and os.path.getmtime(o) >= newest for o in outs):
        return
    os.makedirs(stubs_dir, exist_ok=True)
    from grpc_tools import protoc  # grpcio-tools, installed by scripts/install-python.sh
    args = ["grpc_tools.protoc", "-I" + PROTO_DIR, "--python_out=" + stubs_dir, "--grpc_python_out=" + stubs_dir]
    if protoc.main(args + srcs) != 0:
        raise SystemExit("concert-flow: generating the stubs from %s failed" % PROTO_DIR)
    log("stubs_generated", dir=stubs_dir)


class Flow:
    def __init__(self, a, pb, grpc):
        self.a, self.pb, self.grpc = a, pb, grpc
        if a.tls_ca or a.tls_cert:
            read = lambda p: open(p, "rb").read() if p else None
            creds = grpc.ssl_channel_credentials(read(a.tls_ca), read(a.tls_key), read(a.tls_cert))
            self.channel = grpc.secure_channel(a.server, creds)
        else:
            self.channel = grpc.insecure_channel(a.server)
        g = pb["grpc"]
        self.queue = g["queue"].QueueServiceStub(self.channel)
        self.booking = g["booking"].BookingServiceStub(self.channel)
        self.wallet = g["wallet"].WalletServiceStub(self.channel)
        self.payment = g["payment"].PaymentServiceStub(self.channel)
        self.admin = g["admin"].AdminServiceStub(self.channel)
        self.admin_md = [("x-admin-key", a.admin_key)]

    def call(self, step, fn, req, md=None, timeout=None, retries=0):
        """One unary call; with retries, a rate limit's refusal (RESOURCE_EXHAUSTED with a
        google.rpc.RetryInfo) is retried after the delay it gives."""
        t0 = time.monotonic()
        while True:
            try:
                resp = fn(req, metadata=md, timeout=timeout or self.a.timeout)
                break
            except self.grpc.RpcError as e:
                det = error_details(e)
                if retries > 0 and e.code() == self.grpc.StatusCode.RESOURCE_EXHAUSTED and "retry_ms" in det:
                    retries -= 1
                    log("step_retry", step=step, after_ms=det["retry_ms"], reason=det.get("reason", ""))
                    time.sleep(det["retry_ms"] / 1000.0)
                    continue
                log("step_failed", step=step, code=e.code().name, message=e.details(), **det)
                raise SystemExit(1)
        log("step", step=step, ms="%.1f" % ((time.monotonic() - t0) * 1000))
        return resp

    def list_all(self, step, fn, req, items, md=None):
        """Every item of a paginated List call: follows next_page_token until it is empty."""
        out, pages = [], 0
        while True:
            resp = self.call(step, fn, req, md, retries=5)
            out.extend(getattr(resp, items))
            pages += 1
            if not resp.next_page_token:
                return out, pages
            req.page_token = resp.next_page_token

    def run(self):
        a, m = self.a, self.pb
        q, bk, w, pay, adm = m["queue"], m["booking"], m["wallet"], m["payment"], m["admin"]
        concert = a.concert or "py-" + uuid.uuid4().hex[:10]
        schedule = concert + "-s1"
        user = a.user or "py-user-" + uuid.uuid4().hex[:8]

        self.call("CreateConcert", self.admin.CreateConcert,
                  adm.CreateConcertRequest(concert_id=concert, name="Python example"), self.admin_md)
        self.call("CreateSchedule", self.admin.CreateSchedule,
                  adm.CreateScheduleRequest(concert_id=concert, schedule_id=schedule,
                                            starts_at_unix_ms=int(time.time() * 1000) + 86400000,
                                            seats=[adm.SeatRange(first_seat=1, last_seat=20, price=1500)]),
                  self.admin_md)

        st = self.call("IssueToken", self.queue.IssueToken, q.IssueTokenRequest(user_id=user, concert_id=concert))
        token = st.token
        log("queued", token=token, state=q.QueueState.Name(st.state), position=st.position)
        if st.state != q.QUEUE_STATE_ACTIVE:
            deadline = time.monotonic() + a.wait_s
            try:
                for st in self.queue.WatchQueueStatus(q.WatchQueueStatusRequest(token=token), timeout=a.wait_s):
                    log("queue_status", state=q.QueueState.Name(st.state), position=st.position)
                    if st.state != q.QUEUE_STATE_WAITING:
                        break
            except self.grpc.RpcError as e:
                log("step_failed", step="WatchQueueStatus", code=e.code().name, message=e.details())
                raise SystemExit(1)
            if st.state != q.QUEUE_STATE_ACTIVE:
                log("step_failed", step="WatchQueueStatus", state=q.QueueState.Name(st.state),
                    waited_s="%.1f" % (a.wait_s - (deadline - time.monotonic())))
                raise SystemExit(1)
        bearer = [("authorization", "Bearer " + token)]

        ch = self.call("Charge", self.wallet.Charge,
                       w.ChargeRequest(user_id=user, amount=10000, idempotency_key="topup-" + user))
        log("charged", balance=ch.balance)
        scheds = self.call("ListSchedules", self.booking.ListSchedules,
                           bk.ListSchedulesRequest(concert_id=concert), bearer)
        if [s.schedule_id for s in scheds.schedules] != [schedule]:
            log("step_failed", step="ListSchedules", got=",".join(s.schedule_id for s in scheds.schedules))
            raise SystemExit(1)
        # Small pages (the default is 1000 seats) so that the loop over pages shows.
        seats, pages = self.list_all("ListSeats", self.booking.ListSeats,
                                     bk.ListSeatsRequest(schedule_id=schedule, page_size=8), "seats", bearer)
        free = [s.number for s in seats if s.state == bk.SEAT_STATE_AVAILABLE]
        log("seats", total=len(seats), available=len(free), pages=pages)
        if [s.number for s in seats] != list(range(1, 21)):
            log("step_failed", step="ListSeats", got=",".join(str(s.number) for s in seats))
            raise SystemExit(1)
        want = free[:2]
        res = self.call("ReserveSeats", self.booking.ReserveSeats,
                        bk.ReserveSeatsRequest(schedule_id=schedule, seat_numbers=want), bearer)
        log("reserved", reservation=res.reservation_id, seats=",".join(map(str, res.seat_numbers)),
            total_price=res.total_price)

        p = self.call("Pay", self.payment.Pay,
                      pay.PayRequest(reservation_id=res.reservation_id, idempotency_key="pay-" + res.reservation_id),
                      bearer)
        log("paying", payment=p.payment_id, status=pay.PaymentStatus.Name(p.status))
        try:
            for p in self.payment.WatchPayment(pay.GetPaymentRequest(payment_id=p.payment_id), metadata=bearer,
                                               timeout=a.wait_s):
                log("payment_status", status=pay.PaymentStatus.Name(p.status), reason=p.reason)
                if p.status not in (pay.PAYMENT_STATUS_PENDING, pay.PAYMENT_STATUS_UNSPECIFIED):
                    break
        except self.grpc.RpcError as e:
            log("step_failed", step="WatchPayment", code=e.code().name, message=e.details())
            raise SystemExit(1)
        if p.status != pay.PAYMENT_STATUS_COMPLETED:
            log("step_failed", step="WatchPayment", status=pay.PaymentStatus.Name(p.status), reason=p.reason)
            raise SystemExit(1)

        bal = self.call("GetBalance", self.wallet.GetBalance, w.GetBalanceRequest(user_id=user))
        if bal.balance != 10000 - res.total_price:
            log("step_failed", step="GetBalance", balance=bal.balance, want=10000 - res.total_price)
            raise SystemExit(1)
        audit = self.call("Audit", self.admin.Audit, adm.AuditRequest(concert_id=concert), self.admin_md)
        log("audit", ok=audit.ok, seats_sold=audit.seats_sold, payments_completed=audit.payments_completed,
            problems=";".join(audit.problems))
        if not audit.ok or audit.seats_sold != len(want):
            raise SystemExit(1)
        log("done", concert=concert, user=user, payment=p.payment_id, balance=bal.balance)


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default=env("CONCERT_SERVER", "127.0.0.1:50051"), help="HOST:PORT [CONCERT_SERVER]")
    ap.add_argument("--admin-key", default=env("CONCERT_ADMIN_KEY"), help="x-admin-key [CONCERT_ADMIN_KEY]")
    ap.add_argument("--concert", help="concert id to create (default: a fresh random one)")
    ap.add_argument("--user", help="user id (default: a fresh random one)")
    ap.add_argument("--timeout", type=float, default=10.0, help="deadline of each unary call, seconds (default 10)")
    ap.add_argument("--wait-s", type=float, default=60.0,
                    help="how long to wait for admission and for the payment to settle (default 60)")
    ap.add_argument("--tls-ca", default=env("CONCERT_TLS_CA"), help="use TLS, trusting this PEM CA [CONCERT_TLS_CA]")
    ap.add_argument("--tls-cert", default=env("CONCERT_TLS_CLIENT_CERT"),
                    help="mutual TLS: client certificate [CONCERT_TLS_CLIENT_CERT]")
    ap.add_argument("--tls-key", default=env("CONCERT_TLS_CLIENT_KEY"), help="its key [CONCERT_TLS_CLIENT_KEY]")
    ap.add_argument("--stubs-dir", default=env("CONCERT_PY_STUBS", os.path.join(HERE, "..", "..", "build", "python-stubs")),
                    help="where the generated stubs go [CONCERT_PY_STUBS] (default build/python-stubs)")
    a = ap.parse_args()
    if not a.admin_key:
        ap.error("--admin-key is required (or set CONCERT_ADMIN_KEY)")
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    stubs = os.path.abspath(a.stubs_dir)
    ensure_stubs(stubs)
    sys.path.insert(0, stubs)
    import importlib
    import grpc
    pb = {n: importlib.import_module("concert.v1.%s_pb2" % n) for n in PROTOS}
    pb["grpc"] = {n: importlib.import_module("concert.v1.%s_pb2_grpc" % n) for n in PROTOS if n != "events"}
    log("start", server=a.server, tls="yes" if a.tls_ca or a.tls_cert else "no", grpcio=grpc.__version__)
    Flow(a, pb, grpc).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
