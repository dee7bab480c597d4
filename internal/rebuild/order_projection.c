/* Rebuild of the order read model from the audit log alone (rebuild.h,
 * RebuildOrderProjection): the log's rows of the topics order-query reads
 * are replayed (audit_replay), in chain order, through order-query's own
 * projection (order_projection_consumer) into the shop_scratch database; then the
 * rebuilt and the live read model are both read through OrderQueryService
 * (the rebuilt one served in-process on inproc:// by order-query's own
 * handlers, the live one at endpoints.order_query), ListOrdersByStatus for
 * every status, and compared order by order, field by field. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rebuild/rebuild.h"

#include "audit/audit.h"
#include "order/order.h"
#include "page/page.h"
#include "pbjson/pbjson.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"

/* ---- Replay ---------------------------------------------------------------------------------- */

static status_code scratch_reset(db_conn *s, char *errbuf, size_t errlen) {
  db_rows *r = NULL;
  status_code st = db_query(s,
                            "SELECT table_name FROM information_schema.tables"
                            " WHERE table_schema = DATABASE()",
                            NULL, 0, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  char sql[400];
  while (st == STATUS_OK && db_rows_next(r)) {
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS `%s`", db_rows_str(r, 0, NULL));
    st = db_exec(s, sql, NULL, 0, NULL, NULL, errbuf, errlen);
  }
  db_rows_free(r);
  if (st != STATUS_OK) return st;
  st = events_migrate(s, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  return db_migrate(s, "order_read", order_read_migrations, order_read_migrations_count, NULL,
                    errbuf, errlen);
}

static status_code apply_cb(void *self, const consumer_msg *m, db_conn *tx, char *errbuf,
                            size_t errlen) {
  return consumer_spec_apply(tx, &order_projection_consumer, m, 1, self, errbuf, errlen);
}

static status_code replay(db_conn *a, db_conn *s, order_query_ctx *qctx, int64_t *applied,
                          char *errbuf, size_t errlen) {
  const char *topics[AUDIT_REPLAY_TOPICS_MAX];
  size_t nt = consumer_spec_topics(&order_projection_consumer, topics, AUDIT_REPLAY_TOPICS_MAX);
  return audit_replay(a, topics, nt, s, apply_cb, qctx, applied, errbuf, errlen);
}

/* ---- Reading both sides ---------------------------------------------------------------------- */

typedef Shop__Order__V1__Order order_msg;

typedef struct side {
  size_t n, cap;
  order_msg **o;
  ProtobufCMessage **resp; /* the responses that own them */
  size_t nresp, capresp;
} side;

static void side_free(side *sd) {
  for (size_t i = 0; i < sd->nresp; i++) protobuf_c_message_free_unpacked(sd->resp[i], NULL);
  free(sd->resp);
  free(sd->o);
  memset(sd, 0, sizeof *sd);
}

static int order_cmp(const void *a, const void *b) {
  return strcmp((*(order_msg *const *)a)->order_id, (*(order_msg *const *)b)->order_id);
}

static status_code read_side(rpc_client *c, const char *token, side *sd, char *errbuf,
                             size_t errlen) {
  for (int s = SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_PENDING;
       s <= SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED; s++) {
    char next[PAGE_TOKEN_MAX] = "";
    for (;;) {
      Shop__Order__V1__ListOrdersByStatusRequest req =
          SHOP__ORDER__V1__LIST_ORDERS_BY_STATUS_REQUEST__INIT;
      Shop__Common__V1__PageRequest pg = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
      pg.page_size = PAGE_MAX;
      pg.page_token = next;
      req.status = (Shop__Order__V1__OrderStatus)s;
      req.page = &pg;
      ProtobufCMessage *out = NULL;
      rpc_status rs;
      rpc_call_opts co = {.timeout_ms = 30000, .token = token};
      status_code st = rpc_client_call_sync(c, &shop__order__v1__order_query_service__descriptor,
                                            "ListOrdersByStatus", &req.base, &out, &co, &rs);
      if (st != STATUS_OK) {
        snprintf(errbuf, errlen, "ListOrdersByStatus: %s: %.200s", status_name(rs.code),
                 rs.message);
        rpc_status_clear(&rs);
        return st;
      }
      rpc_status_clear(&rs);
      Shop__Order__V1__ListOrdersByStatusResponse *r = (void *)out;
      if (sd->nresp == sd->capresp) {
        sd->capresp = sd->capresp ? 2 * sd->capresp : 16;
        void *np = realloc(sd->resp, sd->capresp * sizeof *sd->resp);
        if (np == NULL) {
          protobuf_c_message_free_unpacked(out, NULL);
          return STATUS_RESOURCE_EXHAUSTED;
        }
        sd->resp = np;
      }
      sd->resp[sd->nresp++] = out;
      for (size_t i = 0; i < r->n_orders; i++) {
        if (sd->n == sd->cap) {
          sd->cap = sd->cap ? 2 * sd->cap : 256;
          void *np = realloc(sd->o, sd->cap * sizeof *sd->o);
          if (np == NULL) return STATUS_RESOURCE_EXHAUSTED;
          sd->o = np;
        }
        sd->o[sd->n++] = r->orders[i];
      }
      if (r->page == NULL || r->page->next_page_token == NULL ||
          r->page->next_page_token[0] == '\0')
        break;
      snprintf(next, sizeof next, "%s", r->page->next_page_token);
    }
  }
  qsort(sd->o, sd->n, sizeof *sd->o, order_cmp);
  return STATUS_OK;
}

/* ---- Comparing ------------------------------------------------------------------------------- */

typedef struct diffs {
  int64_t count;
  size_t max, n;
  Shop__Audit__V1__OrderDifference *d;
  Shop__Audit__V1__OrderDifference **p;
} diffs;

static void diff_add(diffs *ds, const char *order_id, const char *field, const char *rebuilt,
                     const char *live) {
  ds->count++;
  if (ds->n >= ds->max) return;
  Shop__Audit__V1__OrderDifference *d = &ds->d[ds->n];
  shop__audit__v1__order_difference__init(d);
  d->order_id = strdup(order_id);
  d->field = strdup(field);
  d->rebuilt = strdup(rebuilt);
  d->live = strdup(live);
  ds->p[ds->n] = d;
  ds->n++;
}

static void diffs_free(diffs *ds) {
  for (size_t i = 0; i < ds->n; i++) {
    free(ds->d[i].order_id);
    free(ds->d[i].field);
    free(ds->d[i].rebuilt);
    free(ds->d[i].live);
  }
  free(ds->d);
  free(ds->p);
}

/* A top-level field's JSON value as text, "" when it is absent (proto3's
 * default). */
static void field_text(const json_t *v, char *out, size_t len) {
  char *t = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  snprintf(out, len, "%s", t != NULL ? t : "");
  free(t);
}

/* Compares two JSON objects of message type d field by field, down into
 * singular message fields, naming each differing field by its proto path
 * (prefix + name, "payment.captured"). */
static void compare_fields(diffs *ds, const char *order_id, const ProtobufCMessageDescriptor *d,
                           const json_t *ja, const json_t *jb, const char *prefix) {
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    char key[128], path[256];
    pbjson_camel_name(f->name, key, sizeof key);
    snprintf(path, sizeof path, "%s%s", prefix, f->name);
    const json_t *a = json_object_get(ja, key), *b = json_object_get(jb, key);
    if (a == NULL && b == NULL) continue;
    if (a != NULL && b != NULL && json_equal(a, b)) continue;
    if (a != NULL && b != NULL && json_is_object(a) && json_is_object(b) &&
        f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED) {
      char sub[260];
      snprintf(sub, sizeof sub, "%s.", path);
      compare_fields(ds, order_id, f->descriptor, a, b, sub);
      continue;
    }
    char ta[300], tb[300];
    field_text(a, ta, sizeof ta);
    field_text(b, tb, sizeof tb);
    diff_add(ds, order_id, path, ta, tb);
  }
}

/* The two orders compared in their proto3 JSON form (the form shopctl and
 * the gateway show). */
static void compare_order(diffs *ds, const order_msg *rb, const order_msg *lv) {
  json_t *ja = NULL, *jb = NULL;
  char err[128];
  if (pbjson_from_message(&ja, &rb->base, err, sizeof err) != STATUS_OK ||
      pbjson_from_message(&jb, &lv->base, err, sizeof err) != STATUS_OK)
    diff_add(ds, rb->order_id, "order", "(out of memory)", "");
  else if (!json_equal(ja, jb))
    compare_fields(ds, rb->order_id, rb->base.descriptor, ja, jb, "");
  json_decref(ja);
  json_decref(jb);
}

/* An order only one side holds: the other side's value is "". */
static void order_missing(diffs *ds, const order_msg *o, bool rebuilt) {
  json_t *j = NULL;
  char err[128], t[300] = "";
  if (pbjson_from_message(&j, &o->base, err, sizeof err) == STATUS_OK) field_text(j, t, sizeof t);
  json_decref(j);
  diff_add(ds, o->order_id, "order", rebuilt ? t : "", rebuilt ? "" : t);
}

/* ---- The RPC -----------------------------------------------------------------------------------
 */

static int rebuild_seq;

void rebuild_order_projection_cb(void *self, rpc_call *call, audit_ctx *ctx, int max_differences,
                                 Shop__Audit__V1__RebuildOrderProjectionResponse_Closure closure,
                                 void *data) {
  const rebuild_order_opts *o = self;
  char err[512] = "";
  status_code st = STATUS_OK;
  db_conn *a = NULL, *s = NULL;
  db_pool *sp = NULL;
  rpc_server *srv = NULL;
  rpc_client *live = NULL, *built = NULL;
  order_query_ctx qctx;
  bool qinit = false;
  side rs = {0}, ls = {0};
  diffs ds = {0};
  int64_t applied = 0;
  const shop_cfg *cfg = o->cfg;
  char pw[256];
  if (!db_password_from_dir(cfg->mysql.secrets_dir, "shop_scratch", pw, sizeof pw, err,
                            sizeof err)) {
    rpc_call_set_status(call, STATUS_FAILED_PRECONDITION, "shop_scratch: %s", err);
    return;
  }
  db_params p = *o->dbp;
  p.user = "shop_scratch";
  p.password = pw;
  p.database = "shop_scratch";
  if ((st = db_connect(&s, &p, err, sizeof err)) != STATUS_OK) goto out;
  /* One rebuild at a time: the scratch database is shared. */
  bool got = false;
  if ((st = db_lock_try(s, "shop.audit.rebuild", 0, &got, err, sizeof err)) != STATUS_OK) goto out;
  if (!got) {
    st = STATUS_ABORTED;
    snprintf(err, sizeof err, "another rebuild is running");
    goto out;
  }
  if ((st = scratch_reset(s, err, sizeof err)) != STATUS_OK) goto out;
  if ((st = db_pool_create(&sp, &p, 2, err, sizeof err)) != STATUS_OK) goto out;
  order_query_ctx_init(&qctx, sp);
  qinit = true;
  if ((st = db_pool_get(ctx->db, &a, err, sizeof err)) != STATUS_OK) goto out;
  st = replay(a, s, &qctx, &applied, err, sizeof err);
  db_pool_put(ctx->db, a);
  if (st != STATUS_OK) goto out;

  /* The rebuilt model, served by order-query's own handlers in-process. */
  rpc_server_opts so;
  rpc_server_opts_from_cfg(&so, cfg, "audit-rebuild");
  so.auth = o->auth;
  so.workers = 2;
  char url[96];
  snprintf(url, sizeof url, "inproc://shop-audit-rebuild-%d",
           __atomic_add_fetch(&rebuild_seq, 1, __ATOMIC_RELAXED));
  if ((st = rpc_server_create(&srv, &so, err, sizeof err)) != STATUS_OK) goto out;
  if ((st = order_query_register(srv, &qctx, err, sizeof err)) != STATUS_OK) goto out;
  if ((st = rpc_server_listen(srv, url, err, sizeof err)) != STATUS_OK) goto out;
  if ((st = rpc_server_start(srv, err, sizeof err)) != STATUS_OK) goto out;
  rpc_client_opts co;
  rpc_client_opts_from_cfg(&co, cfg, url, "audit-worker");
  if ((st = rpc_client_create(&built, &co, err, sizeof err)) != STATUS_OK) goto out;
  rpc_client_opts_from_cfg(&co, cfg, cfg->endpoints.order_query, "audit-worker");
  if ((st = rpc_client_create(&live, &co, err, sizeof err)) != STATUS_OK) goto out;
  char token[AUTH_TOKEN_MAX];
  if ((st = auth_token_sign(o->auth, "audit-worker", AUTH_ROLE_ADMIN, 0, token, sizeof token, err,
                            sizeof err)) != STATUS_OK)
    goto out;
  if ((st = read_side(built, token, &rs, err, sizeof err)) != STATUS_OK) goto out;
  if ((st = read_side(live, token, &ls, err, sizeof err)) != STATUS_OK) goto out;

  ds.max = max_differences > 0 ? (size_t)max_differences : 100;
  ds.d = calloc(ds.max, sizeof *ds.d);
  ds.p = calloc(ds.max, sizeof *ds.p);
  if (ds.d == NULL || ds.p == NULL) {
    st = STATUS_RESOURCE_EXHAUSTED;
    goto out;
  }
  size_t i = 0, j = 0;
  while (i < rs.n || j < ls.n) {
    int c = i == rs.n ? 1 : j == ls.n ? -1 : strcmp(rs.o[i]->order_id, ls.o[j]->order_id);
    if (c < 0) {
      order_missing(&ds, rs.o[i], true);
      i++;
    } else if (c > 0) {
      order_missing(&ds, ls.o[j], false);
      j++;
    } else {
      compare_order(&ds, rs.o[i], ls.o[j]);
      i++;
      j++;
    }
  }
  Shop__Audit__V1__RebuildOrderProjectionResponse resp =
      SHOP__AUDIT__V1__REBUILD_ORDER_PROJECTION_RESPONSE__INIT;
  resp.match = ds.count == 0;
  resp.events_applied = applied;
  resp.orders_rebuilt = (int64_t)rs.n;
  resp.orders_compared = (int64_t)ls.n;
  resp.difference_count = ds.count;
  resp.n_differences = ds.n;
  resp.differences = ds.p;
  closure(&resp, data);
out:
  if (st != STATUS_OK) {
    rpc_call_set_status(call, st == STATUS_ABORTED ? STATUS_ABORTED : STATUS_UNAVAILABLE,
                        "rebuild: %s", err);
  }
  diffs_free(&ds);
  side_free(&rs);
  side_free(&ls);
  rpc_client_destroy(built);
  rpc_client_destroy(live);
  rpc_server_destroy(srv);
  if (qinit) order_query_ctx_destroy(&qctx);
  db_pool_destroy(sp);
  db_close(s);
}
