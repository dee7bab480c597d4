/*
 * order: Shop's orders on both sides. The command side (order-command,
 * database shop_order) serves OrderCommandService, runs the saga (consumer
 * group "order-saga" on the payment and inventory topics) and the
 * deadline sweeper; the query side (order-query, database shop_order_read)
 * builds its read model only from order, payment and inventory events
 * (consumer group "order-query") and serves OrderQueryService. Both live
 * here (query.c is the query side) because they share the domain's types.
 *
 * Follow CreateOrder from proto/shop/order/v1/commands.proto: the handler
 * (command.c) checks the request (order_validate_create_order), asks
 * product-query for the order's products through the order_catalog (one
 * service-to-service GetProducts call for the whole order, carrying the
 * caller's remaining deadline and trace), then in one transaction (command_run: state,
 * outbox, idempotency record) prices the lines from the catalog's answers
 * (order_price: never from the client), inserts the order and its lines,
 * and appends OrderCreated. The relay publishes it on shop.order.events.v1;
 * inventory-worker reserves and payment-worker authorizes, in parallel;
 * their answers come back to the saga (saga.c, order_saga_consumer), which
 * folds them into the order (order_saga_apply, pure) and appends
 * OrderConfirmed or OrderCancelled; order-query projects all of it
 * (order_projection_consumer) for GetOrder and the lists.
 *
 * The lifecycle (DESIGN.md, "Order lifecycle"):
 *   PENDING --InventoryReserved + PaymentAuthorized--> CONFIRMED
 *   CONFIRMED --ShipOrder (admin, payment captured)--> SHIPPED
 *   PENDING --InventoryRejected or PaymentFailed(authorize)--> CANCELLED
 *   CONFIRMED --PaymentFailed(capture)--> CANCELLED
 *   PENDING --deadline passes (the sweeper)--> CANCELLED
 *   PENDING/CONFIRMED --CancelOrder (owner or admin)--> CANCELLED
 * Compensation is the workers' answer to OrderCancelled: inventory
 * releases what it reserved, payment voids or refunds. A saga answer that
 * comes after the order left PENDING changes nothing but the record of it
 * (a late InventoryReserved of a cancelled order is released by the
 * OrderCancelled that inventory reads after it).
 *
 * Shipping needs the payment captured, not only the order CONFIRMED:
 * OrderConfirmed makes payment capture, and a failed capture cancels the
 * order, so an order shipped before its capture could be cancelled after
 * its goods left. ShipOrder on a CONFIRMED order whose capture has not
 * been seen yet is FAILED_PRECONDITION, to be tried again shortly.
 *
 * Versions: the order's version is its number of order events (1 for
 * OrderCreated); every command reply's consistency token carries it, and
 * order-query's GetOrder compares it with the version of the last order
 * event it applied. Saga answers that change no status (one of the two
 * halves of a confirmation, a capture) bump nothing.
 *
 * Threads: handlers run on the RPC server's workers, the saga on the
 * consumer's thread, the sweeper on a thread of its own; the contexts are
 * read-only after init (the query side's notifier excepted).
 */
#ifndef SHOP_ORDER_H
#define SHOP_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "check/check.h"
#include "clock/clock.h"
#include "command/command.h"
#include "config/config.h"
#include "consistency/consistency.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "rpc/rpc.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "status/status.h"

typedef Shop__Order__V1__CreateOrderRequest order_create_req;
typedef Shop__Order__V1__ShippingAddress order_address;

#define ORDER_ST(name) SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_##name
#define ORDER_CANCEL(name) SHOP__ORDER__V1__CANCEL_REASON__CANCEL_REASON_##name

/* ---- Rules (rules.c, pure) ---------------------------------------------------------------- */

#define ORDER_LINES_MAX 100
#define ORDER_QUANTITY_MAX 1000000
#define ORDER_TOKEN_MAX 256
#define ORDER_REASON_MAX 500
#define ORDER_SHIP_TEXT_MAX 100
#define ORDER_TOTAL_MAX 100000000000000000LL /* 10^17 minor units */
#define ORDER_SKU_MAX 64
#define ORDER_NAME_MAX 200
#define ORDER_CUSTOMER_MAX 128

/* Checks a CreateOrderRequest on its own (no catalog): 1 to 100 lines,
 * each a product id (UUID) at most once, quantity 1..ORDER_QUANTITY_MAX;
 * a payment token of 1..256 printable ASCII characters without spaces; a
 * shipping address with recipient (1..200 characters), line1 (1..200),
 * line2 (..200), city (1..100), region (..100), postal code (1..20 of
 * letters, digits, ' ' and '-'), country (ISO 3166-1 alpha-2, upper
 * case), phone (empty or E.164: '+' and 7 to 15 digits); an
 * expected_total, if given, with units >= 0 and a three-letter currency.
 * Violations go to v (check.h). */
void order_validate_create_order(const order_create_req *in, check_violations *v);

/* The other handlers' checks of a request on its own (no database):
 * violations go to v (see check_violations); the handler answers
 * INVALID_ARGUMENT with them when v->n > 0. Pure, so they are fuzzed
 * without a server (tests/fuzz). Who may act on which order is the
 * handlers' (authorization, not validation). */
void order_validate_cancel_order(const Shop__Order__V1__CancelOrderRequest *in,
                                 check_violations *v);
void order_validate_ship_order(const Shop__Order__V1__ShipOrderRequest *in, check_violations *v);
void order_validate_get_order(const Shop__Order__V1__GetOrderRequest *in, check_violations *v);
/* customer_id, or the caller's id (caller_id) when it is empty. */
void order_validate_list_orders_by_customer(const Shop__Order__V1__ListOrdersByCustomerRequest *in,
                                            const char *caller_id, check_violations *v);
void order_validate_list_orders_by_status(const Shop__Order__V1__ListOrdersByStatusRequest *in,
                                          check_violations *v);
void order_validate_list_stuck_orders(const Shop__Order__V1__ListStuckOrdersRequest *in,
                                      check_violations *v);

/* What the catalog says about one product (order_catalog fills it). */
typedef struct order_product {
  bool found;
  bool archived;
  char sku[ORDER_SKU_MAX + 1];
  char name[ORDER_NAME_MAX * 4 + 1];
  int64_t price_units;
  char currency[4];
  int32_t max_quantity_per_order; /* 0: no limit */
  int64_t version;                /* the product's version the answer is of */
} order_product;

/* One priced line. */
typedef struct order_line {
  char product_id[37];
  int32_t quantity;
  int64_t unit_price;
  int64_t line_total;
  char sku[ORDER_SKU_MAX + 1];
  char name[ORDER_NAME_MAX * 4 + 1];
} order_line;

/* Prices in->lines from products[i] (the catalog's answer for line i)
 * into lines[i], in the shop's currency. Returns OK with *total, or the
 * business failure with a violation: NOT_FOUND (unknown product,
 * "lines[i].product_id"), FAILED_PRECONDITION (archived product, a price
 * in another currency than the shop's, or expected_total differs from the
 * catalog total: "expected_total"), INVALID_ARGUMENT (over the product's
 * max_quantity_per_order, "lines[i].quantity"), OUT_OF_RANGE (the total
 * is over ORDER_TOTAL_MAX). msg receives the message. */
status_code order_price(const order_create_req *in, const order_product *products,
                        const char *currency, order_line *lines, int64_t *total,
                        check_violations *v, char *msg, size_t msglen);

/* The order's view of its reservation and its payment, as the saga
 * records them. */
typedef enum order_stock_state {
  ORDER_STOCK_PENDING = 0,
  ORDER_STOCK_RESERVED = 1,
  ORDER_STOCK_REJECTED = 2,
} order_stock_state;

typedef enum order_payment_state {
  ORDER_PAY_PENDING = 0,
  ORDER_PAY_AUTHORIZED = 1,
  ORDER_PAY_FAILED = 2,
  ORDER_PAY_CAPTURED = 3,
  ORDER_PAY_CAPTURE_FAILED = 4,
} order_payment_state;

typedef struct order_saga_state {
  int status; /* ORDER_ST(...) */
  order_stock_state stock;
  order_payment_state payment;
} order_saga_state;

/* What reaches the saga. */
typedef enum order_saga_input {
  ORDER_SAGA_RESERVED = 1,       /* InventoryReserved */
  ORDER_SAGA_REJECTED = 2,       /* InventoryRejected */
  ORDER_SAGA_AUTHORIZED = 3,     /* PaymentAuthorized */
  ORDER_SAGA_AUTH_FAILED = 4,    /* PaymentFailed, operation AUTHORIZE */
  ORDER_SAGA_CAPTURED = 5,       /* PaymentCaptured */
  ORDER_SAGA_CAPTURE_FAILED = 6, /* PaymentFailed, operation CAPTURE */
  ORDER_SAGA_DEADLINE = 7,       /* the sweeper: the deadline passed */
} order_saga_input;

/* One step of the saga: the new state, and the event it calls for. */
typedef struct order_saga_step {
  order_saga_state next;
  int emit;          /* 0, ORDER_ST(CONFIRMED) or ORDER_ST(CANCELLED) */
  int cancel_reason; /* ORDER_CANCEL(...) when emit is CANCELLED */
} order_saga_step;

/* The lifecycle above as a function: deterministic, no I/O. */
order_saga_step order_saga_apply(order_saga_state s, order_saga_input in);

/* "PENDING", "CONFIRMED", ... ("UNSPECIFIED" otherwise). */
const char *order_status_name(int status);

/* Whether CancelOrder may cancel an order in state s; when not, why (for
 * FAILED_PRECONDITION, naming the state) goes to msg. */
bool order_cancel_allowed(const order_saga_state *s, char *msg, size_t msglen);
/* Whether ShipOrder may ship an order in state s: OK; FAILED_PRECONDITION
 * naming the state when it is not CONFIRMED; UNAVAILABLE when it is
 * CONFIRMED but the capture has not been seen yet (it comes by itself:
 * retry shortly; not recorded with the idempotency key, so the retry with
 * the same key runs again). Why goes to msg. */
status_code order_ship_allowed(const order_saga_state *s, char *msg, size_t msglen);

/* ---- The catalog, as the command side sees it ---------------------------------------------- */

/* Looks up the products ids[0..n) (distinct, n <= ORDER_LINES_MAX) at
 * once into out[0..n). OK with out[i].found false for an unknown product;
 * UNAVAILABLE, DEADLINE_EXCEEDED, ... when the catalog cannot answer
 * (errbuf says why). parent (may be NULL) is the call being served: its
 * remaining deadline and trace travel on. */
typedef struct order_catalog {
  status_code (*get_cb)(void *self, const rpc_call *parent, const char *const *ids, size_t n,
                        order_product *out, char *errbuf, size_t errlen);
  void *self;
} order_catalog;

/* The real catalog: GetProducts on product-query (endpoints.product_query)
 * through an RPC client, counted in metrics (grpc_client_*; may be NULL). */
typedef struct order_catalog_rpc order_catalog_rpc;
status_code order_catalog_rpc_create(order_catalog_rpc **out, const shop_cfg *cfg,
                                     const char *caller, metrics_registry *metrics, char *errbuf,
                                     size_t errlen);
void order_catalog_rpc_destroy(order_catalog_rpc *c);
order_catalog order_catalog_rpc_get(order_catalog_rpc *c);

/*
 * A cache in front of a catalog (order-command's: most orders name the same
 * few products, and asking product-query for them is one RPC hop, one
 * SELECT and a third of a millisecond of CPU per order). The product side
 * stays the owner: an answer is kept at most ttl_ms, and no longer than
 * the product's next event: order_catalog_cache_changed(id, version) is
 * called for every record on shop.product.events.v1 (an events_tail) and
 * makes every answer older than version stale; an answer older than a
 * version heard of is used for its order but not kept. Until the tail is
 * ready (order_catalog_cache_following: from then on every product event is
 * heard of) nothing is kept.
 * So an order is priced from what product-query would have answered
 * within the event hop's lag: the same eventual consistency as product-
 * query's own read model. Thread-safe (one mutex). ttl_ms 0: nothing is
 * kept, every lookup asks inner. Counted in metrics (may be NULL):
 * shop_order_catalog_lookups_total{result="hit|miss"},
 * shop_order_catalog_changes_total.
 */
typedef struct order_catalog_cache order_catalog_cache;
/* clock may be NULL (the real one; tests set theirs). */
status_code order_catalog_cache_create(order_catalog_cache **out, order_catalog inner, int ttl_ms,
                                       const shop_clock *clock, metrics_registry *metrics,
                                       char *errbuf, size_t errlen);
/* From now on every product event reaches order_catalog_cache_changed (the
 * events_tail's ready_cb): answers may be kept. */
void order_catalog_cache_following(order_catalog_cache *c);
/* A product event: product_id at version (its envelope's sequence; <= 0
 * when unknown: every answer kept for the product is dropped). */
void order_catalog_cache_changed(order_catalog_cache *c, const char *product_id, int64_t version);
order_catalog order_catalog_cache_get(order_catalog_cache *c);
void order_catalog_cache_destroy(order_catalog_cache *c);

/* ---- Command side: context, operations, handlers ------------------------------------------ */

typedef struct order_ctx {
  const char *program;  /* event source; the actor of saga and sweeper events */
  const char *currency; /* catalog.currency */
  db_pool *db;
  outbox_relay *relay; /* nudged after commands; may be NULL */
  outbox_sink sink;    /* where order events go */
  order_catalog catalog;
  int64_t deadline_ms; /* order.deadline_s */
  shop_clock clock;    /* zeroed: the real clock */
  /* The saga consumer's current transaction (saga.c): the orders its
   * events name, read at once and written back at once. Its thread's. */
  struct order_saga_batch *saga;
} order_ctx;

/* Fills ctx (sink = outbox_sink_of(relay, program), the real clock).
 * order_ctx_destroy frees what it made. */
void order_ctx_init(order_ctx *ctx, const shop_cfg *cfg, const char *program, db_pool *db,
                    outbox_relay *relay, order_catalog catalog);
void order_ctx_destroy(order_ctx *ctx);

/* A new order, priced. Strings and lines are borrowed. */
typedef struct order_new {
  const char *customer_id;
  const char *idempotency_key;
  const char *payment_token;
  const order_address *address;
  const order_line *lines;
  size_t n_lines;
  int64_t total;
} order_new;

/* Inserts a PENDING order (a new UUIDv7 in order_id) with its lines and
 * deadline, and appends OrderCreated, in tx. *deadline_ms gets the
 * deadline. */
status_code order_place(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                        const order_new *n, char order_id[37], int64_t *deadline_ms, char *errbuf,
                        size_t errlen);

/* Who asks for a cancellation: the user id and whether they are admin. */
typedef struct order_who {
  const char *user_id;
  bool admin;
} order_who;

/* CancelOrder in tx: NOT_FOUND (unknown, or someone else's order for a
 * customer), FAILED_PRECONDITION (naming the state) in *out, or CANCELLED
 * with OrderCancelled appended; *version is the order's new version. */
status_code order_cancel(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                         const order_who *who, const char *order_id, const char *reason_text,
                         command_outcome *out, int64_t *version, char *errbuf, size_t errlen);

/* ShipOrder in tx (the caller is an admin): NOT_FOUND or
 * FAILED_PRECONDITION in *out, or SHIPPED with OrderShipped appended. */
status_code order_ship(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                       const char *order_id, const char *carrier, const char *tracking,
                       command_outcome *out, int64_t *version, char *errbuf, size_t errlen);

/* Registers OrderCommandService on s (every method a command;
 * ShipOrder admin only); ctx must outlive the server. */
status_code order_cmd_register(rpc_server *s, order_ctx *ctx, char *errbuf, size_t errlen);

/* ---- The saga and the sweeper (saga.c) ---------------------------------------------------- */

/* Applies one saga input to order_id in tx (the order row locked), and
 * appends the event the step calls for. An unknown order is logged and
 * skipped. text is the human-readable detail for a cancellation. */
status_code order_saga_step_apply(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                                  const char *order_id, order_saga_input in, const char *text,
                                  char *errbuf, size_t errlen);

/* The saga's consumer (group "order-saga", arg: the order_ctx):
 * InventoryReserved/Rejected, PaymentAuthorized/Failed/Captured, each one
 * saga step. */
extern const consumer_spec order_saga_consumer;

/* Cancels (CANCEL_REASON_DEADLINE_EXCEEDED), each in a transaction of its
 * own on c (no transaction open), up to 100 PENDING orders whose deadline
 * is at or before now_ms. *cancelled (may be NULL) counts them. */
status_code order_sweep(db_conn *c, const order_ctx *ctx, int64_t now_ms, int *cancelled,
                        char *errbuf, size_t errlen);

/* The sweeper thread: every interval_ms it takes the named database lock
 * "shop.order.sweeper" (so one instance sweeps at a time; another takes
 * over when the holder stops or its connection drops) on a connection of
 * its own (params copied) and runs order_sweep. */
typedef struct order_sweeper order_sweeper;
status_code order_sweeper_start(order_sweeper **out, const order_ctx *ctx, const db_params *params,
                                int interval_ms, char *errbuf, size_t errlen);
/* Stops and joins the thread, frees; NULL is fine. */
void order_sweeper_stop(order_sweeper *s);

extern const db_migration order_migrations[];
extern const size_t order_migrations_count;

/* ---- Query side (query.c) ---------------------------------------------------------------- */

typedef struct order_query_ctx {
  db_pool *db;
  consistency_notifier notifier;
  shop_clock clock; /* zeroed: the real clock */
} order_query_ctx;

void order_query_ctx_init(order_query_ctx *ctx, db_pool *db);
void order_query_ctx_destroy(order_query_ctx *ctx);

/* Registers OrderQueryService (GetOrder, ListOrdersByCustomer for any
 * authenticated caller; ListOrdersByStatus, ListStuckOrders admin only). */
status_code order_query_register(rpc_server *s, order_query_ctx *ctx, char *errbuf, size_t errlen);

/* order-query's consumer (group "order-query", arg: the
 * order_query_ctx): order events (the order's version), payment events (the
 * payment's version) and reservation events (the reservation's version),
 * each part of the row kept at its own version; stock-level events are not
 * taken. An event for an order not yet created makes a hidden row that
 * OrderCreated completes. */
extern const consumer_spec order_projection_consumer;

/* /metrics of order-query (app_spec.metrics; metrics.c): sets the gauge
 * shop_orders{state="PENDING"|"CONFIRMED"|"SHIPPED"|"CANCELLED"}, the
 * orders of the read model in each state (0 for a state with none), from
 * one GROUP BY on orders_view. On a database error the gauges keep their
 * last values and the error is logged at warn. */
void order_read_metrics_cb(db_conn *db, metrics_registry *reg, void *arg);

extern const db_migration order_read_migrations[];
extern const size_t order_read_migrations_count;

#endif
