/* product-command: the handlers of shop.product.v1.ProductCommandService.
 * Every change commits with its outbox row and idempotency record in one
 * transaction (command_run). See product.h. */
#include <stdio.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "command/command.h"
#include "consistency/consistency.h"
#include "events/events.h"
#include "handler/handler.h"
#include "log/log.h"
#include "product/product.h"
#include "topology/topology.h"

typedef Shop__Product__V1__ProductCommandService_Service product_cmd_service;

/* ---- products rows --------------------------------------------------------------------- */

typedef struct product_row {
  char product_id[CHECK_ID_SIZE];
  char sku[PRODUCT_SKU_MAX + 1];
  char name[PRODUCT_NAME_MAX * 4 + 1];
  char description[PRODUCT_DESCRIPTION_MAX * 4 + 1];
  char category[PRODUCT_CATEGORY_MAX + 1];
  int64_t price_units;
  char currency[4];
  int64_t initial_stock;
  int64_t low_stock_threshold;
  int32_t max_quantity_per_order;
  bool archived;
  int64_t restock_seq;
  int64_t total_restocked;
  int64_t version;
} product_row;

static status_code product_lock(db_conn *tx, const char *id, product_row *p, char *errbuf,
                                size_t errlen) {
  db_value arg[1] = {DB_STR(id)};
  db_rows *r = NULL;
  status_code st = db_query(tx,
                            "SELECT product_id, sku, name, description, category, price_units, "
                            "currency, initial_stock, low_stock_threshold, max_quantity_per_order, "
                            "archived, restock_seq, total_restocked, version FROM products WHERE "
                            "product_id = ? FOR UPDATE",
                            arg, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  snprintf(p->product_id, sizeof p->product_id, "%s", db_rows_str(r, 0, NULL));
  snprintf(p->sku, sizeof p->sku, "%s", db_rows_str(r, 1, NULL));
  snprintf(p->name, sizeof p->name, "%s", db_rows_str(r, 2, NULL));
  snprintf(p->description, sizeof p->description, "%s", db_rows_str(r, 3, NULL));
  snprintf(p->category, sizeof p->category, "%s", db_rows_str(r, 4, NULL));
  p->price_units = db_rows_i64(r, 5);
  snprintf(p->currency, sizeof p->currency, "%s", db_rows_str(r, 6, NULL));
  p->initial_stock = db_rows_i64(r, 7);
  p->low_stock_threshold = db_rows_i64(r, 8);
  p->max_quantity_per_order = (int32_t)db_rows_i64(r, 9);
  p->archived = db_rows_i64(r, 10) != 0;
  p->restock_seq = db_rows_i64(r, 11);
  p->total_restocked = db_rows_i64(r, 12);
  p->version = db_rows_i64(r, 13);
  db_rows_free(r);
  return STATUS_OK;
}

/* Loads and locks the product a command changes; sets the outcome for an
 * unknown product, an archived one (unless allowed) or a stale expected
 * version, and returns OK with *go false then. */
static status_code product_for_change(db_conn *tx, const char *id, int64_t expected,
                                      bool archived_ok, product_row *p, command_outcome *out,
                                      bool *go, char *errbuf, size_t errlen) {
  *go = false;
  status_code st = product_lock(tx, id, p, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    command_fail(out, STATUS_NOT_FOUND, "product_id", "no such product");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  if (p->archived && !archived_ok) {
    command_fail(out, STATUS_FAILED_PRECONDITION, "product_id", "the product is archived");
    return STATUS_OK;
  }
  if (expected != 0 && expected != p->version) {
    command_fail(out, STATUS_ABORTED, "expected_version", "the product is at version %lld",
                 (long long)p->version);
    return STATUS_OK;
  }
  *go = true;
  return STATUS_OK;
}

/* Bumps the version (and update time) of a locked product. */
static status_code product_bump(db_conn *tx, product_row *p, char *errbuf, size_t errlen) {
  db_value v[2] = {DB_I64(clock_now_ms()), DB_STR(p->product_id)};
  status_code st = db_exec(tx,
                           "UPDATE products SET version = version + 1, updated_ms = ? WHERE "
                           "product_id = ?",
                           v, 2, NULL, NULL, errbuf, errlen);
  if (st == STATUS_OK) p->version++;
  return st;
}

static status_code emit(db_conn *tx, const product_cmd_ctx *ctx, const rpc_call *call,
                        const product_row *p, const ProtobufCMessage *ev, char *errbuf,
                        size_t errlen) {
  const outbox_cause cause = command_cause(call);
  return outbox_emit(&ctx->sink, tx, &cause, p->product_id, p->version, ev, errbuf, errlen);
}

static void details_fill(Shop__Product__V1__ProductDetails *d, const product_row *p) {
  shop__product__v1__product_details__init(d);
  d->name = (char *)p->name;
  d->description = (char *)p->description;
  d->category = (char *)p->category;
}

/* Every reply has the same shape: product id and consistency token. */
typedef struct reply_parts {
  char product_id[CHECK_ID_SIZE];
  Shop__Common__V1__ConsistencyToken token;
} reply_parts;

static void parts_set(reply_parts *rp, const product_row *p) {
  snprintf(rp->product_id, sizeof rp->product_id, "%s", p->product_id);
  consistency_token_set(&rp->token, rp->product_id, p->version);
}

/* Runs a command whose apply function fills a reply_parts-based reply. */
static bool run(rpc_call *call, const product_cmd_ctx *ctx, command_apply_cb apply, void *job,
                const ProtobufCMessage *reply) {
  command_tx cmd = {.call = call,
                    .db = ctx->db,
                    .relay = ctx->relay,
                    .apply = apply,
                    .arg = job,
                    .reply = reply,
                    .idempotent = true};
  return command_run(&cmd);
}

/* ---- CreateProduct ------------------------------------------------------------------------- */

typedef struct create_job {
  const product_cmd_ctx *ctx;
  rpc_call *call;
  const Shop__Product__V1__CreateProductRequest *in;
  product_row p;
  reply_parts rp;
  Shop__Product__V1__CreateProductResponse reply;
} create_job;

static status_code create_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                   size_t errlen) {
  create_job *j = arg;
  product_row *p = &j->p;
  events_uuid_v7(p->product_id);
  p->version = 1;
  int64_t now = clock_now_ms();
  db_value v[14] = {DB_STR(p->product_id),
                    DB_STR(p->sku),
                    DB_STR(p->name),
                    DB_STR(p->description),
                    DB_STR(p->category),
                    DB_I64(p->price_units),
                    DB_STR(p->currency),
                    DB_I64(p->initial_stock),
                    DB_I64(p->low_stock_threshold),
                    DB_I64(p->max_quantity_per_order),
                    DB_I64(now),
                    DB_I64(now),
                    DB_I64(0),
                    DB_I64(0)};
  status_code st = db_exec(tx,
                           "INSERT INTO products (product_id, sku, name, description, category, "
                           "price_units, currency, initial_stock, low_stock_threshold, "
                           "max_quantity_per_order, created_ms, updated_ms, restock_seq, "
                           "total_restocked, archived, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                           "?, ?, ?, ?, ?, ?, 0, 1)",
                           v, 14, NULL, NULL, errbuf, errlen);
  if (st == STATUS_ALREADY_EXISTS) {
    command_fail(out, STATUS_ALREADY_EXISTS, "sku", "a product with this SKU already exists");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  Shop__Product__V1__ProductDetails d;
  details_fill(&d, p);
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  price.units = p->price_units;
  price.currency = p->currency;
  Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  rule.low_stock_threshold = p->low_stock_threshold;
  rule.max_quantity_per_order = p->max_quantity_per_order;
  Shop__Product__V1__ProductCreated ev = SHOP__PRODUCT__V1__PRODUCT_CREATED__INIT;
  ev.product_id = p->product_id;
  ev.sku = p->sku;
  ev.details = &d;
  ev.price = &price;
  ev.initial_stock = p->initial_stock;
  ev.inventory_rule = &rule;
  if ((st = emit(tx, j->ctx, j->call, p, &ev.base, errbuf, errlen)) != STATUS_OK) return st;
  parts_set(&j->rp, p);
  shop__product__v1__create_product_response__init(&j->reply);
  j->reply.product_id = j->rp.product_id;
  j->reply.consistency = &j->rp.token;
  return STATUS_OK;
}

static void product_cmd_create_product(product_cmd_service *svc,
                                       const Shop__Product__V1__CreateProductRequest *in,
                                       Shop__Product__V1__CreateProductResponse_Closure closure,
                                       void *data) {
  rpc_call *call = data;
  const product_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_create_product(in, ctx->currency, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  create_job j = {.ctx = ctx, .call = call, .in = in};
  product_row *p = &j.p;
  snprintf(p->sku, sizeof p->sku, "%s", in->sku);
  snprintf(p->name, sizeof p->name, "%s", in->details->name);
  snprintf(p->description, sizeof p->description, "%s", in->details->description);
  snprintf(p->category, sizeof p->category, "%s", in->details->category);
  p->price_units = in->price->units;
  snprintf(p->currency, sizeof p->currency, "%s", in->price->currency);
  p->initial_stock = in->initial_stock;
  if (in->inventory_rule != NULL) {
    p->low_stock_threshold = in->inventory_rule->low_stock_threshold;
    p->max_quantity_per_order = in->inventory_rule->max_quantity_per_order;
  }
  if (run(call, ctx, create_apply_cb, &j, &j.reply.base)) {
    log_info(&(log_ctx){.request_id = rpc_call_request_id(call)}, "product %s created (sku %s)",
             j.p.product_id, j.p.sku);
    closure(&j.reply, data);
  }
}

/* ---- UpdateProduct -------------------------------------------------------------------------- */

typedef struct update_job {
  const product_cmd_ctx *ctx;
  rpc_call *call;
  const Shop__Product__V1__UpdateProductRequest *in;
  product_row p;
  reply_parts rp;
  Shop__Product__V1__UpdateProductResponse reply;
} update_job;

static status_code update_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                   size_t errlen) {
  update_job *j = arg;
  const Shop__Product__V1__UpdateProductRequest *in = j->in;
  product_row *p = &j->p;
  bool go;
  status_code st = product_for_change(tx, in->product_id, in->expected_version, false, p, out, &go,
                                      errbuf, errlen);
  if (st != STATUS_OK || !go) return st;
  bool changed = false;
  if (in->name_update_case == SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__NAME_UPDATE_NAME &&
      strcmp(p->name, in->name) != 0) {
    snprintf(p->name, sizeof p->name, "%s", in->name);
    changed = true;
  }
  if (in->description_update_case ==
          SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__DESCRIPTION_UPDATE_DESCRIPTION &&
      strcmp(p->description, in->description) != 0) {
    snprintf(p->description, sizeof p->description, "%s", in->description);
    changed = true;
  }
  if (in->category_update_case ==
          SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__CATEGORY_UPDATE_CATEGORY &&
      strcmp(p->category, in->category) != 0) {
    snprintf(p->category, sizeof p->category, "%s", in->category);
    changed = true;
  }
  if (changed) {
    db_value v[4] = {DB_STR(p->name), DB_STR(p->description), DB_STR(p->category),
                     DB_STR(p->product_id)};
    st = db_exec(tx,
                 "UPDATE products SET name = ?, description = ?, category = ? WHERE "
                 "product_id = ?",
                 v, 4, NULL, NULL, errbuf, errlen);
    if (st == STATUS_OK) st = product_bump(tx, p, errbuf, errlen);
    if (st != STATUS_OK) return st;
    Shop__Product__V1__ProductDetails d;
    details_fill(&d, p);
    Shop__Product__V1__ProductUpdated ev = SHOP__PRODUCT__V1__PRODUCT_UPDATED__INIT;
    ev.product_id = p->product_id;
    ev.details = &d;
    if ((st = emit(tx, j->ctx, j->call, p, &ev.base, errbuf, errlen)) != STATUS_OK) return st;
  }
  parts_set(&j->rp, p);
  shop__product__v1__update_product_response__init(&j->reply);
  j->reply.product_id = j->rp.product_id;
  j->reply.consistency = &j->rp.token;
  return STATUS_OK;
}

static void product_cmd_update_product(product_cmd_service *svc,
                                       const Shop__Product__V1__UpdateProductRequest *in,
                                       Shop__Product__V1__UpdateProductResponse_Closure closure,
                                       void *data) {
  rpc_call *call = data;
  const product_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_update_product(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  update_job j = {.ctx = ctx, .call = call, .in = in};
  if (run(call, ctx, update_apply_cb, &j, &j.reply.base)) closure(&j.reply, data);
}

/* ---- ArchiveProduct ------------------------------------------------------------------------- */

typedef struct archive_job {
  const product_cmd_ctx *ctx;
  rpc_call *call;
  const Shop__Product__V1__ArchiveProductRequest *in;
  product_row p;
  reply_parts rp;
  Shop__Product__V1__ArchiveProductResponse reply;
} archive_job;

static status_code archive_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                    size_t errlen) {
  archive_job *j = arg;
  product_row *p = &j->p;
  bool go;
  status_code st = product_for_change(tx, j->in->product_id, 0, true, p, out, &go, errbuf, errlen);
  if (st != STATUS_OK || !go) return st;
  if (!p->archived) {
    db_value v[1] = {DB_STR(p->product_id)};
    st = db_exec(tx, "UPDATE products SET archived = 1 WHERE product_id = ?", v, 1, NULL, NULL,
                 errbuf, errlen);
    if (st == STATUS_OK) st = product_bump(tx, p, errbuf, errlen);
    if (st != STATUS_OK) return st;
    Shop__Product__V1__ProductArchived ev = SHOP__PRODUCT__V1__PRODUCT_ARCHIVED__INIT;
    ev.product_id = p->product_id;
    if ((st = emit(tx, j->ctx, j->call, p, &ev.base, errbuf, errlen)) != STATUS_OK) return st;
  }
  parts_set(&j->rp, p);
  shop__product__v1__archive_product_response__init(&j->reply);
  j->reply.product_id = j->rp.product_id;
  j->reply.consistency = &j->rp.token;
  return STATUS_OK;
}

static void product_cmd_archive_product(product_cmd_service *svc,
                                        const Shop__Product__V1__ArchiveProductRequest *in,
                                        Shop__Product__V1__ArchiveProductResponse_Closure closure,
                                        void *data) {
  rpc_call *call = data;
  const product_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_archive_product(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  archive_job j = {.ctx = ctx, .call = call, .in = in};
  if (run(call, ctx, archive_apply_cb, &j, &j.reply.base)) closure(&j.reply, data);
}

/* ---- SetPrice ------------------------------------------------------------------------------- */

typedef struct price_job {
  const product_cmd_ctx *ctx;
  rpc_call *call;
  const Shop__Product__V1__SetPriceRequest *in;
  product_row p;
  reply_parts rp;
  Shop__Product__V1__SetPriceResponse reply;
} price_job;

static status_code price_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                  size_t errlen) {
  price_job *j = arg;
  product_row *p = &j->p;
  bool go;
  status_code st = product_for_change(tx, j->in->product_id, j->in->expected_version, false, p, out,
                                      &go, errbuf, errlen);
  if (st != STATUS_OK || !go) return st;
  const Shop__Common__V1__Money *np = j->in->price;
  if (np->units != p->price_units || strcmp(np->currency, p->currency) != 0) {
    Shop__Common__V1__Money prev = SHOP__COMMON__V1__MONEY__INIT;
    char prev_currency[4];
    snprintf(prev_currency, sizeof prev_currency, "%s", p->currency);
    prev.units = p->price_units;
    prev.currency = prev_currency;
    db_value v[3] = {DB_I64(np->units), DB_STR(np->currency), DB_STR(p->product_id)};
    st = db_exec(tx, "UPDATE products SET price_units = ?, currency = ? WHERE product_id = ?", v, 3,
                 NULL, NULL, errbuf, errlen);
    if (st == STATUS_OK) st = product_bump(tx, p, errbuf, errlen);
    if (st != STATUS_OK) return st;
    Shop__Product__V1__PriceChanged ev = SHOP__PRODUCT__V1__PRICE_CHANGED__INIT;
    ev.product_id = p->product_id;
    ev.price = (Shop__Common__V1__Money *)np;
    ev.previous_price = &prev;
    if ((st = emit(tx, j->ctx, j->call, p, &ev.base, errbuf, errlen)) != STATUS_OK) return st;
  }
  parts_set(&j->rp, p);
  shop__product__v1__set_price_response__init(&j->reply);
  j->reply.product_id = j->rp.product_id;
  j->reply.consistency = &j->rp.token;
  return STATUS_OK;
}

static void product_cmd_set_price(product_cmd_service *svc,
                                  const Shop__Product__V1__SetPriceRequest *in,
                                  Shop__Product__V1__SetPriceResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const product_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_set_price(in, ctx->currency, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  price_job j = {.ctx = ctx, .call = call, .in = in};
  if (run(call, ctx, price_apply_cb, &j, &j.reply.base)) closure(&j.reply, data);
}

/* ---- SetInventoryRule ------------------------------------------------------------------------ */

typedef struct rule_job {
  const product_cmd_ctx *ctx;
  rpc_call *call;
  const Shop__Product__V1__SetInventoryRuleRequest *in;
  product_row p;
  reply_parts rp;
  Shop__Product__V1__SetInventoryRuleResponse reply;
} rule_job;

static status_code rule_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                 size_t errlen) {
  rule_job *j = arg;
  product_row *p = &j->p;
  bool go;
  status_code st = product_for_change(tx, j->in->product_id, j->in->expected_version, false, p, out,
                                      &go, errbuf, errlen);
  if (st != STATUS_OK || !go) return st;
  const Shop__Product__V1__InventoryRule *r = j->in->inventory_rule;
  if (r->low_stock_threshold != p->low_stock_threshold ||
      r->max_quantity_per_order != p->max_quantity_per_order) {
    db_value v[3] = {DB_I64(r->low_stock_threshold), DB_I64(r->max_quantity_per_order),
                     DB_STR(p->product_id)};
    st = db_exec(tx,
                 "UPDATE products SET low_stock_threshold = ?, max_quantity_per_order = ? WHERE "
                 "product_id = ?",
                 v, 3, NULL, NULL, errbuf, errlen);
    if (st == STATUS_OK) st = product_bump(tx, p, errbuf, errlen);
    if (st != STATUS_OK) return st;
    Shop__Product__V1__InventoryRuleChanged ev = SHOP__PRODUCT__V1__INVENTORY_RULE_CHANGED__INIT;
    ev.product_id = p->product_id;
    ev.inventory_rule = (Shop__Product__V1__InventoryRule *)r;
    if ((st = emit(tx, j->ctx, j->call, p, &ev.base, errbuf, errlen)) != STATUS_OK) return st;
  }
  parts_set(&j->rp, p);
  shop__product__v1__set_inventory_rule_response__init(&j->reply);
  j->reply.product_id = j->rp.product_id;
  j->reply.consistency = &j->rp.token;
  return STATUS_OK;
}

static void product_cmd_set_inventory_rule(
    product_cmd_service *svc, const Shop__Product__V1__SetInventoryRuleRequest *in,
    Shop__Product__V1__SetInventoryRuleResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const product_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_set_inventory_rule(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  rule_job j = {.ctx = ctx, .call = call, .in = in};
  if (run(call, ctx, rule_apply_cb, &j, &j.reply.base)) closure(&j.reply, data);
}

/* ---- Restock -------------------------------------------------------------------------------- */

typedef struct restock_job {
  const product_cmd_ctx *ctx;
  rpc_call *call;
  const Shop__Product__V1__RestockRequest *in;
  product_row p;
  reply_parts rp;
  Shop__Product__V1__RestockResponse reply;
} restock_job;

static status_code restock_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                    size_t errlen) {
  restock_job *j = arg;
  product_row *p = &j->p;
  bool go;
  status_code st = product_for_change(tx, j->in->product_id, 0, false, p, out, &go, errbuf, errlen);
  if (st != STATUS_OK || !go) return st;
  if (p->initial_stock + p->total_restocked + j->in->quantity > PRODUCT_STOCK_MAX) {
    command_fail(out, STATUS_FAILED_PRECONDITION, "quantity",
                 "the product would hold more than 10^12 units");
    return STATUS_OK;
  }
  p->restock_seq++;
  p->total_restocked += j->in->quantity;
  db_value v[3] = {DB_I64(p->restock_seq), DB_I64(p->total_restocked), DB_STR(p->product_id)};
  st = db_exec(tx, "UPDATE products SET restock_seq = ?, total_restocked = ? WHERE product_id = ?",
               v, 3, NULL, NULL, errbuf, errlen);
  if (st == STATUS_OK) st = product_bump(tx, p, errbuf, errlen);
  if (st != STATUS_OK) return st;
  Shop__Product__V1__StockAdjusted ev = SHOP__PRODUCT__V1__STOCK_ADJUSTED__INIT;
  ev.product_id = p->product_id;
  ev.quantity = j->in->quantity;
  ev.restock_sequence = p->restock_seq;
  ev.total_restocked = p->total_restocked;
  ev.reference = j->in->reference;
  if ((st = emit(tx, j->ctx, j->call, p, &ev.base, errbuf, errlen)) != STATUS_OK) return st;
  parts_set(&j->rp, p);
  shop__product__v1__restock_response__init(&j->reply);
  j->reply.product_id = j->rp.product_id;
  j->reply.consistency = &j->rp.token;
  j->reply.restock_sequence = p->restock_seq;
  return STATUS_OK;
}

static void product_cmd_restock(product_cmd_service *svc,
                                const Shop__Product__V1__RestockRequest *in,
                                Shop__Product__V1__RestockResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const product_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  product_validate_restock(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  restock_job j = {.ctx = ctx, .call = call, .in = in};
  if (run(call, ctx, restock_apply_cb, &j, &j.reply.base)) closure(&j.reply, data);
}

/* ---- Registration -----------------------------------------------------------------------------
 */

static product_cmd_service product_cmd_svc =
    SHOP__PRODUCT__V1__PRODUCT_COMMAND_SERVICE__INIT(product_cmd_);

status_code product_cmd_register(rpc_server *s, product_cmd_ctx *ctx, char *errbuf, size_t errlen) {
  /* Every method: admin only, and a command. */
  rpc_service_opts o = {.default_policy = RPC_ADMIN, .ctx = ctx};
  return rpc_server_register(s, &product_cmd_svc.base, &o, errbuf, errlen);
}

void product_cmd_ctx_init(product_cmd_ctx *ctx, const shop_cfg *cfg, const char *program,
                          db_pool *db, outbox_relay *relay) {
  ctx->cfg = cfg;
  ctx->program = program;
  ctx->currency = cfg->catalog.currency;
  ctx->db = db;
  ctx->relay = relay;
  ctx->sink = outbox_sink_of(relay, program);
}
