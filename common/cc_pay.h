/* cc_pay: the payment domain, linked by concert-server (Pay, GetPayment, WatchPayment)
 * and payment-consumer (settling). It owns, in one place:
 *   - the payment's Redis keys: the concert slot "cc:{C}:" (p:<pid>, pk:<user>, pays,
 *     and through the scripts the reservation and seat keys they settle) and the
 *     payment half of the user's wallet slot "cc:{w:U}:" (pay, refund, bal);
 *   - the payment Lua scripts (common/lua/pay_*.lua, with common/lua/bk_lib.lua and
 *     pay_lib.lua prepended), and the calls that run them (cc_pay_begin ... refund);
 *   - the decoding of their replies (cc_pay_decode) and the mapping of a payment to
 *     the API message and to the Kafka events.
 * It must not: keep state per call (callers own their contexts), block, or know about
 * gRPC calls or consumer batches.
 *
 * Payment life cycle (status in p:<pid>):
 *   SUBMITTING --Kafka ack (pay_submitted) or seen in Kafka (pay_claim)--> PENDING
 *   SUBMITTING --Pay's deadline first (pay_submitted)--> ABANDONED: Pay answers
 *       UNAVAILABLE; never debited: payment-consumer fails it (pay_claim), and only a
 *       retry of Pay with the same key submits it again (pay_begin)
 *   PENDING --pay_debit, pay_commit--> COMPLETED | FAILED (pay_refund gives back a debit)
 *
 * Threading: the call functions use a cc_redis pool and must run on its loop. */
#ifndef CC_PAY_H
#define CC_PAY_H

#include <stddef.h>
#include <stdint.h>

#include "cc_redis.h"
#include "concert/v1/events.pb-c.h"
#include "concert/v1/payment.pb-c.h"

#define CC_PAY_ID_MAX 160   /* payment and reservation ids ("p1.<concert>.<32 hex>") */
#define CC_PAY_USER_MAX 128 /* user ids */
#define CC_PAY_CONCERT_MAX 64

typedef enum {
    CC_PAY_UNKNOWN = 0,
    CC_PAY_SUBMITTING,
    CC_PAY_PENDING,
    CC_PAY_COMPLETED,
    CC_PAY_FAILED,
    CC_PAY_ABANDONED,
} cc_pay_state;

/** "SUBMITTING", ... -> state (CC_PAY_UNKNOWN for anything else). */
cc_pay_state cc_pay_state_parse(const char *s);
/** 1 for COMPLETED and FAILED. */
int cc_pay_state_terminal(cc_pay_state s);
/** The API status: SUBMITTING and ABANDONED read UNCONFIRMED (Pay could not confirm
 * the request reached Kafka; retry Pay with the same idempotency_key). */
Concert__V1__PaymentStatus cc_pay_state_api(cc_pay_state s);

/* ---- scripts ---- */

typedef enum {
    CC_PAY_S_BEGIN,    /* server: Pay's record (SUBMITTING) or the key's payment */
    CC_PAY_S_SUBMITTED, /* server: Kafka acked (-> PENDING) or Pay's deadline first (-> ABANDONED) */
    CC_PAY_S_GET,      /* server: the owner's payment */
    CC_PAY_S_CLAIM,    /* consumer: seen in Kafka: SUBMITTING -> PENDING, ABANDONED -> FAILED */
    CC_PAY_S_DEBIT,    /* consumer: the wallet debit, once per payment id */
    CC_PAY_S_COMMIT,   /* consumer: seats SOLD + COMPLETED, or FAILED */
    CC_PAY_S_REFUND,   /* consumer: a FAILED payment's debit back, once */
    CC_PAY_N_SCRIPTS
} cc_pay_script_id;

/** The payment scripts (built once: texts and SHAs live for the process). Returns the
 * table; pass &table[i] to cc_redis_set_scripts (each executable registers the ones
 * it runs, see cc_pay_scripts_server / _consumer). Not thread-safe on first call. */
cc_redis_script *cc_pay_scripts(void);
/** Pointers to the scripts concert-server runs (begin, submitted, get): fills
 * out[0..n) and returns n (3); `max` must be at least 4. */
int cc_pay_scripts_server(cc_redis_script **out, int max);
/** The scripts payment-consumer runs (claim, debit, commit, refund): returns 4. */
int cc_pay_scripts_consumer(cc_redis_script **out, int max);

/* ---- calls (each: 0 when sent, cb called once; -1 when no connection: cb not called) ---- */

/** Pay's first step: records `new_pid` SUBMITTING for reservation `rid`, or answers
 * the payment of (token's user, idempotency key). Reply: a record, or a {code, msg}. */
int cc_pay_begin(cc_redis *r, const char *concert, const char *token, const char *rid, const char *key,
                 const char *new_pid, cc_redis_cb cb, void *payload);
/** Kafka acknowledged the request: SUBMITTING -> PENDING (pay_submitted). Reply: the record. */
int cc_pay_accepted(cc_redis *r, const char *concert, const char *pid, cc_redis_cb cb, void *payload);
/** Pay's deadline came first: SUBMITTING -> ABANDONED (pay_submitted). Reply: the record,
 * whose state says who won (ABANDONED: answer UNAVAILABLE; PENDING or later: that). */
int cc_pay_abandon(cc_redis *r, const char *concert, const char *pid, cc_redis_cb cb, void *payload);
/** The owner's (token's user's) payment. */
int cc_pay_get(cc_redis *r, const char *concert, const char *token, const char *pid, cc_redis_cb cb,
               void *payload);
/** Consumer steps, in order: claim (concert slot), debit (wallet slot), commit
 * (concert slot), refund (wallet slot, FAILED only). */
int cc_pay_claim(cc_redis *r, const Concert__V1__PaymentRequested *m, cc_redis_cb cb, void *payload);
int cc_pay_debit(cc_redis *r, const char *user, const char *pid, int64_t amount, cc_redis_cb cb,
                 void *payload);
int cc_pay_commit(cc_redis *r, const char *concert, const char *pid, int debited, cc_redis_cb cb,
                  void *payload);
int cc_pay_refund(cc_redis *r, const char *user, const char *pid, cc_redis_cb cb, void *payload);

/* ---- replies ---- */

/** A payment as the scripts answer it (pay_reply in common/lua/pay_lib.lua). The
 * strings point into the reply: valid only during the reply callback. */
typedef struct {
    const char *pid, *rid, *user, *status, *reason, *key;
    int64_t amount, created_ms, updated_ms;
    int is_new;       /* 1 created, 2 submitted again, 3 failed now (was ABANDONED) */
    cc_pay_state state;
    const char *sched, *seats; /* the reservation's schedule and seats ("3,4"), "" if unknown */
    int64_t paid_ms;           /* when its reservation was paid, 0 if not */
} cc_pay_record;

typedef enum {
    CC_PAY_OK = 0,       /* *out is the payment */
    CC_PAY_REFUSED = 1,  /* the script's {code, message}: *code, *msg */
    CC_PAY_BAD = -1,     /* an error reply or an unexpected shape */
} cc_pay_decoded;

/** Decodes a payment script's reply. `code`/`msg` may be NULL. */
cc_pay_decoded cc_pay_decode(const redisReply *r, cc_pay_record *out, int *code, const char **msg);

/** pay_debit: 1 DEBITED, 0 INSUFFICIENT, -1 anything else. */
int cc_pay_decode_debit(const redisReply *r);
/** pay_refund: 0 (REFUNDED or NOT_DEBITED), -1 anything else. */
int cc_pay_decode_refund(const redisReply *r);

/** Fills the API message from a record (strings point into the record; `concert` is
 * the payment's concert). */
void cc_pay_to_api(Concert__V1__Payment *m, const cc_pay_record *p, const char *concert);

/** 1 if the decoded request is well formed (ids present and bounded, amount >= 0). */
int cc_pay_request_valid(const Concert__V1__PaymentRequested *m);

/** The result event of a settled payment (strings point into rec/req). */
void cc_pay_result_event(Concert__V1__PaymentResult *ev, const Concert__V1__PaymentRequested *req,
                         const cc_pay_record *rec);

/** The seats of a record ("3,4") into out[0..max): returns how many. */
size_t cc_pay_seats(const char *csv, int32_t *out, size_t max);

/* ---- keys (the only place they are spelled) ---- */

/** "cc:{C}:" and "cc:{C}:q:tok" (the key naming the concert's slot). 0 or -1 (too long). */
int cc_pay_concert_keys(const char *concert, char *prefix, size_t plen, char *tag_key, size_t tlen);

/** A user's wallet key "cc:{w:U}:<which>" (`which`: "bal" balance, "pay" and "refund" the
 * payments applied, "chg" Charge's idempotency keys) into out[n]. 0 or -1 (too long). */
int cc_pay_wallet_key(char *out, size_t n, const char *user, const char *which);

#endif
