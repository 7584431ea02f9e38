/* srv_run: runs a concert-server until SIGTERM/SIGINT or a fatal error; returns the
 * process' exit status. */
#ifndef SRV_RUN_H
#define SRV_RUN_H

#include "srv_app.h"

/* Exit status of concert-server (documented in README). */
#define SRV_EXIT_OK 0     /* stopped by SIGTERM/SIGINT after draining */
#define SRV_EXIT_FATAL 1  /* a fatal error while serving (logged) */
#define SRV_EXIT_USAGE 2  /* bad flags or configuration */
#define SRV_EXIT_LISTEN 3 /* the gRPC or metrics address cannot be bound */

int srv_run(const srv_config *cfg);

/** Stops the server from the loop with exit status `code` (the first code wins):
 * the same orderly drain as SIGTERM. `reason` is logged. */
void srv_stop(srv_app *app, int code, const char *reason);

#endif
