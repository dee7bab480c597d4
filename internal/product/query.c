/* product-query: the read model products_view and product_stock, built
 * only from product events and StockLevelChanged, and the handlers of
 * shop.product.v1.ProductQueryService. See product.h.
 *
 * Each event sets one part of a product, so each part has its own
 * projection version (events/projection.h): "product.details"
 * (ProductCreated, ProductUpdated), "product.price" (ProductCreated,
 * PriceChanged) and "product.rule" (ProductCreated, InventoryRuleChanged).
 * Archiving is terminal, so it needs no version of its own. StockAdjusted
 * only moves the product's version: the stock it adds shows up when the
 * inventory worker reports the new level. products_view.version is the
 * highest product version applied, which consistency tokens are compared
 * with; created_ms = 0 marks a row reached by some event before its
 * ProductCreated (possible only after a dead letter): not shown.
 *
 * Stock lives in its own table, keyed by product id and versioned by the
 * stock version of StockLevelChanged, because the
 * inventory worker's events may arrive before the product's own; its own
 * version column is the stock version. Until the first report, available
 * = received = the initial stock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "consistency/consistency.h"
#include "events/projection.h"
#include "handler/handler.h"
#include "log/log.h"
#include "page/page.h"
#include "product/product.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "topology/topology.h"

typedef Shop__Product__V1__ProductQueryService_Service product_query_service;

/* ---- Projection -------------------------------------------------------------------------- */

static status_code view_bump(db_conn *tx, const char *id, int64_t version, int64_t t, char *errbuf,
                             size_t errlen) {
  db_value p[3] = {DB_STR(id), DB_I64(version), DB_I64(t)};
  return db_exec(tx,
                 "INSERT INTO products_view (product_id, version, updated_ms) VALUES (?, ?, ?) "
                 "ON DUPLICATE KEY UPDATE version = GREATEST(version, VALUES(version)), "
                 "updated_ms = GREATEST(updated_ms, VALUES(updated_ms))",
                 p, 3, NULL, NULL, errbuf, errlen);
}

typedef struct part_arg {
  const char *id;
  const Shop__Product__V1__ProductDetails *details;
  const Shop__Common__V1__Money *price;
  const Shop__Product__V1__InventoryRule *rule;
} part_arg;

static status_code details_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                              char *errbuf, size_t errlen) {
  const part_arg *a = arg;
  const Shop__Product__V1__ProductDetails *d = a->details;
  db_value v[4] = {DB_STR(d != NULL ? d->name : ""), DB_STR(d != NULL ? d->description : ""),
                   DB_STR(d != NULL ? d->category : ""), DB_STR(a->id)};
  return db_exec(tx,
                 "UPDATE products_view SET name = ?, description = ?, category = ? WHERE "
                 "product_id = ?",
                 v, 4, NULL, NULL, errbuf, errlen);
}

static status_code price_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                            char *errbuf, size_t errlen) {
  const part_arg *a = arg;
  db_value v[3] = {DB_I64(a->price != NULL ? a->price->units : 0),
                   DB_STR(a->price != NULL ? a->price->currency : ""), DB_STR(a->id)};
  return db_exec(tx, "UPDATE products_view SET price_units = ?, currency = ? WHERE product_id = ?",
                 v, 3, NULL, NULL, errbuf, errlen);
}

static status_code rule_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                           char *errbuf, size_t errlen) {
  const part_arg *a = arg;
  db_value v[3] = {DB_I64(a->rule != NULL ? a->rule->low_stock_threshold : 0),
                   DB_I64(a->rule != NULL ? a->rule->max_quantity_per_order : 0), DB_STR(a->id)};
  return db_exec(tx,
                 "UPDATE products_view SET low_stock_threshold = ?, max_quantity_per_order = ? "
                 "WHERE product_id = ?",
                 v, 3, NULL, NULL, errbuf, errlen);
}

static status_code part(db_conn *tx, const char *name, const events_envelope *ev,
                        projection_apply_cb cb, part_arg *a, char *errbuf, size_t errlen) {
  return projection_apply_state(tx, name, a->id, ev->sequence, ev, cb, a, NULL, errbuf, errlen);
}

static status_code apply_created(db_conn *tx, const events_envelope *ev,
                                 const Shop__Product__V1__ProductCreated *e, char *errbuf,
                                 size_t errlen) {
  int64_t t = events_time_ms(ev);
  status_code st = view_bump(tx, e->product_id, ev->sequence, t, errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value v[4] = {DB_STR(e->sku), DB_I64(e->initial_stock), DB_I64(t > 0 ? t : 1),
                   DB_STR(e->product_id)};
  st = db_exec(tx,
               "UPDATE products_view SET sku = ?, initial_stock = ?, created_ms = ? WHERE "
               "product_id = ?",
               v, 4, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  part_arg a = {
      .id = e->product_id, .details = e->details, .price = e->price, .rule = e->inventory_rule};
  if ((st = part(tx, "product.details", ev, details_cb, &a, errbuf, errlen)) != STATUS_OK)
    return st;
  if ((st = part(tx, "product.price", ev, price_cb, &a, errbuf, errlen)) != STATUS_OK) return st;
  return part(tx, "product.rule", ev, rule_cb, &a, errbuf, errlen);
}

static status_code created_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  return apply_created(tx, m->env, (const void *)m->msg, errbuf, errlen);
}

static status_code updated_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  const Shop__Product__V1__ProductUpdated *e = (const void *)m->msg;
  part_arg a = {.id = e->product_id, .details = e->details};
  status_code st = view_bump(tx, a.id, m->env->sequence, events_time_ms(m->env), errbuf, errlen);
  return st == STATUS_OK ? part(tx, "product.details", m->env, details_cb, &a, errbuf, errlen) : st;
}

static status_code price_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                               size_t errlen) {
  const Shop__Product__V1__PriceChanged *e = (const void *)m->msg;
  part_arg a = {.id = e->product_id, .price = e->price};
  status_code st = view_bump(tx, a.id, m->env->sequence, events_time_ms(m->env), errbuf, errlen);
  return st == STATUS_OK ? part(tx, "product.price", m->env, price_cb, &a, errbuf, errlen) : st;
}

static status_code rule_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                              size_t errlen) {
  const Shop__Product__V1__InventoryRuleChanged *e = (const void *)m->msg;
  part_arg a = {.id = e->product_id, .rule = e->inventory_rule};
  status_code st = view_bump(tx, a.id, m->env->sequence, events_time_ms(m->env), errbuf, errlen);
  return st == STATUS_OK ? part(tx, "product.rule", m->env, rule_cb, &a, errbuf, errlen) : st;
}

static status_code archived_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Product__V1__ProductArchived *e = (const void *)m->msg;
  status_code st =
      view_bump(tx, e->product_id, m->env->sequence, events_time_ms(m->env), errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value v[1] = {DB_STR(e->product_id)};
  return db_exec(tx, "UPDATE products_view SET archived = 1 WHERE product_id = ?", v, 1, NULL, NULL,
                 errbuf, errlen);
}

/* StockAdjusted: the inventory worker applies it; here only the product's
 * version moves. */
static status_code adjusted_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Product__V1__StockAdjusted *e = (const void *)m->msg;
  return view_bump(tx, e->product_id, m->env->sequence, events_time_ms(m->env), errbuf, errlen);
}

/* The level StockLevelChanged carries, if newer than the row's: one row
 * of a guarded upsert (product_stock.version assigned last: the guards read
 * the old one), so the levels of a consumer transaction go in one
 * multi-row statement with its commit, in their order. */
static status_code level_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                               size_t errlen) {
  const Shop__Inventory__V1__StockLevelChanged *e = (const void *)m->msg;
  const Shop__Inventory__V1__StockLevel *l = e->level;
  int64_t version = l->version > 0 ? l->version : m->env->sequence;
  db_value v[6] = {DB_STR(e->product_id), DB_I64(l->available), DB_I64(l->reserved),
                   DB_I64(l->shipped),    DB_I64(l->received),  DB_I64(version)};
  return db_upsert_later(tx,
                         "INSERT INTO product_stock (product_id, available, reserved, shipped,"
                         " received, version)",
                         "ON DUPLICATE KEY UPDATE"
                         " available = IF(VALUES(version) > version, VALUES(available), available),"
                         " reserved = IF(VALUES(version) > version, VALUES(reserved), reserved),"
                         " shipped = IF(VALUES(version) > version, VALUES(shipped), shipped),"
                         " received = IF(VALUES(version) > version, VALUES(received), received),"
                         " version = GREATEST(version, VALUES(version))",
                         v, 6, errbuf, errlen);
}

/* Every product event's first field is the product id. */
static const char *product_event_check(const ProtobufCMessage *m, const events_envelope *ev) {
  const char *id = check_message_string(m, "product_id");
  if (id == NULL || !check_id(id) || ev->sequence < 1)
    return "without a valid product id or sequence";
  return NULL;
}

static const char *stock_level_check(const ProtobufCMessage *m, const events_envelope *ev) {
  const Shop__Inventory__V1__StockLevelChanged *e = (const void *)m;
  int64_t version = e->level != NULL && e->level->version > 0 ? e->level->version : ev->sequence;
  if (e->level == NULL || !check_id(e->product_id) || version < 1)
    return "StockLevelChanged without a product id, a level or a version";
  return NULL;
}

static void projection_committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  product_query_ctx *ctx = arg;
  consistency_notifier_committed(&ctx->notifier, msgs, n, TOPOLOGY_TOPIC_PRODUCT);
}

/* Reservations and InventoryLow are not taken. */
static const consumer_event_type projection_types[] = {
    {&shop__product__v1__product_created__descriptor, product_event_check, created_apply, 0},
    {&shop__product__v1__product_updated__descriptor, product_event_check, updated_apply, 0},
    {&shop__product__v1__price_changed__descriptor, product_event_check, price_apply, 0},
    {&shop__product__v1__inventory_rule_changed__descriptor, product_event_check, rule_apply, 0},
    {&shop__product__v1__product_archived__descriptor, product_event_check, archived_apply, 0},
    {&shop__product__v1__stock_adjusted__descriptor, product_event_check, adjusted_apply, 0},
    {&shop__inventory__v1__stock_level_changed__descriptor, stock_level_check, level_apply, 0},
};

const consumer_spec product_projection_consumer = {
    .group = TOPOLOGY_GROUP_PRODUCT_QUERY,
    .types = projection_types,
    .n_types = sizeof projection_types / sizeof projection_types[0],
    .committed = projection_committed_cb};

/* ---- Reading ------------------------------------------------------------------------------- */

#define VIEW_COLS                                                                                  \
  "p.product_id, p.sku, p.name, p.description, p.category, p.price_units, p.currency, "            \
  "p.low_stock_threshold, p.max_quantity_per_order, p.archived, p.created_ms, p.updated_ms, "      \
  "p.version, COALESCE(s.available, p.initial_stock), COALESCE(s.reserved, 0), "                   \
  "COALESCE(s.shipped, 0), COALESCE(s.received, p.initial_stock), COALESCE(s.version, 0)"
#define VIEW_FROM "products_view p LEFT JOIN product_stock s ON s.product_id = p.product_id"

/* One product with the storage its message borrows. */
typedef struct product_out {
  Shop__Product__V1__Product product;
  Shop__Product__V1__ProductDetails details;
  Shop__Common__V1__Money price;
  Shop__Product__V1__InventoryRule rule;
  Shop__Inventory__V1__StockLevel stock;
  Shop__Common__V1__Timestamp created, updated;
  /* Strings are copied out of the rows. */
  char *name, *description;
  char product_id[CHECK_ID_SIZE];
  char sku[PRODUCT_SKU_MAX + 1];
  char category[PRODUCT_CATEGORY_MAX + 1];
  char currency[4];
} product_out;

static bool product_out_fill(product_out *o, const db_rows *r) {
  memset(o, 0, sizeof *o);
  o->name = strdup(db_rows_str(r, 2, NULL));
  o->description = strdup(db_rows_str(r, 3, NULL));
  if (o->name == NULL || o->description == NULL) return false;
  snprintf(o->product_id, sizeof o->product_id, "%s", db_rows_str(r, 0, NULL));
  snprintf(o->sku, sizeof o->sku, "%s", db_rows_str(r, 1, NULL));
  snprintf(o->category, sizeof o->category, "%s", db_rows_str(r, 4, NULL));
  snprintf(o->currency, sizeof o->currency, "%s", db_rows_str(r, 6, NULL));
  shop__product__v1__product__init(&o->product);
  shop__product__v1__product_details__init(&o->details);
  shop__common__v1__money__init(&o->price);
  shop__product__v1__inventory_rule__init(&o->rule);
  shop__inventory__v1__stock_level__init(&o->stock);
  o->details.name = o->name;
  o->details.description = o->description;
  o->details.category = o->category;
  o->price.units = db_rows_i64(r, 5);
  o->price.currency = o->currency;
  o->rule.low_stock_threshold = db_rows_i64(r, 7);
  o->rule.max_quantity_per_order = (int32_t)db_rows_i64(r, 8);
  clock_timestamp_set(&o->created, db_rows_i64(r, 10));
  clock_timestamp_set(&o->updated, db_rows_i64(r, 11));
  o->stock.available = db_rows_i64(r, 13);
  o->stock.reserved = db_rows_i64(r, 14);
  o->stock.shipped = db_rows_i64(r, 15);
  o->stock.received = db_rows_i64(r, 16);
  o->stock.version = db_rows_i64(r, 17);
  o->product.product_id = o->product_id;
  o->product.sku = o->sku;
  o->product.details = &o->details;
  o->product.price = &o->price;
  o->product.inventory_rule = &o->rule;
  o->product.stock = &o->stock;
  o->product.archived = db_rows_i64(r, 9) != 0;
  o->product.created_at = &o->created;
  o->product.updated_at = &o->updated;
  o->product.version = db_rows_i64(r, 12);
  return true;
}

static void product_out_free(product_out *o) {
  free(o->name);
  free(o->description);
}

static status_code view_version(db_conn *c, const char *id, int64_t *version, char *errbuf,
                                size_t errlen) {
  db_value p[1] = {DB_STR(id)};
  status_code st = db_query_i64(c,
                                "SELECT IF(created_ms > 0, version, 0) FROM products_view WHERE "
                                "product_id = ?",
                                p, 1, version, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    *version = 0;
    return STATUS_OK;
  }
  return st;
}

static void product_query_get_product(product_query_service *svc,
                                      const Shop__Product__V1__GetProductRequest *in,
                                      Shop__Product__V1__GetProductResponse_Closure closure,
                                      void *data) {
  rpc_call *call = data;
  product_query_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_get_product(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;
  char err[512];
  db_conn *c = NULL;
  if (!handler_db_get(call, ctx->db, &c)) return;
  status_code st;
  db_value p[1] = {DB_STR(in->product_id)};
  db_rows *r = NULL;
  st = db_query(
      c, "SELECT " VIEW_COLS " FROM " VIEW_FROM " WHERE p.product_id = ? AND p.created_ms > 0", p,
      1, &r, err, sizeof err);
  db_pool_put(ctx->db, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, "reading products_view", err);
    return;
  }
  product_out o;
  if (!db_rows_next(r)) {
    rpc_call_set_status(call, STATUS_NOT_FOUND, "no such product");
  } else if (!product_out_fill(&o, r)) {
    product_out_free(&o);
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    Shop__Product__V1__GetProductResponse resp = SHOP__PRODUCT__V1__GET_PRODUCT_RESPONSE__INIT;
    resp.product = &o.product;
    closure(&resp, data);
    product_out_free(&o);
  }
  db_rows_free(r);
}

/* The products of one GetProducts, by the position of their id among the
 * distinct ids asked. */
typedef struct products_found {
  const char *const *ids;
  size_t n;
  product_out *outs;
  bool *found;
  bool oom;
} products_found;

static bool products_found_row(db_rows *r, void *arg) {
  products_found *f = arg;
  const char *id = db_rows_str(r, 0, NULL);
  for (size_t i = 0; i < f->n; i++) {
    if (f->found[i] || strcmp(f->ids[i], id) != 0) continue;
    f->found[i] = true;
    if (!product_out_fill(&f->outs[i], r)) f->oom = true;
    break;
  }
  return !f->oom;
}

static void product_query_get_products(product_query_service *svc,
                                       const Shop__Product__V1__GetProductsRequest *in,
                                       Shop__Product__V1__GetProductsResponse_Closure closure,
                                       void *data) {
  rpc_call *call = data;
  product_query_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_get_products(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;
  /* The distinct ids, in the order asked. */
  const char *ids[PRODUCT_BATCH_MAX];
  size_t n = 0;
  for (size_t i = 0; i < in->n_product_ids; i++) {
    size_t k = 0;
    while (k < n && strcmp(ids[k], in->product_ids[i]) != 0) k++;
    if (k == n) ids[n++] = in->product_ids[i];
  }
  products_found f = {
      .ids = ids, .n = n, .outs = calloc(n, sizeof *f.outs), .found = calloc(n, sizeof *f.found)};
  Shop__Product__V1__Product **list = calloc(n, sizeof *list);
  if (f.outs == NULL || f.found == NULL || list == NULL) {
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    char err[512];
    db_conn *c = NULL;
    if (handler_db_get(call, ctx->db, &c)) {
      status_code st =
          db_query_keys(c,
                        "SELECT " VIEW_COLS " FROM " VIEW_FROM
                        " WHERE p.product_id IN (" DB_KEYS_PLACEHOLDERS ") AND p.created_ms > 0",
                        ids, n, products_found_row, &f, err, sizeof err);
      db_pool_put(ctx->db, c);
      if (st != STATUS_OK) {
        handler_db_failed(call, st, "reading products_view", err);
      } else if (f.oom) {
        rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
      } else {
        Shop__Product__V1__GetProductsResponse resp =
            SHOP__PRODUCT__V1__GET_PRODUCTS_RESPONSE__INIT;
        for (size_t i = 0; i < n; i++)
          if (f.found[i]) list[resp.n_products++] = &f.outs[i].product;
        resp.products = list;
        closure(&resp, data);
      }
    }
  }
  for (size_t i = 0; f.found != NULL && i < n; i++)
    if (f.found[i]) product_out_free(&f.outs[i]);
  free(f.outs);
  free(f.found);
  free(list);
}

static void product_query_list_products(product_query_service *svc,
                                        const Shop__Product__V1__ListProductsRequest *in,
                                        Shop__Product__V1__ListProductsResponse_Closure closure,
                                        void *data) {
  rpc_call *call = data;
  product_query_ctx *ctx = rpc_call_service_ctx(call);
  int size = 0;
  if (!page_size(call, in->page, &size)) return;
  check_violations v = {0};
  product_validate_list_products(in, ctx->currency, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  const Shop__Common__V1__Money *lo = in->min_price, *hi = in->max_price;
  int sort = (int)in->sort;
  if (in->include_archived && rpc_call_role(call) != AUTH_ROLE_ADMIN) {
    rpc_call_set_status(call, STATUS_PERMISSION_DENIED, "only an admin may list archived products");
    return;
  }
  if (sort == SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_UNSPECIFIED)
    sort = SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_NAME_ASC;
  bool by_price = sort >= SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_PRICE_ASC;
  bool desc = sort == SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_NAME_DESC ||
              sort == SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_PRICE_DESC;

  char filters[PRODUCT_TEXT_FILTER_MAX * 4 + 256];
  snprintf(filters, sizeof filters, "products|cat=%s|text=%s|min=%lld|max=%lld|sort=%d|arch=%d",
           in->category, in->text, lo != NULL ? (long long)lo->units : -1LL,
           hi != NULL ? (long long)hi->units : -1LL, sort, in->include_archived ? 1 : 0);
  page_pos pos;
  if (!page_token_decode(call, in->page != NULL ? in->page->page_token : NULL, filters, &pos))
    return;
  if (pos.n != 2) pos.n = 0;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;

  /* The statement is put together from fixed pieces; every value is a
   * parameter. */
  char where[700] = "p.created_ms > 0";
  db_value params[12];
  size_t np = 0;
  char pattern[PRODUCT_TEXT_FILTER_MAX * 8 + 3];
  if (!in->include_archived) strcat(where, " AND p.archived = 0");
  if (in->category[0] != '\0') {
    strcat(where, " AND p.category = ?");
    params[np++] = DB_STR(in->category);
  }
  if (in->text[0] != '\0') {
    db_like_pattern(in->text, pattern, sizeof pattern);
    strcat(where, " AND (p.name LIKE ? ESCAPE '!' OR p.description LIKE ? ESCAPE '!')");
    params[np++] = DB_STR(pattern);
    params[np++] = DB_STR(pattern);
  }
  if (lo != NULL) {
    strcat(where, " AND p.price_units >= ?");
    params[np++] = DB_I64(lo->units);
  }
  if (hi != NULL) {
    strcat(where, " AND p.price_units <= ?");
    params[np++] = DB_I64(hi->units);
  }
  size_t nfilter = np;
  char count_sql[1000], page_sql[2000];
  snprintf(count_sql, sizeof count_sql, "SELECT COUNT(*) FROM products_view p WHERE %s", where);
  const char *key = by_price ? "p.price_units" : "p.name";
  if (pos.n == 2) {
    char after[200];
    snprintf(after, sizeof after, " AND (%s %c ? OR (%s = ? AND p.product_id %c ?))", key,
             desc ? '<' : '>', key, desc ? '<' : '>');
    strcat(where, after);
    if (by_price) {
      int64_t v = strtoll(pos.field[0], NULL, 10);
      params[np++] = DB_I64(v);
      params[np++] = DB_I64(v);
    } else {
      params[np++] = DB_STR(pos.field[0]);
      params[np++] = DB_STR(pos.field[0]);
    }
    params[np++] = DB_STR(pos.field[1]);
  }
  params[np++] = DB_I64(size + 1);
  snprintf(page_sql, sizeof page_sql,
           "SELECT " VIEW_COLS " FROM " VIEW_FROM
           " WHERE %s ORDER BY %s %s, p.product_id %s "
           "LIMIT ?",
           where, key, desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");

  int64_t total = 0;
  db_rows *r = NULL;
  if (!page_list(call, ctx->db, count_sql, params, nfilter, page_sql, params, np,
                 "listing products_view", &total, &r))
    return;
  size_t rows = db_rows_count(r);
  size_t n = rows > (size_t)size ? (size_t)size : rows;
  product_out *outs = calloc(n > 0 ? n : 1, sizeof *outs);
  Shop__Product__V1__Product **list = calloc(n > 0 ? n : 1, sizeof *list);
  bool ok = outs != NULL && list != NULL;
  size_t filled = 0;
  for (; ok && filled < n && db_rows_next(r); filled++) {
    ok = product_out_fill(&outs[filled], r);
    list[filled] = &outs[filled].product;
  }
  db_rows_free(r);
  if (ok) {
    char next[PAGE_TOKEN_MAX] = "";
    if (rows > (size_t)size && n > 0) {
      page_pos npos = {.n = 2};
      const product_out *last = &outs[n - 1];
      if (by_price)
        snprintf(npos.field[0], PAGE_FIELD_MAX, "%lld", (long long)last->price.units);
      else
        snprintf(npos.field[0], PAGE_FIELD_MAX, "%s", last->name);
      snprintf(npos.field[1], PAGE_FIELD_MAX, "%s", last->product_id);
      page_token_encode(next, filters, &npos);
    }
    Shop__Common__V1__PageResponse page = SHOP__COMMON__V1__PAGE_RESPONSE__INIT;
    page.next_page_token = next;
    page.total_size = total;
    Shop__Product__V1__ListProductsResponse resp = SHOP__PRODUCT__V1__LIST_PRODUCTS_RESPONSE__INIT;
    resp.n_products = n;
    resp.products = list;
    resp.page = &page;
    closure(&resp, data);
  } else {
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (size_t i = 0; outs != NULL && i < n; i++) product_out_free(&outs[i]);
  free(outs);
  free(list);
}

/* ---- Registration ------------------------------------------------------------------------- */

static product_query_service product_query_svc =
    SHOP__PRODUCT__V1__PRODUCT_QUERY_SERVICE__INIT(product_query_);

status_code product_query_register(rpc_server *s, product_query_ctx *ctx, char *errbuf,
                                   size_t errlen) {
  /* Browsing needs no token; include_archived checks the role itself. */
  rpc_service_opts o = {.default_policy = RPC_PUBLIC, .ctx = ctx};
  return rpc_server_register(s, &product_query_svc.base, &o, errbuf, errlen);
}

void product_query_ctx_init(product_query_ctx *ctx, const shop_cfg *cfg, db_pool *db) {
  ctx->currency = cfg->catalog.currency;
  ctx->db = db;
  consistency_notifier_init(&ctx->notifier);
}

void product_query_ctx_destroy(product_query_ctx *ctx) {
  consistency_notifier_destroy(&ctx->notifier);
}
