/*
 * inventory: stock per product and each order's reservation, for
 * inventory-worker (database shop_inventory, consumer group
 * "inventory-worker" on shop.product.events.v1 and shop.order.events.v1).
 *
 * Follow an order: OrderCreated reaches inventory_consumer's table, which calls
 * inventory_reserve: in the consumer's transaction it locks the order's
 * stock rows (in product id order, so two reservations never deadlock on
 * each other), checks every line, and either moves every line from
 * available to reserved (one conditional UPDATE per line, which also
 * refuses to go below zero) and appends InventoryReserved, or changes
 * nothing and appends InventoryRejected naming each failing line and why.
 * The consumer decides a batch's new reservations the same way from rows
 * it reads and locks at once, and writes the changed stock rows back with
 * one statement before its commit (inventory_internal.h, batch.c).
 * All or nothing; stock_levels also has CHECK constraints, so no bug can
 * commit a negative level or break available + reserved + shipped ==
 * received. Every change of a level appends StockLevelChanged (the new
 * absolute level and the product's stock version, +1 per change), and a
 * change that takes available from at or above the product's
 * low_stock_threshold to below it appends InventoryLow, once per crossing.
 *
 * Stock comes from the catalog's events: ProductCreated starts a product
 * (version 1, available = received = initial stock); StockAdjusted adds a
 * restock exactly once, in restock_sequence order (a gap is held in
 * projection_pending until the missing restock arrives: events/projection.h,
 * projection "inventory.restock"); InventoryRuleChanged and ProductArchived
 * update the rule and the archived flag.
 *
 * Unknown products: the product and order topics are consumed together,
 * and an order may arrive before its product's ProductCreated. Such an
 * order's reservation waits (status PENDING, nothing reserved, no event)
 * and is tried again when a ProductCreated of one of its products arrives;
 * inventory_expire_waiting (the worker's housekeeping, every second) rejects
 * the ones that waited unknown_product_wait_ms (REJECT_REASON_UNKNOWN_PRODUCT).
 * Waiting never blocks the partition: other orders go on.
 *
 * Compensation: OrderCancelled gives back what the order reserved
 * (InventoryReleased), once; an order cancelled while waiting is closed
 * and never reserves. OrderShipped turns the reservation into shipped
 * stock (InventoryShipped). A reservation's events carry its own version
 * (1 for Reserved/Rejected, 2 for Released/Shipped), keyed by order id.
 *
 * Redelivery: the consumer's inbox drops repeated event ids, and on top of
 * it every operation looks at the reservation's status first, so an
 * OrderCreated seen again (the inbox purged, a replay) reserves nothing.
 *
 * No function here includes mysql.h or rdkafka.h: it speaks SQL through
 * db.h and appends events through an outbox_sink, which tests fake.
 *
 * Threads: the handler runs on the consumer's thread, the housekeeping on
 * the app's housekeeping thread; every function uses only the connection
 * it is given and the read-only ctx.
 */
#ifndef SHOP_INVENTORY_H
#define SHOP_INVENTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock/clock.h"
#include "config/config.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/events.h"
#include "events/outbox.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/product/v1/events.pb-c.h"
#include "status/status.h"

/* Reservation statuses are shop.inventory.v1.ReservationStatus values
 * (PENDING means waiting for an unknown product), plus this one: the
 * order was cancelled before anything was reserved. */
#define INVENTORY_RESERVATION_CLOSED 100

/* Most lines one reservation holds (CreateOrder allows 100). */
#define INVENTORY_MAX_LINES 100

typedef struct inventory_ctx {
  const char *program;             /* event source "/shop/<program>" and actor */
  outbox_sink sink;                /* events go here, in the caller's transaction */
  int64_t unknown_product_wait_ms; /* how long a reservation waits for a product */
  /* Wall clock in Unix milliseconds; NULL: the real one. Tests move it. */
  shop_clock clock; /* zeroed: the real clock */
  /* The consumer's current transaction (batch.c): its reservations
   * decided from rows read at once. The consumer thread's. */
  struct inventory_batch *batch;
} inventory_ctx;

/* Fills ctx from cfg (inventory.unknown_product_wait_ms) with the real
 * clock. program is borrowed. inventory_ctx_destroy frees what it made. */
void inventory_ctx_init(inventory_ctx *ctx, const shop_cfg *cfg, const char *program,
                        outbox_sink sink);
void inventory_ctx_destroy(inventory_ctx *ctx);

/* One line to reserve. product_id is borrowed. */
typedef struct inventory_line {
  const char *product_id;
  int64_t quantity; /* >= 1 */
} inventory_line;

typedef enum inventory_outcome {
  INVENTORY_UNCHANGED = 0, /* decided earlier (a redelivery): nothing done */
  INVENTORY_RESERVED = 1,  /* every line reserved; InventoryReserved appended */
  INVENTORY_REJECTED = 2,  /* nothing reserved; InventoryRejected appended */
  INVENTORY_WAITING = 3,   /* a product is unknown; the reservation waits */
} inventory_outcome;

/* ---- Pure rules ------------------------------------------------------------------ */

/* What inventory knows of one product when it checks a line. */
typedef struct inventory_stock_view {
  bool known;
  bool archived;
  int64_t available;
  int32_t max_quantity_per_order; /* 0: no limit */
} inventory_stock_view;

/* The shop.inventory.v1.RejectReason for one line, or 0 when it can be
 * reserved. Unknown beats archived beats the per-order limit beats out of
 * stock. */
int inventory_line_check(const inventory_stock_view *s, int64_t quantity);

/* True when available moved from at or above threshold to below it (a
 * threshold of 0 never fires). */
bool inventory_low_crossed(int64_t before, int64_t after, int64_t threshold);

/* ---- Operations, inside the caller's open transaction ------------------------------- */

/* Every operation appends its events through ctx->sink in tx; the caller
 * commits, then calls ctx->sink.committed_cb. cause (may be NULL) is the
 * event that led here: its correlation id and traceparent travel on.
 * Database errors come back as they are (ABORTED and UNAVAILABLE: run the
 * transaction again). */

/* Reserves lines (1..INVENTORY_MAX_LINES; a product listed twice counts
 * once with the sum) for order_id, all or none, as described above. */
status_code inventory_reserve(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const char *order_id, const inventory_line *lines, size_t n,
                              inventory_outcome *out, char *errbuf, size_t errlen);

/* OrderCancelled: gives back a RESERVED reservation (*released true) or
 * closes a waiting or unknown one; anything else changes nothing. */
status_code inventory_release(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const char *order_id, bool *released, char *errbuf, size_t errlen);

/* OrderShipped: a RESERVED reservation becomes shipped stock (*shipped
 * true); anything else changes nothing. */
status_code inventory_ship(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                           const char *order_id, bool *shipped, char *errbuf, size_t errlen);

/* ProductCreated (cause required: its sequence is the product's
 * version): starts the product's stock unless it exists, then tries the
 * reservations waiting for it. */
status_code inventory_product_created(db_conn *tx, const inventory_ctx *ctx,
                                      const events_envelope *cause,
                                      const Shop__Product__V1__ProductCreated *e, char *errbuf,
                                      size_t errlen);

/* StockAdjusted (cause required; its data is the event): adds the restock
 * once, in restock_sequence order. */
status_code inventory_restock(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const Shop__Product__V1__StockAdjusted *e, char *errbuf,
                              size_t errlen);

/* InventoryRuleChanged at product version `version` (older ones are
 * ignored). */
status_code inventory_rule_changed(db_conn *tx, const char *product_id,
                                   const Shop__Product__V1__InventoryRule *rule, int64_t version,
                                   char *errbuf, size_t errlen);

/* ProductArchived: later reservations of the product are rejected. */
status_code inventory_product_archived(db_conn *tx, const char *product_id, char *errbuf,
                                       size_t errlen);

/* ---- The worker ------------------------------------------------------------------- */

/* The consumer of group "inventory-worker" (arg: an inventory_ctx): product
 * events (stock rows, restocks, rules, archiving) before order events
 * (reserve, release, ship) of each batch. */
extern const consumer_spec inventory_consumer;

/* Rejects, each in a transaction of its own on c (no transaction open),
 * the reservations that have waited unknown_product_wait_ms for an
 * unknown product. *decided (may be NULL) counts them. */
status_code inventory_expire_waiting(db_conn *c, const inventory_ctx *ctx, int *decided,
                                     char *errbuf, size_t errlen);

/* ---- Reading (tests, tools) --------------------------------------------------------- */

typedef struct inventory_level {
  int64_t available, reserved, shipped, received, version;
} inventory_level;

/* NOT_FOUND for a product inventory has not heard of. */
status_code inventory_level_get(db_conn *c, const char *product_id, inventory_level *out,
                                char *errbuf, size_t errlen);

/* The reservation's status (ReservationStatus or INVENTORY_RESERVATION_CLOSED)
 * and version; NOT_FOUND when there is none. */
status_code inventory_reservation_get(db_conn *c, const char *order_id, int *status,
                                      int64_t *version, char *errbuf, size_t errlen);

extern const db_migration inventory_migrations[];
extern const size_t inventory_migrations_count;

#endif
