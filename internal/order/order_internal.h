/*
 * order_internal: what command.c and saga.c share inside the module (the
 * orders row, order events). Not part of the module's contract.
 */
#ifndef SHOP_ORDER_INTERNAL_H
#define SHOP_ORDER_INTERNAL_H

#include "order/order.h"

/* An orders row and, once order_row_lines loaded them, its lines (heap;
 * order_row_free). */
typedef struct order_row {
  char order_id[37];
  char customer_id[ORDER_CUSTOMER_MAX + 1];
  order_saga_state state;
  int64_t version;
  int64_t total;
  char currency[4];
  int64_t deadline_ms;
  char traceparent[LOG_TRACEPARENT_SIZE]; /* the trace it was created under; "" */
  size_t n_lines;
  order_line *lines;
} order_row;

/* The columns of an orders row order_row_parse reads, in its order, and
 * the columns of a line order_line_parse reads from col on. */
#define ORDER_ROW_COLUMNS                                                                          \
  "order_id, customer_id, status, stock_state, payment_state, version, total_units, currency,"     \
  " deadline_ms, traceparent"
#define ORDER_LINE_COLUMNS "product_id, quantity, unit_price, line_total, sku, product_name"
void order_row_parse(db_rows *r, order_row *out);
void order_line_parse(db_rows *r, size_t col, order_line *l);

/* Locks and loads the order (FOR UPDATE), without its lines. NOT_FOUND
 * when there is none. */
status_code order_row_lock(db_conn *tx, const char *order_id, order_row *out, char *errbuf,
                           size_t errlen);
/* Loads the lines of a locked row (the events that carry them need them;
 * most saga steps do not). */
status_code order_row_lines(db_conn *tx, order_row *r, char *errbuf, size_t errlen);
void order_row_free(order_row *r);

/* Writes the row's status, saga state and version back (plus the cancel
 * reason or the shipping details when given). */
status_code order_row_save(db_conn *tx, const order_ctx *ctx, const order_row *r, int cancel_reason,
                           const char *cancel_text, const char *carrier, const char *tracking,
                           char *errbuf, size_t errlen);

/* Protobuf views of an order's lines and total; borrow the order_row's
 * strings. */
typedef struct order_pb_lines {
  size_t n;
  Shop__Order__V1__OrderLine *lines;
  Shop__Order__V1__OrderLine **ptrs;
  Shop__Common__V1__Money *money; /* 2 per line */
  Shop__Common__V1__Money total;
} order_pb_lines;

/* false when memory ran out. */
bool order_pb_lines_make(order_pb_lines *pb, const order_line *lines, size_t n, int64_t total,
                         const char *currency);
void order_pb_lines_free(order_pb_lines *pb);

/* Appends OrderCancelled for r (already at its new version; its lines are
 * loaded here). */
status_code order_emit_cancelled(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                                 order_row *r, int previous_status, int reason, const char *text,
                                 char *errbuf, size_t errlen);

int64_t order_now_ms(const order_ctx *ctx);

/* The saga consumer's batch (saga.c); NULL when memory ran out (the saga
 * then reads and writes each order on its own). */
typedef struct order_saga_batch order_saga_batch;
order_saga_batch *order_saga_batch_new(void);
void order_saga_batch_free(order_saga_batch *b);

#endif
