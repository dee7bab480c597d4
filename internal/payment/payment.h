/*
 * payment: the money side of orders, for payment-worker (database
 * shop_payment, consumer group "payment-worker" on shop.order.events.v1).
 *
 * Follow an order: OrderCreated reaches payment_consumer's table, which calls
 * payment_authorize: in the consumer's transaction it inserts the order's
 * payments row, asks the gateway to authorize (a hold) the order's total
 * against its payment token, records the attempt, and appends
 * PaymentAuthorized or PaymentFailed (operation AUTHORIZE). OrderConfirmed
 * captures the hold (PaymentCaptured; a failed capture appends
 * PaymentFailed with operation CAPTURE, voids the hold and appends
 * PaymentVoided). OrderCancelled voids an open hold (PaymentVoided) or
 * refunds a capture (PaymentRefunded), whichever the payments row says.
 * Payment events are keyed by order id; their sequence is the payment's own
 * version (1, 2, ... per order).
 *
 * At most once: each operation's gateway idempotency key is
 * "<order idempotency key>/<order id>/<operation>" (OrderCreated's
 * idempotency_key is the CreateOrder call's), and the gateway keeps its own
 * records, so an operation asked for twice (a redelivery, a replay with the
 * inbox purged, a crash between the gateway's answer and the commit) is
 * done once and answered the same. On top of that the payments row's status
 * says which operations are already done, so a repeat does not even reach
 * the gateway. Every call to the gateway, transient failures included, is a
 * row of payment_attempts (the worker's audit of what it asked for).
 *
 * Transient gateway failures are retried retry_max times with a doubling
 * backoff. For AUTHORIZE and CAPTURE the worker then gives up with
 * PaymentFailed (PAYMENT_FAILURE_REASON_GATEWAY_UNAVAILABLE), which cancels
 * the order. For VOID and REFUND it does not give up: the handler returns
 * UNAVAILABLE, the consumer rolls back and tries the event again later
 * (money held or taken must be given back); the gateway's idempotency
 * makes that safe.
 *
 * The gateway is a function-pointer table (payment_gateway), so the worker
 * can be tested with a fake and run with the simulated card processor
 * below, or a real one.
 *
 * Threads: the handler runs on the consumer's thread. A payment_sim may be
 * shared by threads and by processes (its store is locked with flock).
 */
#ifndef SHOP_PAYMENT_H
#define SHOP_PAYMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock/clock.h"
#include "config/config.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/events.h"
#include "events/outbox.h"
#include "shop/payment/v1/events.pb-c.h"
#include "status/status.h"

typedef Shop__Payment__V1__PaymentOperation payment_op;
#define PAYMENT_OP_AUTHORIZE SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_AUTHORIZE
#define PAYMENT_OP_CAPTURE SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_CAPTURE
#define PAYMENT_OP_VOID SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_VOID
#define PAYMENT_OP_REFUND SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_REFUND

/* "authorize", "capture", "void", "refund" ("?" otherwise). */
const char *payment_op_name(payment_op op);

/* ---- The gateway ------------------------------------------------------------------ */

#define PAYMENT_REF_MAX 64
#define PAYMENT_KEY_MAX 400
#define PAYMENT_TOKEN_MAX 256

typedef enum payment_gw_outcome {
  PAYMENT_GW_APPROVED = 1,  /* done; result.reference names what was made */
  PAYMENT_GW_DECLINED = 2,  /* refused for good; result.reason says why */
  PAYMENT_GW_TRANSIENT = 3, /* not done, or not known to be done: ask again, same key */
} payment_gw_outcome;

/* One operation. Strings are borrowed for the call. */
typedef struct payment_gw_request {
  const char *idempotency_key; /* at most PAYMENT_KEY_MAX characters */
  const char *token;           /* AUTHORIZE: the payment token */
  int64_t amount;              /* minor units, > 0 */
  const char *currency;        /* ISO 4217 */
  /* CAPTURE and VOID: the authorization id; REFUND: the capture id. */
  const char *reference;
} payment_gw_request;

typedef struct payment_gw_result {
  payment_gw_outcome outcome;
  /* DECLINED: a shop.payment.v1.PaymentFailureReason. */
  Shop__Payment__V1__PaymentFailureReason reason;
  /* APPROVED: the gateway's id of the authorization, capture, void or
   * refund made. */
  char reference[PAYMENT_REF_MAX];
  char message[256]; /* for people; safe to show the customer */
} payment_gw_result;

/* A card gateway. call_cb performs op and fills *res; it must be
 * idempotent per request.idempotency_key. sync_cb (NULL: the gateway's
 * answers are durable when given) makes every answer given so far durable:
 * the worker calls it before it commits what those answers decided, so a
 * batch of operations is synced once. Thread-safe for the sim. */
typedef struct payment_gateway {
  void (*call_cb)(void *self, payment_op op, const payment_gw_request *req, payment_gw_result *res);
  status_code (*sync_cb)(void *self, char *errbuf, size_t errlen);
  void *self;
} payment_gateway;

/* ---- The simulated card processor --------------------------------------------------- */

/*
 * payment_sim is the default gateway: a local card processor with fixed
 * rules, so that every outcome can be driven on purpose. Rules, checked in
 * this order for AUTHORIZE:
 *
 *   token not "tok_" + 1..64 of [a-z0-9_]       INVALID_TOKEN
 *   tok_expired...                              INVALID_TOKEN ("card expired")
 *   currency not in the accepted list           CURRENCY_NOT_SUPPORTED
 *   amount <= 0 or > amount_limit               AMOUNT_LIMIT_EXCEEDED
 *   tok_decline...                              DECLINED
 *   tok_insufficient_funds...                   INSUFFICIENT_FUNDS
 *   tok_unavailable...                          always TRANSIENT (a gateway
 *                                               that is down, for retry tests)
 *   tok_capture_fail...                         authorizes; its CAPTURE is DECLINED
 *   any other tok_... (tok_visa, tok_ok, ...)   authorizes
 *
 * CAPTURE needs an open authorization (else AUTHORIZATION_INVALID) and
 * captures its whole amount; VOID needs an open one; REFUND needs a capture
 * not yet refunded and refunds it in full. Ids are "auth_", "cap_", "void_"
 * and "re_" followed by 24 hex digits.
 *
 * Every operation first sleeps latency_ms, then fails as TRANSIENT with
 * probability failure_permille / 1000: half of those before doing
 * anything, half after doing it (the answer is "lost"), so the retry, with
 * the same key, must get the stored answer and not do it twice.
 *
 * Idempotency records and the ledger (authorizations, captures) live in
 * one append-only journal, state_dir/journal, one line per state, written
 * under an exclusive flock of state_dir/lock (each call first reads what
 * other processes sharing the folder appended), and made durable by
 * payment_sim_sync (fdatasync; the gateway's sync_cb): they survive a
 * restart of the worker. An older folder's files (keys/, ledger/) are
 * moved into an empty journal when the sim starts. A key seen before returns its first answer (for
 * the same operation and amount; a different request under a used key is
 * DECLINED with AUTHORIZATION_INVALID, as a real processor refuses it).
 */
typedef struct payment_sim payment_sim;

typedef struct payment_sim_opts {
  const char *state_dir;  /* created if missing (copied) */
  int latency_ms;         /* >= 0 */
  int failure_permille;   /* 0..1000 */
  int64_t amount_limit;   /* > 0 */
  const char *currencies; /* "EUR,USD"; copied */
  /* Injectable for tests; NULL: nanosleep and libsodium's randombytes. */
  void (*sleep_ms_cb)(void *self, int ms);
  uint32_t (*random_cb)(void *self); /* uniform 32 bits */
  void *clock_self;
} payment_sim_opts;

/* Fills opts from cfg->payment. */
void payment_sim_opts_from_cfg(payment_sim_opts *o, const shop_cfg *cfg);

/* Creates state_dir (and its subfolders) if needed. On success *out owns
 * the sim. Errors: INVALID_ARGUMENT (bad opts), INTERNAL (the folder). */
status_code payment_sim_create(payment_sim **out, const payment_sim_opts *o, char *errbuf,
                               size_t errlen);
void payment_sim_destroy(payment_sim *s);

/* Makes every answer given so far durable (fdatasync of the journal).
 * UNAVAILABLE when the disk refuses. Thread-safe. */
status_code payment_sim_sync(payment_sim *s, char *errbuf, size_t errlen);

/* The sim as a gateway (borrows s). */
payment_gateway payment_sim_gateway(payment_sim *s);

/* Counters of operations actually performed (not answered from a record),
 * for tests: index by payment_op (1..4). */
void payment_sim_performed(payment_sim *s, int64_t out[5]);

/* ---- The worker ---------------------------------------------------------------------- */

typedef struct payment_ctx {
  const char *program; /* event source and actor */
  outbox_sink sink;
  payment_gateway gw;
  int retry_max;                           /* transient retries after the first attempt */
  int retry_backoff_ms;                    /* first backoff; doubles */
  void (*sleep_ms_cb)(void *self, int ms); /* NULL: nanosleep; gets clock.self */
  shop_clock clock;                        /* zeroed: the real clock */
  /* The consumer's current transaction (worker.c): the payments of its
   * orders read at once and written back at once. Its thread's. */
  struct payment_batch *batch;
} payment_ctx;

/* Fills ctx from cfg (payment.retry_*) with the real clock;
 * payment_ctx_destroy frees what it made. */
void payment_ctx_init(payment_ctx *ctx, const shop_cfg *cfg, const char *program, outbox_sink sink,
                      payment_gateway gw);
void payment_ctx_destroy(payment_ctx *ctx);
typedef struct payment_batch payment_batch;

/* What an order tells payment (borrowed strings). */
typedef struct payment_order {
  const char *order_id;
  const char *customer_id;
  const char *idempotency_key; /* the CreateOrder call's; "" falls back to the order id */
  const char *token;
  int64_t amount;
  const char *currency;
} payment_order;

/* The operations, inside the caller's open transaction; events go through
 * ctx->sink in tx. cause (may be NULL) lends its correlation id and trace.
 * Each is a no-op when the payments row says it is done or not due. */
status_code payment_authorize(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                              const payment_order *o, char *errbuf, size_t errlen);
status_code payment_capture(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                            const char *order_id, char *errbuf, size_t errlen);
/* Voids an open authorization or refunds a capture. */
status_code payment_compensate(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                               const char *order_id, char *errbuf, size_t errlen);

/* The consumer of group "payment-worker" (arg: a payment_ctx):
 * OrderCreated authorizes, OrderConfirmed captures, OrderCancelled voids or
 * refunds. */
extern const consumer_spec payment_consumer;

/* ---- Reading (tests, tools) ------------------------------------------------------------ */

typedef struct payment_row {
  int status; /* shop.payment.v1.PaymentStatus */
  int64_t version;
  int64_t amount;
  char authorization_id[PAYMENT_REF_MAX];
  char capture_id[PAYMENT_REF_MAX];
  char refund_id[PAYMENT_REF_MAX];
  int failure_reason;
} payment_row;

/* NOT_FOUND when payment has not seen the order. */
status_code payment_row_get(db_conn *c, const char *order_id, payment_row *out, char *errbuf,
                            size_t errlen);

/* Attempts recorded for the order and operation (0: any operation). */
status_code payment_attempts_count(db_conn *c, const char *order_id, payment_op op, int64_t *count,
                                   char *errbuf, size_t errlen);

extern const db_migration payment_migrations[];
extern const size_t payment_migrations_count;

#endif
