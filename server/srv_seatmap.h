/* srv_seatmap: the ListSeats cache of the booking module. A schedule's seat map is
 * read from Redis in chunks (HSCAN of its price hash once, of its seat-state hash
 * whenever the copy is older than --seat-cache-ms), so no call makes Redis walk
 * 100,000 fields in one go and a burst of ListSeats costs one refresh. Holds made
 * through this server patch the copy at once; everything else (other servers' holds,
 * cancellations, sales by the payment consumer) shows within --seat-cache-ms, and a
 * hold lapses in the map at its own millisecond. Replies are pages of the map in seat
 * order (ListSeats' page_size / page_token); the last page served is kept serialized
 * until something changes (a patch, a refresh, or a hold reaching its expiry). Owns
 * its entries; lives on the loop thread. Must not decide anything: ReserveSeats is the
 * authority on a seat, the map is for display. */
#ifndef SRV_SEATMAP_H
#define SRV_SEATMAP_H

#include <stddef.h>
#include <stdint.h>

#include "srv_app.h"

/** A new, empty cache for `app` (owned by the caller). */
srv_seatmaps *srv_seatmaps_new(srv_app *app);
/** Frees every entry; no load may be in flight (after the loop stopped). */
void srv_seatmaps_free(srv_seatmaps *m);

/** Answers ListSeats for `sched` of `concert` on `call` (already authorised) with the
 * page of at most `size` seats numbered above `after` (0: the first page) and, when
 * seats are left, a next_page_token (srv_api, SRV_PAGE_SEATS, scope "<concert>/<sched>",
 * cursor: the page's last seat number, 4 bytes big-endian). Redis' clock `now_unix_ms`
 * decides which holds have lapsed. Finishes the call. */
void srv_seatmaps_serve(srv_seatmaps *m, srv_call *call, const char *concert, const char *sched, int64_t now_unix_ms,
                        int32_t after, int size);

/** This server held `seats` of `sched` until `exp_unix_ms`. */
void srv_seatmaps_held(srv_seatmaps *m, const char *concert, const char *sched, const int32_t *seats, size_t n,
                       int64_t exp_unix_ms);

/** Drops maps nobody asked for in a minute. */
void srv_seatmaps_sweep(srv_seatmaps *m);

#endif
