/* srv_queue: the queue domain's key names, shared with the modules that run queue
 * scripts of their own (srv_sale). Every queue script takes KEYS[1] = the slot key
 * "cc:{C}:q:wait" and ARGV[1] = the prefix "cc:{C}:", ARGV[2] = the concert id, and is
 * prepended with server/lua/queue_lib.lua (see docs/DATA.md "Queue"). */
#ifndef SRV_QUEUE_H
#define SRV_QUEUE_H

#include "cc_redis.h"
#include "srv_valid.h"

typedef struct {
    char prefix[SRV_MAX_ID + 8]; /* "cc:{C}:" */
    char slot[SRV_MAX_ID + 16];  /* "cc:{C}:q:wait" */
    size_t plen;
} srv_queue_keys;

/** Fills the prefix and slot key of `concert`. */
void srv_queue_keys_of(srv_queue_keys *k, const char *concert);

/** Registers a queue script (queue_lib prepended) for loading on every connection. */
void srv_queue_script_add(cc_redis_script *s, const char *name, const unsigned char *body, size_t len);

#endif
