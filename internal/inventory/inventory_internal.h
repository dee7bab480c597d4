/*
 * inventory_internal: what inventory.c (operations, the worker) and
 * batch.c (the consumer's batch) share. Not part of the module's contract
 * (inventory.h).
 */
#ifndef SHOP_INVENTORY_INTERNAL_H
#define SHOP_INVENTORY_INTERNAL_H

#include "inventory/inventory.h"

#define RES_PENDING SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_PENDING
#define RES_RESERVED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_RESERVED
#define RES_REJECTED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_REJECTED
#define RES_RELEASED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_RELEASED
#define RES_SHIPPED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_SHIPPED

#define ID_SIZE 37

/* A stock_levels row (known false: no row). */
typedef struct stock_row {
  bool known;
  char sku[65];
  int64_t available, reserved, shipped, received, version;
  int64_t low_stock_threshold;
  int32_t max_quantity_per_order;
  bool archived;
} stock_row;

/* The columns inventory_stock_parse reads from col on. */
#define INVENTORY_STOCK_COLUMNS                                                                    \
  "sku, available, reserved, shipped, received, version, low_stock_threshold,"                     \
  " max_quantity_per_order, archived"
void inventory_stock_parse(db_rows *r, size_t col, stock_row *s);

/* One line of a reservation. */
typedef struct res_line {
  char product_id[ID_SIZE];
  int64_t quantity;
} res_line;

/* Sorts by product id and folds repeated products into one line; returns
 * the number of lines left. */
size_t inventory_lines_normalize(res_line *l, size_t n);

void inventory_stock_lines_fill(Shop__Inventory__V1__StockLine *sl,
                                Shop__Inventory__V1__StockLine **sp, const res_line *l, size_t n);

int64_t inventory_now_ms(const inventory_ctx *ctx);

/* Appends InventoryReserved for the order's lines (version 1). */
status_code inventory_emit_reserved(db_conn *tx, const inventory_ctx *ctx,
                                    const events_envelope *cause, const char *order_id,
                                    const res_line *l, size_t n, char *errbuf, size_t errlen);

/* Appends InventoryRejected (version 1) naming the lines whose reason[i]
 * is not 0, with available[i] as seen. */
status_code inventory_emit_rejected(db_conn *tx, const inventory_ctx *ctx,
                                    const events_envelope *cause, const char *order_id,
                                    const res_line *l, size_t n, const int *reason,
                                    const int32_t *available, char *errbuf, size_t errlen);

/* Appends m for aggregate key at version seq, carrying the cause's
 * correlation and trace (one log line per decision). */
status_code inventory_emit(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                           const char *key, int64_t seq, const ProtobufCMessage *m, char *errbuf,
                           size_t errlen);

/* A level change already made (or to be written) for product_id: moves s
 * by the deltas, bumps its version and appends StockLevelChanged (and
 * InventoryLow on a downward crossing). */
status_code inventory_stock_changed(db_conn *tx, const inventory_ctx *ctx,
                                    const events_envelope *cause, const char *product_id,
                                    stock_row *s, int64_t d_avail, int64_t d_res, int64_t d_ship,
                                    int64_t d_recv, int cause_kind, const char *order_id,
                                    int64_t restock_seq, char *errbuf, size_t errlen);

/* ---- The consumer's batch (batch.c) ----------------------------------------------------
 *
 * Within one consumer transaction the reservations of its OrderCreated
 * events are decided from rows read at once (their reservations and every
 * product they name, locked), the stock rows changed in memory and written
 * back with one statement before the commit, the reservation rows and
 * lines queued (db_insert_later). Any other event first writes the batch
 * out (inventory_batch_flush) and from then on the transaction reads and
 * writes row by row, as outside a consumer.
 */
typedef struct inventory_batch inventory_batch;
inventory_batch *inventory_batch_new(void);
void inventory_batch_free(inventory_batch *b);

status_code inventory_batch_prepare_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                                       char *errbuf, size_t errlen);
status_code inventory_batch_before_commit_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen);
void inventory_batch_ended_cb(db_conn *db, void *arg);

/* Decides a new reservation from the batch: true with *out when it did
 * (reserved or rejected, events appended, rows queued); false when the
 * batch cannot (not prepared on tx, the order's reservation exists, a
 * product is unknown): the caller goes row by row. */
bool inventory_batch_reserve(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                             const char *order_id, const res_line *l, size_t n,
                             inventory_outcome *out, status_code *st, char *errbuf, size_t errlen);

/* Writes the batch out (stock rows, queued rows) and ends it for the rest
 * of the transaction; nothing when no batch is open on tx. */
status_code inventory_batch_flush(db_conn *tx, const inventory_ctx *ctx, char *errbuf,
                                  size_t errlen);

#endif
