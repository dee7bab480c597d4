/* inventory-worker's domain: stock levels and reservations. See
 * inventory.h. */
#include "inventory/inventory.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events/projection.h"
#include "inventory/inventory_internal.h"
#include "log/log.h"
#include "shop/order/v1/events.pb-c.h"
#include "topology/topology.h"

/* ---- Pure rules ------------------------------------------------------------------ */

int inventory_line_check(const inventory_stock_view *s, int64_t quantity) {
  if (!s->known) return SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_UNKNOWN_PRODUCT;
  if (s->archived) return SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_PRODUCT_ARCHIVED;
  if (s->max_quantity_per_order > 0 && quantity > s->max_quantity_per_order)
    return SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_QUANTITY_LIMIT_EXCEEDED;
  if (s->available < quantity)
    return SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_OUT_OF_STOCK;
  return 0;
}

bool inventory_low_crossed(int64_t before, int64_t after, int64_t threshold) {
  return threshold > 0 && before >= threshold && after < threshold;
}

/* ---- Context ---------------------------------------------------------------------- */

void inventory_ctx_init(inventory_ctx *ctx, const shop_cfg *cfg, const char *program,
                        outbox_sink sink) {
  memset(ctx, 0, sizeof *ctx);
  ctx->program = program;
  ctx->sink = sink;
  ctx->unknown_product_wait_ms = cfg != NULL ? cfg->inventory.unknown_product_wait_ms : 30000;
  ctx->batch = inventory_batch_new();
}

void inventory_ctx_destroy(inventory_ctx *ctx) {
  inventory_batch_free(ctx->batch);
  ctx->batch = NULL;
}

int64_t inventory_now_ms(const inventory_ctx *ctx) { return clock_now(&ctx->clock); }
#define now_ms inventory_now_ms

/* ---- Events ------------------------------------------------------------------------ */

/* Appends m for aggregate key at version seq, carrying the cause's
 * correlation and trace. */
status_code inventory_emit(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                           const char *key, int64_t seq, const ProtobufCMessage *m, char *errbuf,
                           size_t errlen) {
  const outbox_cause c = outbox_cause_of_event(cause);
  status_code st = outbox_emit(&ctx->sink, tx, &c, key, seq, m, errbuf, errlen);
  /* One line per decision (not per stock level change), under the
   * current scope's trace. */
  if (st == STATUS_OK && m->descriptor != &shop__inventory__v1__stock_level_changed__descriptor)
    log_info(NULL, "inventory: %s for %s (version %lld)", m->descriptor->short_name, key,
             (long long)seq);
  return st;
}

/* ---- Stock rows ---------------------------------------------------------------------- */

void inventory_stock_parse(db_rows *r, size_t col, stock_row *s) {
  memset(s, 0, sizeof *s);
  s->known = true;
  snprintf(s->sku, sizeof s->sku, "%s", db_rows_str(r, col, NULL));
  s->available = db_rows_i64(r, col + 1);
  s->reserved = db_rows_i64(r, col + 2);
  s->shipped = db_rows_i64(r, col + 3);
  s->received = db_rows_i64(r, col + 4);
  s->version = db_rows_i64(r, col + 5);
  s->low_stock_threshold = db_rows_i64(r, col + 6);
  s->max_quantity_per_order = (int32_t)db_rows_i64(r, col + 7);
  s->archived = db_rows_i64(r, col + 8) != 0;
}

static status_code stock_lock(db_conn *tx, const char *product_id, stock_row *s, char *errbuf,
                              size_t errlen) {
  memset(s, 0, sizeof *s);
  db_value v[1] = {DB_STR(product_id)};
  db_rows *r = NULL;
  status_code st = db_query(
      tx, "SELECT " INVENTORY_STOCK_COLUMNS " FROM stock_levels WHERE product_id = ? FOR UPDATE", v,
      1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (db_rows_next(r)) inventory_stock_parse(r, 0, s);
  db_rows_free(r);
  return STATUS_OK;
}

/* Moves a locked product's stock by the deltas, bumps its version, and
 * appends StockLevelChanged (and InventoryLow on a downward crossing). s
 * is updated to the new level. The WHERE clause refuses to go below zero
 * even if s was stale; that would be a bug, reported as INTERNAL. */
static status_code stock_move(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const char *product_id, stock_row *s, int64_t d_avail, int64_t d_res,
                              int64_t d_ship, int64_t d_recv, int cause_kind, const char *order_id,
                              int64_t restock_seq, char *errbuf, size_t errlen) {
  db_value v[8] = {DB_I64(d_avail),     DB_I64(d_res),      DB_I64(d_ship),  DB_I64(d_recv),
                   DB_I64(now_ms(ctx)), DB_STR(product_id), DB_I64(d_avail), DB_I64(d_res)};
  uint64_t affected = 0;
  status_code st = db_exec(tx,
                           "UPDATE stock_levels SET available = available + ?, reserved = "
                           "reserved + ?, shipped = shipped + ?, received = received + ?, "
                           "version = version + 1, updated_ms = ? WHERE product_id = ? AND "
                           "available + ? >= 0 AND reserved + ? >= 0",
                           v, 8, &affected, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (affected != 1) {
    snprintf(errbuf, errlen, "stock of %s would go negative (bug)", product_id);
    return STATUS_INTERNAL;
  }
  return inventory_stock_changed(tx, ctx, cause, product_id, s, d_avail, d_res, d_ship, d_recv,
                                 cause_kind, order_id, restock_seq, errbuf, errlen);
}

status_code inventory_stock_changed(db_conn *tx, const inventory_ctx *ctx,
                                    const events_envelope *cause, const char *product_id,
                                    stock_row *s, int64_t d_avail, int64_t d_res, int64_t d_ship,
                                    int64_t d_recv, int cause_kind, const char *order_id,
                                    int64_t restock_seq, char *errbuf, size_t errlen) {
  status_code st;
  int64_t before = s->available;
  s->available += d_avail;
  s->reserved += d_res;
  s->shipped += d_ship;
  s->received += d_recv;
  s->version++;

  Shop__Inventory__V1__StockLevel level = SHOP__INVENTORY__V1__STOCK_LEVEL__INIT;
  level.available = s->available;
  level.reserved = s->reserved;
  level.shipped = s->shipped;
  level.received = s->received;
  level.version = s->version;
  Shop__Inventory__V1__StockLevelChanged ev = SHOP__INVENTORY__V1__STOCK_LEVEL_CHANGED__INIT;
  ev.product_id = (char *)product_id;
  ev.level = &level;
  ev.cause = cause_kind;
  ev.order_id = (char *)(order_id != NULL ? order_id : "");
  ev.restock_sequence = restock_seq;
  st = inventory_emit(tx, ctx, cause, product_id, s->version, &ev.base, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (inventory_low_crossed(before, s->available, s->low_stock_threshold)) {
    Shop__Inventory__V1__InventoryLow low = SHOP__INVENTORY__V1__INVENTORY_LOW__INIT;
    low.product_id = (char *)product_id;
    low.sku = s->sku;
    low.available = s->available;
    low.threshold = s->low_stock_threshold;
    st = inventory_emit(tx, ctx, cause, product_id, s->version, &low.base, errbuf, errlen);
  }
  return st;
}

/* ---- Reservations ------------------------------------------------------------------- */

static int res_line_cmp(const void *a, const void *b) {
  return strcmp(((const res_line *)a)->product_id, ((const res_line *)b)->product_id);
}

size_t inventory_lines_normalize(res_line *l, size_t n) {
  qsort(l, n, sizeof *l, res_line_cmp);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (o > 0 && strcmp(l[o - 1].product_id, l[i].product_id) == 0)
      l[o - 1].quantity += l[i].quantity;
    else
      l[o++] = l[i];
  }
  return o;
}

/* Loads a reservation's lines (sorted by product id). */
static status_code lines_load(db_conn *tx, const char *order_id, res_line *l, size_t *n,
                              char *errbuf, size_t errlen) {
  db_value v[1] = {DB_STR(order_id)};
  db_rows *r = NULL;
  status_code st = db_query(tx,
                            "SELECT product_id, quantity FROM reservation_lines WHERE order_id = ? "
                            "ORDER BY product_id",
                            v, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  *n = 0;
  while (db_rows_next(r) && *n < INVENTORY_MAX_LINES) {
    snprintf(l[*n].product_id, ID_SIZE, "%s", db_rows_str(r, 0, NULL));
    l[*n].quantity = db_rows_i64(r, 1);
    (*n)++;
  }
  db_rows_free(r);
  return STATUS_OK;
}

static status_code res_set(db_conn *tx, const inventory_ctx *ctx, const char *order_id, int status,
                           int64_t version, char *errbuf, size_t errlen) {
  db_value v[4] = {DB_I64(status), DB_I64(version), DB_I64(now_ms(ctx)), DB_STR(order_id)};
  return db_exec(tx,
                 "UPDATE reservations SET status = ?, version = ?, updated_ms = ? WHERE order_id "
                 "= ?",
                 v, 4, NULL, NULL, errbuf, errlen);
}

/* Locks the reservation row: *found, its status, version and waiting time. */
static status_code res_lock(db_conn *tx, const char *order_id, bool *found, int *status,
                            int64_t *version, int64_t *since, char *errbuf, size_t errlen) {
  db_value v[1] = {DB_STR(order_id)};
  db_rows *r = NULL;
  status_code st = db_query(tx,
                            "SELECT status, version, waiting_since_ms FROM reservations WHERE "
                            "order_id = ? FOR UPDATE",
                            v, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  *found = db_rows_next(r);
  if (*found) {
    *status = (int)db_rows_i64(r, 0);
    *version = db_rows_i64(r, 1);
    *since = db_rows_i64(r, 2);
  }
  db_rows_free(r);
  return STATUS_OK;
}

void inventory_stock_lines_fill(Shop__Inventory__V1__StockLine *sl,
                                Shop__Inventory__V1__StockLine **sp, const res_line *l, size_t n) {
  for (size_t i = 0; i < n; i++) {
    shop__inventory__v1__stock_line__init(&sl[i]);
    sl[i].product_id = (char *)l[i].product_id;
    sl[i].quantity = (int32_t)l[i].quantity;
    sp[i] = &sl[i];
  }
}

status_code inventory_emit_reserved(db_conn *tx, const inventory_ctx *ctx,
                                    const events_envelope *cause, const char *order_id,
                                    const res_line *l, size_t n, char *errbuf, size_t errlen) {
  Shop__Inventory__V1__StockLine sl[INVENTORY_MAX_LINES];
  Shop__Inventory__V1__StockLine *sp[INVENTORY_MAX_LINES];
  inventory_stock_lines_fill(sl, sp, l, n);
  Shop__Inventory__V1__InventoryReserved ev = SHOP__INVENTORY__V1__INVENTORY_RESERVED__INIT;
  ev.order_id = (char *)order_id;
  ev.n_lines = n;
  ev.lines = sp;
  return inventory_emit(tx, ctx, cause, order_id, 1, &ev.base, errbuf, errlen);
}

status_code inventory_emit_rejected(db_conn *tx, const inventory_ctx *ctx,
                                    const events_envelope *cause, const char *order_id,
                                    const res_line *l, size_t n, const int *reason,
                                    const int32_t *available, char *errbuf, size_t errlen) {
  Shop__Inventory__V1__RejectedLine rl[INVENTORY_MAX_LINES];
  Shop__Inventory__V1__RejectedLine *rp[INVENTORY_MAX_LINES];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (reason[i] == 0) continue;
    shop__inventory__v1__rejected_line__init(&rl[k]);
    rl[k].product_id = (char *)l[i].product_id;
    rl[k].requested = (int32_t)l[i].quantity;
    rl[k].available = available[i];
    rl[k].reason = reason[i];
    rp[k] = &rl[k];
    k++;
  }
  Shop__Inventory__V1__InventoryRejected ev = SHOP__INVENTORY__V1__INVENTORY_REJECTED__INIT;
  ev.order_id = (char *)order_id;
  ev.n_rejected_lines = k;
  ev.rejected_lines = rp;
  return inventory_emit(tx, ctx, cause, order_id, 1, &ev.base, errbuf, errlen);
}

/* Decides a PENDING reservation whose row is locked: reserve, reject, or
 * keep waiting. */
static status_code reserve_decide(db_conn *tx, const inventory_ctx *ctx,
                                  const events_envelope *cause, const char *order_id,
                                  const res_line *l, size_t n, int64_t since,
                                  inventory_outcome *out, char *errbuf, size_t errlen) {
  stock_row s[INVENTORY_MAX_LINES];
  int reason[INVENTORY_MAX_LINES];
  size_t unknown = 0, failing = 0;
  status_code st;
  for (size_t i = 0; i < n; i++) {
    if ((st = stock_lock(tx, l[i].product_id, &s[i], errbuf, errlen)) != STATUS_OK) return st;
    inventory_stock_view view = {.known = s[i].known,
                                 .archived = s[i].archived,
                                 .available = s[i].available,
                                 .max_quantity_per_order = s[i].max_quantity_per_order};
    reason[i] = inventory_line_check(&view, l[i].quantity);
    if (!s[i].known) unknown++;
    if (reason[i] != 0) failing++;
  }
  if (unknown > 0 && now_ms(ctx) - since < ctx->unknown_product_wait_ms) {
    *out = INVENTORY_WAITING;
    return STATUS_OK;
  }
  if (failing > 0) {
    int32_t avail[INVENTORY_MAX_LINES];
    for (size_t i = 0; i < n; i++) avail[i] = s[i].known ? (int32_t)s[i].available : 0;
    if ((st = res_set(tx, ctx, order_id, RES_REJECTED, 1, errbuf, errlen)) != STATUS_OK) return st;
    if ((st = inventory_emit_rejected(tx, ctx, cause, order_id, l, n, reason, avail, errbuf,
                                      errlen)) != STATUS_OK)
      return st;
    *out = INVENTORY_REJECTED;
    return STATUS_OK;
  }
  if ((st = res_set(tx, ctx, order_id, RES_RESERVED, 1, errbuf, errlen)) != STATUS_OK) return st;
  if ((st = inventory_emit_reserved(tx, ctx, cause, order_id, l, n, errbuf, errlen)) != STATUS_OK)
    return st;
  for (size_t i = 0; i < n; i++) {
    st = stock_move(tx, ctx, cause, l[i].product_id, &s[i], -l[i].quantity, l[i].quantity, 0, 0,
                    SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESERVED, order_id, 0,
                    errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  *out = INVENTORY_RESERVED;
  return STATUS_OK;
}

/* An order's lines, checked, sorted and folded into l. */
static status_code lines_take(const char *order_id, const inventory_line *lines, size_t n,
                              res_line *l, size_t *nl, char *errbuf, size_t errlen) {
  if (n == 0 || n > INVENTORY_MAX_LINES) {
    snprintf(errbuf, errlen, "order %s has %zu lines (1 to %d)", order_id, n, INVENTORY_MAX_LINES);
    return STATUS_INVALID_ARGUMENT;
  }
  for (size_t i = 0; i < n; i++) {
    if (lines[i].product_id == NULL || strlen(lines[i].product_id) >= ID_SIZE ||
        lines[i].quantity < 1) {
      snprintf(errbuf, errlen, "order %s: line %zu has no valid product id or quantity", order_id,
               i);
      return STATUS_INVALID_ARGUMENT;
    }
    snprintf(l[i].product_id, ID_SIZE, "%s", lines[i].product_id);
    l[i].quantity = lines[i].quantity;
  }
  *nl = inventory_lines_normalize(l, n);
  return STATUS_OK;
}

status_code inventory_reserve(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const char *order_id, const inventory_line *lines, size_t n,
                              inventory_outcome *out, char *errbuf, size_t errlen) {
  *out = INVENTORY_UNCHANGED;
  if (n == 0 || n > INVENTORY_MAX_LINES) {
    snprintf(errbuf, errlen, "order %s has %zu lines (1 to %d)", order_id, n, INVENTORY_MAX_LINES);
    return STATUS_INVALID_ARGUMENT;
  }
  bool found = false;
  int status = 0;
  int64_t version = 0, since = 0;
  status_code st = res_lock(tx, order_id, &found, &status, &version, &since, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (found && status != RES_PENDING) return STATUS_OK;
  if (!found && lines == NULL) return STATUS_OK; /* a retry of a reservation that is gone */
  res_line l[INVENTORY_MAX_LINES];
  size_t nl = 0;
  if (found) {
    if ((st = lines_load(tx, order_id, l, &nl, errbuf, errlen)) != STATUS_OK) return st;
  } else {
    if ((st = lines_take(order_id, lines, n, l, &nl, errbuf, errlen)) != STATUS_OK) return st;
    since = now_ms(ctx);
    db_value v[5] = {DB_STR(order_id), DB_I64(RES_PENDING), DB_I64(since), DB_I64(since),
                     DB_I64(since)};
    st = db_exec(tx,
                 "INSERT INTO reservations (order_id, status, version, waiting_since_ms, "
                 "created_ms, updated_ms) VALUES (?, ?, 0, ?, ?, ?)",
                 v, 5, NULL, NULL, errbuf, errlen);
    /* A second instance inserted it first: run the transaction again. */
    if (st == STATUS_ALREADY_EXISTS) return STATUS_ABORTED;
    if (st != STATUS_OK) return st;
    for (size_t i = 0; i < nl; i++) {
      db_value lv[3] = {DB_STR(order_id), DB_STR(l[i].product_id), DB_I64(l[i].quantity)};
      st = db_exec(tx,
                   "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES (?, ?, "
                   "?)",
                   lv, 3, NULL, NULL, errbuf, errlen);
      if (st != STATUS_OK) return st;
    }
  }
  return reserve_decide(tx, ctx, cause, order_id, l, nl, since, out, errbuf, errlen);
}

/* Moves every line of a RESERVED reservation: release (back to available)
 * or ship (to shipped). */
static status_code reservation_settle(db_conn *tx, const inventory_ctx *ctx,
                                      const events_envelope *cause, const char *order_id, bool ship,
                                      bool *done, char *errbuf, size_t errlen) {
  *done = false;
  bool found = false;
  int status = 0;
  int64_t version = 0, since = 0;
  status_code st = res_lock(tx, order_id, &found, &status, &version, &since, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!found || status == RES_PENDING) {
    if (ship) {
      log_warn(&(log_ctx){.event_id = cause != NULL ? cause->id : NULL},
               "OrderShipped for order %s without a reservation", order_id);
      return STATUS_OK;
    }
    /* Cancelled before anything was reserved: close it, so that a
     * waiting reservation never reserves later. */
    int64_t t = now_ms(ctx);
    db_value v[4] = {DB_STR(order_id), DB_I64(INVENTORY_RESERVATION_CLOSED), DB_I64(t), DB_I64(t)};
    return db_exec(tx,
                   "INSERT INTO reservations (order_id, status, version, waiting_since_ms, "
                   "created_ms, updated_ms) VALUES (?, ?, 0, 0, ?, ?) ON DUPLICATE KEY UPDATE "
                   "status = VALUES(status), updated_ms = VALUES(updated_ms)",
                   v, 4, NULL, NULL, errbuf, errlen);
  }
  if (status != RES_RESERVED) return STATUS_OK;
  res_line l[INVENTORY_MAX_LINES];
  size_t n = 0;
  if ((st = lines_load(tx, order_id, l, &n, errbuf, errlen)) != STATUS_OK) return st;
  int64_t next = version + 1;
  if ((st = res_set(tx, ctx, order_id, ship ? RES_SHIPPED : RES_RELEASED, next, errbuf, errlen)) !=
      STATUS_OK)
    return st;
  Shop__Inventory__V1__StockLine sl[INVENTORY_MAX_LINES];
  Shop__Inventory__V1__StockLine *sp[INVENTORY_MAX_LINES];
  inventory_stock_lines_fill(sl, sp, l, n);
  if (ship) {
    Shop__Inventory__V1__InventoryShipped ev = SHOP__INVENTORY__V1__INVENTORY_SHIPPED__INIT;
    ev.order_id = (char *)order_id;
    ev.n_lines = n;
    ev.lines = sp;
    st = inventory_emit(tx, ctx, cause, order_id, next, &ev.base, errbuf, errlen);
  } else {
    Shop__Inventory__V1__InventoryReleased ev = SHOP__INVENTORY__V1__INVENTORY_RELEASED__INIT;
    ev.order_id = (char *)order_id;
    ev.n_lines = n;
    ev.lines = sp;
    st = inventory_emit(tx, ctx, cause, order_id, next, &ev.base, errbuf, errlen);
  }
  if (st != STATUS_OK) return st;
  for (size_t i = 0; i < n; i++) {
    stock_row s;
    if ((st = stock_lock(tx, l[i].product_id, &s, errbuf, errlen)) != STATUS_OK) return st;
    if (!s.known) {
      snprintf(errbuf, errlen, "reserved product %s has no stock row (bug)", l[i].product_id);
      return STATUS_INTERNAL;
    }
    int64_t q = l[i].quantity;
    st = ship ? stock_move(tx, ctx, cause, l[i].product_id, &s, 0, -q, q, 0,
                           SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_SHIPPED,
                           order_id, 0, errbuf, errlen)
              : stock_move(tx, ctx, cause, l[i].product_id, &s, q, -q, 0, 0,
                           SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RELEASED,
                           order_id, 0, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  *done = true;
  return STATUS_OK;
}

status_code inventory_release(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const char *order_id, bool *released, char *errbuf, size_t errlen) {
  bool done = false;
  status_code st = reservation_settle(tx, ctx, cause, order_id, false, &done, errbuf, errlen);
  if (released != NULL) *released = done;
  return st;
}

status_code inventory_ship(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                           const char *order_id, bool *shipped, char *errbuf, size_t errlen) {
  bool done = false;
  status_code st = reservation_settle(tx, ctx, cause, order_id, true, &done, errbuf, errlen);
  if (shipped != NULL) *shipped = done;
  return st;
}

/* Tries again every reservation waiting for product_id, oldest first. */
static status_code retry_waiting(db_conn *tx, const inventory_ctx *ctx,
                                 const events_envelope *cause, const char *product_id, char *errbuf,
                                 size_t errlen) {
  db_value v[2] = {DB_STR(product_id), DB_I64(RES_PENDING)};
  db_rows *r = NULL;
  status_code st = db_query(tx,
                            "SELECT r.order_id FROM reservations r JOIN reservation_lines l ON "
                            "l.order_id = r.order_id WHERE l.product_id = ? AND r.status = ? "
                            "ORDER BY r.created_ms, r.order_id",
                            v, 2, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  size_t count = db_rows_count(r);
  char(*ids)[ID_SIZE] = calloc(count > 0 ? count : 1, ID_SIZE);
  if (ids == NULL) {
    db_rows_free(r);
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  for (size_t i = 0; i < count && db_rows_next(r); i++)
    snprintf(ids[i], ID_SIZE, "%s", db_rows_str(r, 0, NULL));
  db_rows_free(r);
  for (size_t i = 0; i < count && st == STATUS_OK; i++) {
    inventory_outcome out;
    st = inventory_reserve(tx, ctx, cause, ids[i], NULL, 1, &out, errbuf, errlen);
  }
  free(ids);
  return st;
}

status_code inventory_product_created(db_conn *tx, const inventory_ctx *ctx,
                                      const events_envelope *cause,
                                      const Shop__Product__V1__ProductCreated *e, char *errbuf,
                                      size_t errlen) {
  int64_t initial = e->initial_stock > 0 ? e->initial_stock : 0;
  int64_t low = e->inventory_rule != NULL ? e->inventory_rule->low_stock_threshold : 0;
  int64_t max = e->inventory_rule != NULL ? e->inventory_rule->max_quantity_per_order : 0;
  int64_t rule_version = cause != NULL && cause->sequence > 0 ? cause->sequence : 1;
  db_value v[8] = {DB_STR(e->product_id), DB_STR(e->sku),     DB_I64(initial),
                   DB_I64(initial),       DB_I64(low),        DB_I64(max),
                   DB_I64(rule_version),  DB_I64(now_ms(ctx))};
  uint64_t affected = 0;
  status_code st = db_exec(tx,
                           "INSERT IGNORE INTO stock_levels (product_id, sku, available, "
                           "received, version, low_stock_threshold, max_quantity_per_order, "
                           "rule_version, updated_ms) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                           v, 8, &affected, NULL, errbuf, errlen);
  if (st != STATUS_OK || affected == 0) return st; /* seen before: nothing new */
  Shop__Inventory__V1__StockLevel level = SHOP__INVENTORY__V1__STOCK_LEVEL__INIT;
  level.available = initial;
  level.received = initial;
  level.version = 1;
  Shop__Inventory__V1__StockLevelChanged ev = SHOP__INVENTORY__V1__STOCK_LEVEL_CHANGED__INIT;
  ev.product_id = e->product_id;
  ev.level = &level;
  ev.cause = SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_INITIAL;
  ev.order_id = "";
  if ((st = inventory_emit(tx, ctx, cause, e->product_id, 1, &ev.base, errbuf, errlen)) !=
      STATUS_OK)
    return st;
  return retry_waiting(tx, ctx, cause, e->product_id, errbuf, errlen);
}

typedef struct restock_arg {
  const inventory_ctx *ctx;
} restock_arg;

/* Applies one restock, in order (called by projection_apply_delta, also
 * for a held one, whose stored envelope is ev). */
static status_code restock_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                              char *errbuf, size_t errlen) {
  const restock_arg *a = arg;
  Shop__Product__V1__StockAdjusted *e =
      shop__product__v1__stock_adjusted__unpack(NULL, ev->data.len, ev->data.data);
  if (e == NULL) {
    snprintf(errbuf, errlen, "undecodable StockAdjusted");
    return STATUS_INVALID_ARGUMENT;
  }
  stock_row s;
  status_code st = stock_lock(tx, e->product_id, &s, errbuf, errlen);
  if (st == STATUS_OK && !s.known) {
    snprintf(errbuf, errlen, "StockAdjusted for %s before its ProductCreated", e->product_id);
    st = STATUS_FAILED_PRECONDITION;
  }
  if (st == STATUS_OK && e->quantity <= 0) {
    snprintf(errbuf, errlen, "StockAdjusted for %s with quantity %lld", e->product_id,
             (long long)e->quantity);
    st = STATUS_INVALID_ARGUMENT;
  }
  if (st == STATUS_OK) {
    st = stock_move(tx, a->ctx, ev, e->product_id, &s, e->quantity, 0, 0, e->quantity,
                    SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESTOCKED, NULL,
                    e->restock_sequence, errbuf, errlen);
  }
  if (st == STATUS_OK) {
    db_value v[2] = {DB_I64(version), DB_STR(e->product_id)};
    st = db_exec(tx, "UPDATE stock_levels SET restock_seq = ? WHERE product_id = ?", v, 2, NULL,
                 NULL, errbuf, errlen);
  }
  shop__product__v1__stock_adjusted__free_unpacked(e, NULL);
  return st;
}

status_code inventory_restock(db_conn *tx, const inventory_ctx *ctx, const events_envelope *cause,
                              const Shop__Product__V1__StockAdjusted *e, char *errbuf,
                              size_t errlen) {
  if (e->restock_sequence < 1) {
    snprintf(errbuf, errlen, "StockAdjusted for %s without a restock sequence", e->product_id);
    return STATUS_INVALID_ARGUMENT;
  }
  restock_arg a = {.ctx = ctx};
  return projection_apply_delta(tx, "inventory.restock", e->product_id, e->restock_sequence, cause,
                                restock_cb, &a, NULL, errbuf, errlen);
}

status_code inventory_rule_changed(db_conn *tx, const char *product_id,
                                   const Shop__Product__V1__InventoryRule *rule, int64_t version,
                                   char *errbuf, size_t errlen) {
  db_value v[5] = {DB_I64(rule != NULL ? rule->low_stock_threshold : 0),
                   DB_I64(rule != NULL ? rule->max_quantity_per_order : 0), DB_I64(version),
                   DB_STR(product_id), DB_I64(version)};
  return db_exec(tx,
                 "UPDATE stock_levels SET low_stock_threshold = ?, max_quantity_per_order = ?, "
                 "rule_version = ? WHERE product_id = ? AND rule_version < ?",
                 v, 5, NULL, NULL, errbuf, errlen);
}

status_code inventory_product_archived(db_conn *tx, const char *product_id, char *errbuf,
                                       size_t errlen) {
  db_value v[1] = {DB_STR(product_id)};
  return db_exec(tx, "UPDATE stock_levels SET archived = 1 WHERE product_id = ?", v, 1, NULL, NULL,
                 errbuf, errlen);
}

/* ---- The worker --------------------------------------------------------------------- */

static const char *created_check(const ProtobufCMessage *m, const events_envelope *ev) {
  const Shop__Product__V1__ProductCreated *e = (const void *)m;
  if (strlen(e->product_id) >= ID_SIZE || e->product_id[0] == '\0')
    return "ProductCreated with a bad product id";
  return NULL;
}

/* Every event but a new reservation the batch decides writes the batch
 * out first and goes row by row (inventory_internal.h). */
#define FLUSHED(tx, arg, errbuf, errlen)                                                           \
  do {                                                                                             \
    status_code fst_ = inventory_batch_flush(tx, arg, errbuf, errlen);                             \
    if (fst_ != STATUS_OK) return fst_;                                                            \
  } while (0)

static status_code product_created_apply(db_conn *tx, const consumer_msg *m, void *arg,
                                         char *errbuf, size_t errlen) {
  FLUSHED(tx, arg, errbuf, errlen);
  return inventory_product_created(tx, arg, m->env, (const void *)m->msg, errbuf, errlen);
}

static status_code stock_adjusted_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                        size_t errlen) {
  FLUSHED(tx, arg, errbuf, errlen);
  return inventory_restock(tx, arg, m->env, (const void *)m->msg, errbuf, errlen);
}

static status_code rule_changed_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                      size_t errlen) {
  FLUSHED(tx, arg, errbuf, errlen);
  const Shop__Product__V1__InventoryRuleChanged *e = (const void *)m->msg;
  return inventory_rule_changed(tx, e->product_id, e->inventory_rule, m->env->sequence, errbuf,
                                errlen);
}

static status_code archived_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  FLUSHED(tx, arg, errbuf, errlen);
  const Shop__Product__V1__ProductArchived *e = (const void *)m->msg;
  return inventory_product_archived(tx, e->product_id, errbuf, errlen);
}

static status_code order_created_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                       size_t errlen) {
  const Shop__Order__V1__OrderCreated *e = (const void *)m->msg;
  inventory_line l[INVENTORY_MAX_LINES];
  size_t n = e->n_lines <= INVENTORY_MAX_LINES ? e->n_lines : 0;
  for (size_t i = 0; i < n; i++) {
    l[i].product_id = e->lines[i]->product_id;
    l[i].quantity = e->lines[i]->quantity;
  }
  inventory_outcome out;
  res_line taken[INVENTORY_MAX_LINES];
  size_t nt = 0;
  status_code st = STATUS_OK;
  if (lines_take(e->order_id, l, n, taken, &nt, errbuf, errlen) == STATUS_OK &&
      inventory_batch_reserve(tx, arg, m->env, e->order_id, taken, nt, &out, &st, errbuf, errlen))
    return st;
  FLUSHED(tx, arg, errbuf, errlen);
  return inventory_reserve(tx, arg, m->env, e->order_id, l, n, &out, errbuf, errlen);
}

static status_code order_cancelled_apply(db_conn *tx, const consumer_msg *m, void *arg,
                                         char *errbuf, size_t errlen) {
  FLUSHED(tx, arg, errbuf, errlen);
  const Shop__Order__V1__OrderCancelled *e = (const void *)m->msg;
  return inventory_release(tx, arg, m->env, e->order_id, NULL, errbuf, errlen);
}

static status_code order_shipped_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                       size_t errlen) {
  FLUSHED(tx, arg, errbuf, errlen);
  const Shop__Order__V1__OrderShipped *e = (const void *)m->msg;
  return inventory_ship(tx, arg, m->env, e->order_id, NULL, errbuf, errlen);
}

/* Product events (pass 0) before order events (pass 1) of a batch: an
 * order for a product created in the same batch finds it. Each topic in
 * its order. */
static const consumer_event_type inventory_types[] = {
    {&shop__product__v1__product_created__descriptor, created_check, product_created_apply, 0},
    {&shop__product__v1__stock_adjusted__descriptor, NULL, stock_adjusted_apply, 0},
    {&shop__product__v1__inventory_rule_changed__descriptor, NULL, rule_changed_apply, 0},
    {&shop__product__v1__product_archived__descriptor, NULL, archived_apply, 0},
    {&shop__order__v1__order_created__descriptor, NULL, order_created_apply, 1},
    {&shop__order__v1__order_cancelled__descriptor, NULL, order_cancelled_apply, 1},
    {&shop__order__v1__order_shipped__descriptor, NULL, order_shipped_apply, 1},
};

const consumer_spec inventory_consumer = {
    .group = TOPOLOGY_GROUP_INVENTORY_WORKER,
    .types = inventory_types,
    .n_types = sizeof inventory_types / sizeof inventory_types[0],
    .prepare = inventory_batch_prepare_cb,
    .before_commit = inventory_batch_before_commit_cb,
    .ended = inventory_batch_ended_cb};

typedef struct expire_arg {
  const inventory_ctx *ctx;
  const char *order_id;
  inventory_outcome out;
} expire_arg;

static status_code expire_one_cb(db_conn *c, void *arg, char *errbuf, size_t errlen) {
  expire_arg *a = arg;
  return inventory_reserve(c, a->ctx, NULL, a->order_id, NULL, 1, &a->out, errbuf, errlen);
}

status_code inventory_expire_waiting(db_conn *c, const inventory_ctx *ctx, int *decided,
                                     char *errbuf, size_t errlen) {
  if (decided != NULL) *decided = 0;
  db_value v[2] = {DB_I64(RES_PENDING), DB_I64(now_ms(ctx) - ctx->unknown_product_wait_ms)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            "SELECT order_id FROM reservations WHERE status = ? AND "
                            "waiting_since_ms <= ? ORDER BY waiting_since_ms LIMIT 100",
                            v, 2, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  size_t count = db_rows_count(r);
  char ids[100][ID_SIZE];
  for (size_t i = 0; i < count && i < 100 && db_rows_next(r); i++)
    snprintf(ids[i], ID_SIZE, "%s", db_rows_str(r, 0, NULL));
  db_rows_free(r);
  for (size_t i = 0; i < count && i < 100; i++) {
    expire_arg a = {.ctx = ctx, .order_id = ids[i]};
    /* A timer acts here: the reservation does not keep the order's
     * trace, so the decision starts a new one (log.h). */
    char tp[LOG_TRACEPARENT_SIZE];
    log_traceparent_child(NULL, tp);
    log_scope scope;
    log_scope_enter(&scope, NULL, tp, NULL);
    st = db_tx_run(c, expire_one_cb, &a, 4, errbuf, errlen);
    if (st == STATUS_OK && ctx->sink.committed_cb != NULL) ctx->sink.committed_cb(ctx->sink.self);
    if (st == STATUS_OK && (a.out == INVENTORY_REJECTED || a.out == INVENTORY_RESERVED)) {
      log_info(NULL, "reservation of order %s stopped waiting for an unknown product: %s", ids[i],
               a.out == INVENTORY_REJECTED ? "rejected" : "reserved");
      if (decided != NULL) (*decided)++;
    }
    log_scope_leave(&scope);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

/* ---- Reading ------------------------------------------------------------------------ */

status_code inventory_level_get(db_conn *c, const char *product_id, inventory_level *out,
                                char *errbuf, size_t errlen) {
  db_value v[1] = {DB_STR(product_id)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            "SELECT available, reserved, shipped, received, version FROM "
                            "stock_levels WHERE product_id = ?",
                            v, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  out->available = db_rows_i64(r, 0);
  out->reserved = db_rows_i64(r, 1);
  out->shipped = db_rows_i64(r, 2);
  out->received = db_rows_i64(r, 3);
  out->version = db_rows_i64(r, 4);
  db_rows_free(r);
  return STATUS_OK;
}

status_code inventory_reservation_get(db_conn *c, const char *order_id, int *status,
                                      int64_t *version, char *errbuf, size_t errlen) {
  db_value v[1] = {DB_STR(order_id)};
  db_rows *r = NULL;
  status_code st = db_query(c, "SELECT status, version FROM reservations WHERE order_id = ?", v, 1,
                            &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  if (status != NULL) *status = (int)db_rows_i64(r, 0);
  if (version != NULL) *version = db_rows_i64(r, 1);
  db_rows_free(r);
  return STATUS_OK;
}
