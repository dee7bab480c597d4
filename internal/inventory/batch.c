/* inventory-worker's consumer batch (inventory_internal.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory/inventory_internal.h"
#include "shop/order/v1/events.pb-c.h"

struct inventory_batch {
  /* The consumer's connection while the batch is open, else NULL: the
   * housekeeping thread's reservations never see it. */
  _Atomic(db_conn *) tx;
  char (*orders)[ID_SIZE]; /* orders with a reservation row, or decided here */
  size_t n_orders, cap_orders;
  struct batch_product {
    char id[ID_SIZE];
    stock_row s; /* locked; known false: no row */
    bool dirty;  /* changed, to be written */
  } * products;
  size_t n_products, cap_products;
};

inventory_batch *inventory_batch_new(void) { return calloc(1, sizeof(inventory_batch)); }

static void batch_close(inventory_batch *b) {
  atomic_store(&b->tx, NULL);
  b->n_orders = 0;
  b->n_products = 0;
}

void inventory_batch_free(inventory_batch *b) {
  if (b == NULL) return;
  free(b->orders);
  free(b->products);
  free(b);
}

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return true;
  size_t c = *cap > 0 ? *cap : 16;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * size);
  if (q == NULL) return false;
  *p = q;
  *cap = c;
  return true;
}

static bool add_order(inventory_batch *b, const char *id) {
  for (size_t i = 0; i < b->n_orders; i++)
    if (strcmp(b->orders[i], id) == 0) return true;
  if (!grow((void **)&b->orders, &b->cap_orders, b->n_orders + 1, ID_SIZE)) return false;
  snprintf(b->orders[b->n_orders++], ID_SIZE, "%s", id);
  return true;
}

static bool has_order(const inventory_batch *b, const char *id) {
  for (size_t i = 0; i < b->n_orders; i++)
    if (strcmp(b->orders[i], id) == 0) return true;
  return false;
}

static struct batch_product *find_product(inventory_batch *b, const char *product_id) {
  for (size_t i = 0; i < b->n_products; i++)
    if (strcmp(b->products[i].id, product_id) == 0) return &b->products[i];
  return NULL;
}

static bool add_product(inventory_batch *b, const char *id) {
  if (find_product(b, id) != NULL) return true;
  if (!grow((void **)&b->products, &b->cap_products, b->n_products + 1, sizeof *b->products))
    return false;
  struct batch_product *p = &b->products[b->n_products++];
  memset(p, 0, sizeof *p);
  snprintf(p->id, sizeof p->id, "%s", id);
  return true;
}

static bool usable_id(const char *id) {
  return id != NULL && id[0] != '\0' && strlen(id) < ID_SIZE;
}

typedef struct reserved_read {
  inventory_batch *b;
  bool out_of_memory;
} reserved_read;

static bool reserved_row_cb(db_rows *r, void *arg) {
  reserved_read *rr = arg;
  rr->out_of_memory = !add_order(rr->b, db_rows_str(r, 0, NULL));
  return !rr->out_of_memory;
}

static bool stock_row_cb(db_rows *r, void *arg) {
  struct batch_product *bp = find_product(arg, db_rows_str(r, 0, NULL));
  if (bp != NULL) inventory_stock_parse(r, 1, &bp->s);
  return true;
}

status_code inventory_batch_prepare_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                                       char *errbuf, size_t errlen) {
  const inventory_ctx *ctx = arg;
  inventory_batch *b = ctx->batch;
  if (b == NULL) return STATUS_OK;
  batch_close(b);
  const ProtobufCMessageDescriptor *created = &shop__order__v1__order_created__descriptor;
  const char *ids[n > 0 ? n : 1];
  size_t k = consumer_batch_keys(msgs, n, created, "order_id", ID_SIZE - 1, ids);
  if (k == 0) return STATUS_OK;
  for (size_t i = 0; i < n; i++) {
    if (msgs[i].msg->descriptor != created) continue;
    const Shop__Order__V1__OrderCreated *e = (const void *)msgs[i].msg;
    for (size_t j = 0; j < e->n_lines; j++)
      if (usable_id(e->lines[j]->product_id) && !add_product(b, e->lines[j]->product_id))
        return STATUS_OK; /* out of memory: row by row, then */
  }
  reserved_read rr = {.b = b};
  status_code st = db_query_keys(tx,
                                 "SELECT order_id FROM reservations WHERE order_id IN"
                                 " (" DB_KEYS_PLACEHOLDERS ") FOR UPDATE",
                                 ids, k, reserved_row_cb, &rr, errbuf, errlen);
  if (st != STATUS_OK || rr.out_of_memory) return st; /* out of memory: row by row */
  const char *pids[b->n_products > 0 ? b->n_products : 1];
  for (size_t i = 0; i < b->n_products; i++) pids[i] = b->products[i].id;
  /* Product id order, as the reservations row by row lock them. */
  st = db_query_keys(tx,
                     "SELECT product_id, " INVENTORY_STOCK_COLUMNS
                     " FROM stock_levels WHERE product_id IN (" DB_KEYS_PLACEHOLDERS
                     ") ORDER BY product_id FOR UPDATE",
                     pids, b->n_products, stock_row_cb, b, errbuf, errlen);
  if (st != STATUS_OK) return st;
  atomic_store(&b->tx, tx);
  return STATUS_OK;
}

bool inventory_batch_reserve(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                             const char *order_id, const res_line *l, size_t n,
                             inventory_outcome *out, status_code *st, char *errbuf, size_t errlen) {
  inventory_batch *b = ctx->batch;
  *st = STATUS_OK;
  if (b == NULL || atomic_load(&b->tx) != tx || has_order(b, order_id)) return false;
  struct batch_product *bp[INVENTORY_MAX_LINES];
  int reason[INVENTORY_MAX_LINES];
  size_t failing = 0;
  for (size_t i = 0; i < n; i++) {
    bp[i] = find_product(b, l[i].product_id);
    if (bp[i] == NULL || !bp[i]->s.known) return false; /* it waits: row by row */
    inventory_stock_view view = {.known = true,
                                 .archived = bp[i]->s.archived,
                                 .available = bp[i]->s.available,
                                 .max_quantity_per_order = bp[i]->s.max_quantity_per_order};
    if ((reason[i] = inventory_line_check(&view, l[i].quantity)) != 0) failing++;
  }
  if (!add_order(b, order_id)) return false;
  int64_t now = inventory_now_ms(ctx);
  int status = failing > 0 ? RES_REJECTED : RES_RESERVED;
  db_value row[6] = {DB_STR(order_id), DB_I64(status), DB_I64(1),
                     DB_I64(now),      DB_I64(now),    DB_I64(now)};
  *st = db_insert_later(tx,
                        "INSERT INTO reservations (order_id, status, version, waiting_since_ms,"
                        " created_ms, updated_ms)",
                        row, 6, errbuf, errlen);
  for (size_t i = 0; i < n && *st == STATUS_OK; i++) {
    db_value lv[3] = {DB_STR(order_id), DB_STR(l[i].product_id), DB_I64(l[i].quantity)};
    *st = db_insert_later(tx, "INSERT INTO reservation_lines (order_id, product_id, quantity)", lv,
                          3, errbuf, errlen);
  }
  if (*st != STATUS_OK) return true;
  if (failing > 0) {
    int32_t avail[INVENTORY_MAX_LINES];
    for (size_t i = 0; i < n; i++) avail[i] = (int32_t)bp[i]->s.available;
    *st = inventory_emit_rejected(tx, ctx, cause, order_id, l, n, reason, avail, errbuf, errlen);
    *out = INVENTORY_REJECTED;
    return true;
  }
  *st = inventory_emit_reserved(tx, ctx, cause, order_id, l, n, errbuf, errlen);
  for (size_t i = 0; i < n && *st == STATUS_OK; i++) {
    *st = inventory_stock_changed(
        tx, ctx, cause, l[i].product_id, &bp[i]->s, -l[i].quantity, l[i].quantity, 0, 0,
        SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESERVED, order_id, 0, errbuf,
        errlen);
    bp[i]->dirty = true;
  }
  *out = INVENTORY_RESERVED;
  return true;
}

static db_value stock_column_cb(size_t row, size_t col, void *arg) {
  const stock_row *r = ((const stock_row **)arg)[row];
  return DB_I64(col == 0 ? r->available : col == 1 ? r->reserved : r->version);
}

/* The changed stock rows, absolute (the rows are locked), written at
 * once (db_update_keys). */
static status_code write_stock(db_conn *tx, const inventory_ctx *ctx, inventory_batch *b,
                               char *errbuf, size_t errlen) {
  const char *ids[b->n_products > 0 ? b->n_products : 1];
  const stock_row *rows[b->n_products > 0 ? b->n_products : 1];
  size_t k = 0;
  for (size_t i = 0; i < b->n_products; i++)
    if (b->products[i].dirty) {
      ids[k] = b->products[i].id;
      rows[k++] = &b->products[i].s;
    }
  static const char *const cols[] = {"available", "reserved", "version"};
  status_code st = db_update_keys(tx, "stock_levels", "product_id", cols, 3, ids, k,
                                  stock_column_cb, rows, inventory_now_ms(ctx), errbuf, errlen);
  if (st != STATUS_OK) return st;
  for (size_t i = 0; i < b->n_products; i++) b->products[i].dirty = false;
  return STATUS_OK;
}

status_code inventory_batch_before_commit_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  const inventory_ctx *ctx = arg;
  inventory_batch *b = ctx->batch;
  if (b == NULL || atomic_load(&b->tx) != tx) return STATUS_OK;
  status_code st = write_stock(tx, ctx, b, errbuf, errlen);
  batch_close(b);
  return st;
}

status_code inventory_batch_flush(db_conn *tx, const inventory_ctx *ctx, char *errbuf,
                                  size_t errlen) {
  inventory_batch *b = ctx->batch;
  if (b == NULL || atomic_load(&b->tx) != tx) return STATUS_OK;
  status_code st = write_stock(tx, ctx, b, errbuf, errlen);
  if (st == STATUS_OK) st = db_insert_flush(tx, errbuf, errlen);
  batch_close(b);
  return st;
}

void inventory_batch_ended_cb(db_conn *db, void *arg) {
  const inventory_ctx *ctx = arg;
  if (ctx->batch != NULL) batch_close(ctx->batch);
}
