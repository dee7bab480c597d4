/* AuditQueryService (audit.h): admin only, read-only, over audit_log. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "check/check.h"
#include "clock/clock.h"
#include "consistency/consistency.h"
#include "handler/handler.h"
#include "page/page.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "topology/topology.h"

typedef Shop__Audit__V1__AuditQueryService_Service audit_query_service;
typedef Shop__Audit__V1__AuditRecord audit_record;

#define REC_COLS                                                                                   \
  "row_id, event_id, topic, kpartition, koffset, type, source, actor, subject, sequence,"          \
  " event_time_ms, correlation_id, traceparent, ev_key, data, recorded_ms, prev_hash, hash"

/* One record with everything it points to, in one allocation's worth of
 * copies. */
typedef struct rec_out {
  audit_record rec;
  Shop__Events__V1__EventEnvelope env;
  Shop__Common__V1__Timestamp time;
  Shop__Common__V1__Timestamp recorded;
  char *strs[10];
  uint8_t *data;
  uint8_t hash[AUDIT_HASH_SIZE];
  uint8_t prev[AUDIT_HASH_SIZE];
} rec_out;

typedef struct rec_list {
  size_t n;
  rec_out *items;
  audit_record **ptrs;
  int64_t last_row_id;
} rec_list;

static void rec_list_free(rec_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    for (int k = 0; k < 10; k++) free(l->items[i].strs[k]);
    free(l->items[i].data);
  }
  free(l->items);
  free(l->ptrs);
  memset(l, 0, sizeof *l);
}

static char *dup_col(db_rows *r, unsigned col) {
  const char *s = db_rows_str(r, col, NULL);
  return strdup(s != NULL ? s : "");
}

static bool rec_list_fill(rec_list *l, db_rows *r, bool include_data) {
  size_t cap = db_rows_count(r);
  memset(l, 0, sizeof *l);
  l->items = calloc(cap > 0 ? cap : 1, sizeof *l->items);
  l->ptrs = calloc(cap > 0 ? cap : 1, sizeof *l->ptrs);
  if (l->items == NULL || l->ptrs == NULL) return false;
  while (db_rows_next(r)) {
    rec_out *o = &l->items[l->n];
    l->n++;
    shop__audit__v1__audit_record__init(&o->rec);
    shop__events__v1__event_envelope__init(&o->env);
    shop__common__v1__timestamp__init(&o->time);
    shop__common__v1__timestamp__init(&o->recorded);
    o->rec.row_id = db_rows_i64(r, 0);
    l->last_row_id = o->rec.row_id;
    static const unsigned cols[] = {1, 2, 5, 6, 7, 8, 11, 12, 13};
    for (int k = 0; k < 9; k++) {
      o->strs[k] = dup_col(r, cols[k]);
      if (o->strs[k] == NULL) return false;
    }
    o->env.id = o->strs[0];
    o->env.topic = o->strs[1];
    o->env.type = o->strs[2];
    o->env.source = o->strs[3];
    o->env.actor = o->strs[4];
    o->env.subject = o->strs[5];
    o->env.correlation_id = o->strs[6];
    o->env.traceparent = o->strs[7];
    o->env.key = o->strs[8];
    o->rec.partition = (int32_t)db_rows_i64(r, 3);
    o->rec.offset = db_rows_i64(r, 4);
    o->env.sequence = db_rows_i64(r, 9);
    clock_timestamp_set(&o->time, db_rows_i64(r, 10));
    o->env.time = &o->time;
    if (include_data) {
      size_t len = 0;
      const char *d = db_rows_str(r, 14, &len);
      o->data = malloc(len > 0 ? len : 1);
      if (o->data == NULL) return false;
      if (len > 0) memcpy(o->data, d, len);
      o->env.data.data = o->data;
      o->env.data.len = len;
    }
    clock_timestamp_set(&o->recorded, db_rows_i64(r, 15));
    o->rec.recorded_at = &o->recorded;
    size_t plen = 0, hlen = 0;
    const char *p = db_rows_str(r, 16, &plen);
    const char *h = db_rows_str(r, 17, &hlen);
    if (plen == AUDIT_HASH_SIZE) memcpy(o->prev, p, AUDIT_HASH_SIZE);
    if (hlen == AUDIT_HASH_SIZE) memcpy(o->hash, h, AUDIT_HASH_SIZE);
    o->rec.previous_hash.data = o->prev;
    o->rec.previous_hash.len = AUDIT_HASH_SIZE;
    o->rec.hash.data = o->hash;
    o->rec.hash.len = AUDIT_HASH_SIZE;
    o->rec.event = &o->env;
    l->ptrs[l->n - 1] = &o->rec;
  }
  return true;
}

/* Version of an aggregate in the log: the highest sequence of its events. */
static status_code log_version(db_conn *c, const char *aggregate_id, int64_t *version, char *errbuf,
                               size_t errlen) {
  db_value p[1] = {DB_STR(aggregate_id)};
  status_code st =
      db_query_i64(c, "SELECT COALESCE(MAX(sequence), 0) FROM audit_log WHERE subject = ?", p, 1,
                   version, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    *version = 0;
    return STATUS_OK;
  }
  return st;
}

static bool query_rows(rpc_call *call, audit_ctx *ctx, const char *sql, const db_value *p,
                       size_t np, db_rows **out) {
  char err[512];
  db_conn *c = NULL;
  if (!handler_db_get(call, ctx->db, &c)) return false;
  status_code st;
  st = db_query(c, sql, p, np, out, err, sizeof err);
  db_pool_put(ctx->db, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, "reading audit_log", err);
    return false;
  }
  return true;
}

void audit_validate_list_audit_events(const Shop__Audit__V1__ListAuditEventsRequest *in,
                                      check_violations *v) {
  if (strlen(in->aggregate_id) > 255) check_violation_add(v, "aggregate_id", "too long");
  if (strlen(in->type) > 255) check_violation_add(v, "type", "too long");
  if (strlen(in->topic) > 255) check_violation_add(v, "topic", "too long");
  if (in->from_time != NULL && (in->from_time->nanos < 0 || in->from_time->nanos > 999999999))
    check_violation_add(v, "from_time.nanos", "must be 0 to 999999999");
  if (in->until_time != NULL && (in->until_time->nanos < 0 || in->until_time->nanos > 999999999))
    check_violation_add(v, "until_time.nanos", "must be 0 to 999999999");
}

void audit_validate_get_order_timeline(const Shop__Audit__V1__GetOrderTimelineRequest *in,
                                       check_violations *v) {
  if (!check_id(in->order_id)) check_violation_add(v, "order_id", "must be an order id");
}

void audit_validate_verify_chain(const Shop__Audit__V1__VerifyChainRequest *in,
                                 check_violations *v) {
  if (in->from_row_id < 0) check_violation_add(v, "from_row_id", "must be >= 0");
  if (in->max_rows < 0) check_violation_add(v, "max_rows", "must be >= 0");
}

void audit_validate_rebuild_order_projection(
    const Shop__Audit__V1__RebuildOrderProjectionRequest *in, check_violations *v) {
  if (in->max_differences < 0 || in->max_differences > 10000)
    check_violation_add(v, "max_differences", "must be 0 to 10000");
}

/* t in milliseconds, rounded up. */
static int64_t timestamp_ceil_ms(const Shop__Common__V1__Timestamp *t) {
  return t->seconds * 1000 + (t->nanos + 999999) / 1000000;
}

static void audit_query_list_audit_events(audit_query_service *svc,
                                          const Shop__Audit__V1__ListAuditEventsRequest *in,
                                          Shop__Audit__V1__ListAuditEventsResponse_Closure closure,
                                          void *data) {
  rpc_call *call = data;
  audit_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  audit_validate_list_audit_events(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  int size = 0;
  if (!page_size(call, in->page, &size)) return;
  /* Event times are kept in milliseconds: an event at t ms is at or
   * after from_time when t >= from_time rounded up to the millisecond,
   * and strictly before until_time when t < until_time rounded up. */
  int64_t from = in->from_time != NULL ? timestamp_ceil_ms(in->from_time) : INT64_MIN;
  int64_t until = in->until_time != NULL ? timestamp_ceil_ms(in->until_time) : INT64_MAX;
  char filters[1200];
  snprintf(filters, sizeof filters, "audit|agg=%s|type=%s|topic=%s|from=%" PRId64 "|until=%" PRId64,
           in->aggregate_id, in->type, in->topic, from, until);
  page_pos pos;
  if (!page_token_decode(call, in->page != NULL ? in->page->page_token : NULL, filters, &pos))
    return;
  int64_t after = pos.n == 1 ? strtoll(pos.field[0], NULL, 10) : 0;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, log_version)) return;
  /* The filters' parameters first, then the page's. */
  db_value p[10] = {DB_STR(in->aggregate_id),
                    DB_STR(in->aggregate_id),
                    DB_STR(in->type),
                    DB_STR(in->type),
                    DB_STR(in->topic),
                    DB_STR(in->topic),
                    DB_I64(from),
                    DB_I64(until),
                    DB_I64(after),
                    DB_I64(size + 1)};
#define AUDIT_FILTERS                                                                              \
  "(? = '' OR subject = ?) AND (? = '' OR type = ?) AND (? = '' OR topic = ?)"                     \
  " AND event_time_ms >= ? AND event_time_ms < ?"
  int64_t total = 0;
  db_rows *r = NULL;
  if (!page_list(call, ctx->db, "SELECT COUNT(*) FROM audit_log WHERE " AUDIT_FILTERS, p, 8,
                 "SELECT " REC_COLS " FROM audit_log WHERE " AUDIT_FILTERS
                 " AND row_id > ? ORDER BY row_id LIMIT ?",
                 p, 10, "reading audit_log", &total, &r))
    return;
#undef AUDIT_FILTERS
  rec_list l;
  bool ok = rec_list_fill(&l, r, in->include_data);
  db_rows_free(r);
  if (!ok) {
    rec_list_free(&l);
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  Shop__Common__V1__PageResponse page = SHOP__COMMON__V1__PAGE_RESPONSE__INIT;
  char token[PAGE_TOKEN_MAX] = "";
  size_t n = l.n;
  if (n > (size_t)size) {
    n = (size_t)size;
    page_pos next = {.n = 1};
    snprintf(next.field[0], sizeof next.field[0], "%" PRId64, l.items[n - 1].rec.row_id);
    page_token_encode(token, filters, &next);
  }
  page.next_page_token = token;
  page.total_size = total;
  Shop__Audit__V1__ListAuditEventsResponse resp = SHOP__AUDIT__V1__LIST_AUDIT_EVENTS_RESPONSE__INIT;
  resp.n_records = n;
  resp.records = l.ptrs;
  resp.page = &page;
  closure(&resp, data);
  rec_list_free(&l);
}

static void audit_query_get_order_timeline(
    audit_query_service *svc, const Shop__Audit__V1__GetOrderTimelineRequest *in,
    Shop__Audit__V1__GetOrderTimelineResponse_Closure closure, void *data) {
  rpc_call *call = data;
  audit_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  audit_validate_get_order_timeline(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, log_version)) return;
  /* Everything about an order is keyed by its id (DESIGN.md); its own
   * events also name it as their subject. */
  db_value p[5] = {DB_STR(in->order_id), DB_STR(in->order_id), DB_STR(TOPOLOGY_TOPIC_ORDER),
                   DB_STR(TOPOLOGY_TOPIC_PAYMENT), DB_STR(TOPOLOGY_TOPIC_INVENTORY)};
  db_rows *r = NULL;
  if (!query_rows(call, ctx,
                  "SELECT " REC_COLS " FROM audit_log WHERE (subject = ? OR ev_key = ?)"
                  " AND topic IN (?, ?, ?) ORDER BY event_time_ms, row_id LIMIT 10000",
                  p, 5, &r))
    return;
  rec_list l;
  bool ok = rec_list_fill(&l, r, in->include_data);
  db_rows_free(r);
  if (!ok) {
    rec_list_free(&l);
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (l.n == 0) {
    rec_list_free(&l);
    rpc_call_set_status(call, STATUS_NOT_FOUND, "the audit log holds no event of order %s",
                        in->order_id);
    return;
  }
  Shop__Audit__V1__GetOrderTimelineResponse resp =
      SHOP__AUDIT__V1__GET_ORDER_TIMELINE_RESPONSE__INIT;
  resp.order_id = in->order_id;
  resp.n_records = l.n;
  resp.records = l.ptrs;
  closure(&resp, data);
  rec_list_free(&l);
}

static void audit_query_verify_chain(audit_query_service *svc,
                                     const Shop__Audit__V1__VerifyChainRequest *in,
                                     Shop__Audit__V1__VerifyChainResponse_Closure closure,
                                     void *data) {
  rpc_call *call = data;
  audit_ctx *ctx = rpc_call_service_ctx(call);
  check_violations bad = {0};
  audit_validate_verify_chain(in, &bad);
  if (handler_violations_apply(call, &bad) > 0) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, log_version)) return;
  char err[512];
  db_conn *c = NULL;
  if (!handler_db_get(call, ctx->db, &c)) return;
  status_code st;
  audit_verify_result v;
  st = audit_verify(c, in->from_row_id, in->max_rows, &v, err, sizeof err);
  db_pool_put(ctx->db, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, "verifying audit_log", err);
    return;
  }
  Shop__Audit__V1__VerifyChainResponse resp = SHOP__AUDIT__V1__VERIFY_CHAIN_RESPONSE__INIT;
  Shop__Audit__V1__ChainBreak br = SHOP__AUDIT__V1__CHAIN_BREAK__INIT;
  resp.ok = v.ok;
  resp.rows_checked = v.rows_checked;
  resp.last_row_id = v.last_row_id;
  resp.last_hash.data = v.last_hash;
  resp.last_hash.len = v.last_row_id > 0 ? AUDIT_HASH_SIZE : 0;
  if (!v.ok) {
    br.row_id = v.bad_row_id;
    br.event_id = v.bad_event_id;
    br.fault = (Shop__Audit__V1__ChainFault)v.fault;
    br.detail = v.detail;
    resp.first_break = &br;
  }
  closure(&resp, data);
}

static void audit_query_rebuild_order_projection(
    audit_query_service *svc, const Shop__Audit__V1__RebuildOrderProjectionRequest *in,
    Shop__Audit__V1__RebuildOrderProjectionResponse_Closure closure, void *data) {
  rpc_call *call = data;
  audit_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  audit_validate_rebuild_order_projection(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, log_version)) return;
  if (ctx->rebuild == NULL) {
    rpc_call_set_status(call, STATUS_UNIMPLEMENTED, "this audit-worker rebuilds no read model");
    return;
  }
  ctx->rebuild(ctx->rebuild_self, call, ctx, in->max_differences, closure, data);
}

static audit_query_service audit_query_svc =
    SHOP__AUDIT__V1__AUDIT_QUERY_SERVICE__INIT(audit_query_);

status_code audit_query_register(rpc_server *s, audit_ctx *ctx, char *errbuf, size_t errlen) {
  rpc_service_opts o = {.default_policy = RPC_ADMIN, .policies = NULL, .n_policies = 0, .ctx = ctx};
  return rpc_server_register(s, &audit_query_svc.base, &o, errbuf, errlen);
}
