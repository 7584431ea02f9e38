/* srv_run: runs a concert-server until SIGTERM/SIGINT; returns the exit code. */
#ifndef SRV_RUN_H
#define SRV_RUN_H

#include "srv_app.h"

int srv_run(const srv_config *cfg);

#endif
