/* srv_adapt: the inputs of ADAPTIVE admission that only servers see, shared through
 * Redis. The controller itself runs inside every admission tick (queue_admit.lua,
 * "the admission rate"): from the concert's own keys it reads the payments pending too
 * long and the payments not yet settled (the consumers' backlog of that concert, the
 * `pend` sorted set the payment scripts keep); what it cannot read there is the booking
 * error rate. So every server counts its BookingService and PaymentService calls and
 * those that failed on the server's side (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED,
 * UNKNOWN, DATA_LOSS) and, every --adapt-interval-ms, adds them to the global hash
 * `cc:health` (window number, calls, errors, and the previous window's totals),
 * which answers every server's last complete window: the figures the ticks pass on.
 * Must not: block, or count calls a client got wrong (INVALID_ARGUMENT, NOT_FOUND...). */
#ifndef SRV_ADAPT_H
#define SRV_ADAPT_H

#include <grpc/grpc.h>
#include <stdint.h>

#include "srv_app.h"

int srv_adapt_init(srv_app *app);
void srv_adapt_shutdown(srv_app *app);
void srv_adapt_free(srv_app *app);

/** srv_rpc's call observer (srv_rpc_config.on_call_end): counts booking calls, then
 * hands on to srv_metrics_call_end. */
void srv_adapt_call_end(void *app, int method, grpc_status_code code, double seconds);

/** Every server's booking calls and server-side failures in the last complete window. */
void srv_adapt_window(const srv_app *app, int64_t *calls, int64_t *errors);

#endif
