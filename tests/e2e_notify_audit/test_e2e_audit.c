/* audit-worker end to end: a full order flow through the real programs,
 * then the audit log as AuditQueryService and the shop_audit database show
 * it: every event of the order once, Kafka order kept within each
 * partition, the chain verifies, and only admins may ask.
 *
 * Tracing end to end (suite "trace", same programs): the trace id of a
 * CreateOrder call is on every event and every log line the order causes,
 * across the programs and Kafka (internal/log/log.h, "The current
 * context"). */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events/events.h"
#include "log/log.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "support/stack.h"
#include "support/wait.h"
#include "topology/topology.h"

#define OCMD_SVC (&shop__order__v1__order_command_service__descriptor)
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define AUDIT_SVC (&shop__audit__v1__audit_query_service__descriptor)

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  stack_up((const char *const[]){STACK_ORDER_PROGRAMS, NULL});
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

static const char *audit_url(void) { return stack_cfg()->endpoints.audit_query; }

static void audit_up(void) {
  stack_require();
  stack_start("audit-worker", audit_url(), NULL);
}

TestSuite(audit, .init = audit_up, .fini = stack_release, .timeout = 300);

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

static void place(const char *token, const char *product_id, char order_id[37]) {
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, product_id, 2);
  Shop__Order__V1__CreateOrderResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call("order-command", OCMD_SVC, "CreateOrder", &o.req.base,
                          (ProtobufCMessage **)&r, token, stack_key(), &st),
               STATUS_OK, "CreateOrder: %s", st.message);
  snprintf(order_id, 37, "%s", r->order_id);
  free_msg(r);
}

/* Tokens for a new admin and a new customer, and a product the admin
 * made. */
static void actors(char adm[AUTH_TOKEN_MAX], char cust[AUTH_TOKEN_MAX], char pid[37]) {
  char adm_id[EVENTS_ID_SIZE], cust_id[EVENTS_ID_SIZE];
  events_uuid_v7(adm_id);
  events_uuid_v7(cust_id);
  stack_token(adm, adm_id, AUTH_ROLE_ADMIN);
  stack_token(cust, cust_id, AUTH_ROLE_CUSTOMER);
  stack_product(adm, 100, 1250, 10, pid);
}

static const char *const flow[] = {
    "shop.order.v1.OrderCreated", "shop.inventory.v1.InventoryReserved",
    "shop.payment.v1.PaymentAuthorized", "shop.order.v1.OrderConfirmed",
    "shop.payment.v1.PaymentCaptured"};
#define N_FLOW (sizeof flow / sizeof flow[0])

static size_t count_type(const Shop__Audit__V1__GetOrderTimelineResponse *r, const char *type) {
  size_t n = 0;
  for (size_t i = 0; i < r->n_records; i++)
    if (strcmp(r->records[i]->event->type, type) == 0) n++;
  return n;
}

static bool flow_complete(const Shop__Audit__V1__GetOrderTimelineResponse *r) {
  if (r == NULL) return false;
  for (size_t i = 0; i < N_FLOW; i++)
    if (count_type(r, flow[i]) == 0) return false;
  return true;
}

Test(audit, an_order_flow_is_logged_once_in_kafka_order_and_the_chain_verifies) {
  char adm[AUTH_TOKEN_MAX], cust[AUTH_TOKEN_MAX], pid[37], oid[37];
  actors(adm, cust, pid);
  place(cust, pid, oid);

  /* The timeline fills as the saga runs and the worker catches up. */
  Shop__Audit__V1__GetOrderTimelineRequest tq = SHOP__AUDIT__V1__GET_ORDER_TIMELINE_REQUEST__INIT;
  tq.order_id = oid;
  Shop__Audit__V1__GetOrderTimelineResponse *tl = NULL;
  rpc_status st;
  WAIT_UNTIL((free_msg(tl), tl = NULL,
              stack_call_at(audit_url(), AUDIT_SVC, "GetOrderTimeline", &tq.base,
                            (ProtobufCMessage **)&tl, adm, NULL, &st),
              flow_complete(tl)),
             180000, "the whole flow in the timeline of %s (%zu records, last call: %s)", oid,
             tl != NULL ? tl->n_records : 0, st.message);
  /* A late duplicate would be in the log once the audit-worker has read
   * everything there is: look again then. */
  WAIT_UNTIL(stack_group_quiet(TOPOLOGY_GROUP_AUDIT_WORKER), 60000,
             "the audit-worker's group caught up");
  free_msg(tl);
  tl = NULL;
  cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "GetOrderTimeline", &tq.base,
                             (ProtobufCMessage **)&tl, adm, NULL, &st),
               STATUS_OK, "GetOrderTimeline: %s", st.message);
  for (size_t i = 0; i < N_FLOW; i++)
    cr_assert_eq(count_type(tl, flow[i]), 1, "%s is logged %zu times", flow[i],
                 count_type(tl, flow[i]));
  for (size_t i = 0; i < tl->n_records; i++) {
    cr_assert_str_neq(tl->records[i]->event->source, "", "row %lld names no source",
                      (long long)tl->records[i]->row_id);
    for (size_t j = i + 1; j < tl->n_records; j++)
      cr_assert_str_neq(tl->records[i]->event->id, tl->records[j]->event->id);
  }
  free_msg(tl);

  /* Kafka order within each partition: offsets grow with the row id. */
  db_conn *c = stack_db("shop_audit");
  db_rows *r = NULL;
  char err[512];
  cr_assert_eq(db_query(c,
                        "SELECT COUNT(*) FROM audit_log a JOIN audit_log b ON a.topic = b.topic"
                        " AND a.kpartition = b.kpartition AND a.row_id < b.row_id"
                        " AND a.koffset >= b.koffset",
                        NULL, 0, &r, err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert(db_rows_next(r));
  cr_assert_eq(db_rows_i64(r, 0), 0, "rows out of Kafka order within a partition");
  db_rows_free(r);
  db_close(c);

  /* The chain verifies; a customer may not ask. */
  Shop__Audit__V1__VerifyChainRequest vq = SHOP__AUDIT__V1__VERIFY_CHAIN_REQUEST__INIT;
  Shop__Audit__V1__VerifyChainResponse *v = NULL;
  cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "VerifyChain", &vq.base,
                             (ProtobufCMessage **)&v, adm, NULL, &st),
               STATUS_OK, "VerifyChain: %s", st.message);
  cr_assert(v->ok, "chain broken at row %lld: %s",
            v->first_break ? (long long)v->first_break->row_id : 0LL,
            v->first_break ? v->first_break->detail : "");
  cr_assert_geq(v->rows_checked, (int64_t)N_FLOW);
  free_msg(v);
  cr_assert_eq(
      stack_call_at(audit_url(), AUDIT_SVC, "VerifyChain", &vq.base, NULL, cust, NULL, &st),
      STATUS_PERMISSION_DENIED);

  /* ListAuditEvents by aggregate, paged by two. */
  Shop__Audit__V1__ListAuditEventsRequest lq = SHOP__AUDIT__V1__LIST_AUDIT_EVENTS_REQUEST__INIT;
  Shop__Common__V1__PageRequest pg = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  pg.page_size = 2;
  lq.page = &pg;
  lq.aggregate_id = oid;
  lq.type = "shop.order.v1.OrderCreated";
  Shop__Audit__V1__ListAuditEventsResponse *lr = NULL;
  cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "ListAuditEvents", &lq.base,
                             (ProtobufCMessage **)&lr, adm, NULL, &st),
               STATUS_OK, "ListAuditEvents: %s", st.message);
  cr_assert_eq(lr->n_records, 1);
  cr_assert_str_eq(lr->records[0]->event->subject, oid);
  cr_assert_eq(lr->page->total_size, 1, "total_size counts what the filters match");
  /* The event's time bounds it at full precision: from_time <= t <
   * until_time, with t kept to the millisecond. */
  Shop__Common__V1__Timestamp t = *lr->records[0]->event->time, lo, hi;
  shop__common__v1__timestamp__init(&lo);
  shop__common__v1__timestamp__init(&hi);
  struct {
    int64_t from_ns, until_ns; /* offsets from t */
    size_t want;
  } bounds[] = {{0, 1, 1}, {0, 999999, 1},  {-1, 1, 1},
                {0, 0, 0}, {1, 2000000, 0}, {-5000000, 0, 0}};
  for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
    int64_t tn = t.seconds * 1000000000LL + t.nanos;
    int64_t a = tn + bounds[i].from_ns, b = tn + bounds[i].until_ns;
    lo.seconds = a / 1000000000LL;
    lo.nanos = (int32_t)(a % 1000000000LL);
    hi.seconds = b / 1000000000LL;
    hi.nanos = (int32_t)(b % 1000000000LL);
    lq.from_time = &lo;
    lq.until_time = &hi;
    Shop__Audit__V1__ListAuditEventsResponse *tr = NULL;
    cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "ListAuditEvents", &lq.base,
                               (ProtobufCMessage **)&tr, adm, NULL, &st),
                 STATUS_OK, "ListAuditEvents: %s", st.message);
    cr_assert_eq(tr->n_records, bounds[i].want, "from t%+lld ns until t%+lld ns: %zu record(s)",
                 (long long)bounds[i].from_ns, (long long)bounds[i].until_ns, tr->n_records);
    cr_assert_eq(tr->page->total_size, (int64_t)bounds[i].want);
    free_msg(tr);
  }
  lq.from_time = lq.until_time = NULL;
  free_msg(lr);
  /* Every event of the order, two a page: total_size is the same on every
   * page and is what the pages hold together. */
  lq.type = "";
  size_t seen = 0;
  int64_t listed = -1;
  char next[8192] = "";
  do {
    pg.page_token = next;
    lr = NULL;
    cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "ListAuditEvents", &lq.base,
                               (ProtobufCMessage **)&lr, adm, NULL, &st),
                 STATUS_OK, "ListAuditEvents: %s", st.message);
    if (listed < 0) listed = lr->page->total_size;
    cr_assert_eq(lr->page->total_size, listed, "the same total on every page");
    seen += lr->n_records;
    snprintf(next, sizeof next, "%s", lr->page->next_page_token);
    free_msg(lr);
  } while (next[0] != '\0');
  cr_assert_geq(listed, 3, "an order flow has several events");
  cr_assert_eq((int64_t)seen, listed);
  pg.page_token = "";

  /* The order read model rebuilt from the log alone equals the live one. */
  Shop__Audit__V1__RebuildOrderProjectionRequest rq =
      SHOP__AUDIT__V1__REBUILD_ORDER_PROJECTION_REQUEST__INIT;
  rq.max_differences = 5;
  Shop__Audit__V1__RebuildOrderProjectionResponse *rr = NULL;
  cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "RebuildOrderProjection", &rq.base,
                             (ProtobufCMessage **)&rr, adm, NULL, &st),
               STATUS_OK, "RebuildOrderProjection: %s", st.message);
  for (size_t i = 0; i < rr->n_differences; i++)
    cr_log_error("difference: order %s field %s rebuilt %s live %s", rr->differences[i]->order_id,
                 rr->differences[i]->field, rr->differences[i]->rebuilt, rr->differences[i]->live);
  cr_assert(rr->match, "%lld difference(s) between the rebuilt and the live read model",
            (long long)rr->difference_count);
  cr_assert_geq(rr->orders_rebuilt, 1);
  cr_assert_eq(rr->orders_rebuilt, rr->orders_compared);
  cr_assert_geq(rr->events_applied, (int64_t)N_FLOW);
  free_msg(rr);

  /* A live row changed behind order-query's back is named, field and
   * values, in the proto3 JSON mapping; put back, the models match. */
  db_conn *rd = stack_db("shop_order_read");
  db_value ov[1] = {DB_STR(oid)};
  db_rows *tr = NULL;
  cr_assert_eq(db_query(rd, "SELECT total_units FROM orders_view WHERE order_id = ?", ov, 1, &tr,
                        err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert(db_rows_next(tr));
  long long total = (long long)db_rows_i64(tr, 0);
  db_rows_free(tr);
  uint64_t changed = 0;
  cr_assert_eq(
      db_exec(rd, "UPDATE orders_view SET total_units = total_units + 1 WHERE order_id = ?", ov, 1,
              &changed, NULL, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert_eq(changed, 1);
  status_code rst = stack_call_at(audit_url(), AUDIT_SVC, "RebuildOrderProjection", &rq.base,
                                  (ProtobufCMessage **)&rr, adm, NULL, &st);
  /* Put back before anything is asserted: a failure here must not leave
   * the live model changed for the runs after this one. */
  cr_assert_eq(db_exec(rd, "UPDATE orders_view SET total_units = ? WHERE order_id = ?",
                       (db_value[]){DB_I64(total), DB_STR(oid)}, 2, NULL, NULL, err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(rst, STATUS_OK, "RebuildOrderProjection: %s", st.message);
  char want_rebuilt[32], want_live[32];
  snprintf(want_rebuilt, sizeof want_rebuilt, "\"%lld\"", total);
  snprintf(want_live, sizeof want_live, "\"%lld\"", total + 1);
  cr_assert_not(rr->match);
  cr_assert_eq(rr->difference_count, 1);
  cr_assert_eq(rr->n_differences, 1);
  cr_assert_str_eq(rr->differences[0]->order_id, oid);
  cr_assert_str_eq(rr->differences[0]->field, "total.units");
  cr_assert_str_eq(rr->differences[0]->rebuilt, want_rebuilt);
  cr_assert_str_eq(rr->differences[0]->live, want_live);
  free_msg(rr);
  db_close(rd);
  cr_assert_eq(stack_call_at(audit_url(), AUDIT_SVC, "RebuildOrderProjection", &rq.base,
                             (ProtobufCMessage **)&rr, adm, NULL, &st),
               STATUS_OK, "RebuildOrderProjection: %s", st.message);
  cr_assert(rr->match, "%lld difference(s) after the row was put back",
            (long long)rr->difference_count);
  free_msg(rr);

  /* The run's books balance: money, stock, one OrderCreated, the chain. */
  cr_assert(stack_books_clean(false, 30000), "reconcile found broken books (see stderr)");
}

/* The first admin, created by user-command at start-up, is recorded like
 * every request's effect: its UserRegistered has a correlation id and a
 * traceparent. A second user-command with an admin email of its own makes
 * one now. */
Test(audit, the_first_admins_user_registered_has_a_correlation_id_and_a_trace) {
  char email[160], env_email[200], url[64];
  snprintf(email, sizeof email, "first-admin-%s@shop.test", stack_run());
  snprintf(env_email, sizeof env_email, "SHOP_AUTH__ADMIN_EMAIL=%s", email);
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", proc_free_tcp_port());
  const char *env[] = {env_email, NULL};
  proc *uc = stack_start("user-command", url, env);
  db_conn *c = stack_db("shop_audit");
  db_value p[1] = {DB_STR(email)};
  char corr[256] = "", tp[256] = "", err[512];
  /* The audit row of the user-command's UserRegistered for that email
   * (its data holds the email). */
  WAIT_UNTIL(({
               db_rows *r = NULL;
               bool got = false;
               if (db_query(c,
                            "SELECT correlation_id, traceparent FROM audit_log WHERE"
                            " type = 'shop.user.v1.UserRegistered' AND LOCATE(?, data) > 0",
                            p, 1, &r, err, sizeof err) == STATUS_OK &&
                   db_rows_next(r)) {
                 snprintf(corr, sizeof corr, "%s", db_rows_str(r, 0, NULL));
                 snprintf(tp, sizeof tp, "%s", db_rows_str(r, 1, NULL));
                 got = true;
               }
               db_rows_free(r);
               got;
             }),
             60000, "the first admin's UserRegistered in the audit log");
  db_close(c);
  stack_stop(uc);
  cr_assert_neq(corr[0], '\0', "no ce_correlationid on the first admin's UserRegistered");
  char trace[LOG_TRACE_ID_SIZE];
  cr_assert(log_trace_id(tp, trace), "no valid traceparent on it: '%s'", tp);
}

/* ---- Tracing ------------------------------------------------------------------------------------
 */

TestSuite(trace, .init = audit_up, .fini = stack_release, .timeout = 300);

#define MAX_RECORDS 64

typedef struct order_events {
  stack_record r[MAX_RECORDS];
  size_t n;
} order_events;

/* Every record keyed by the order on the order, inventory and payment
 * topics. */
static void order_events_read(order_events *e, const char *oid) {
  const char *topics[] = {"shop.order.events.v1", "shop.inventory.events.v1",
                          "shop.payment.events.v1"};
  e->n = 0;
  for (size_t t = 0; t < 3; t++) {
    size_t n = stack_records(topics[t], oid, e->r + e->n, MAX_RECORDS - e->n);
    cr_assert_leq(n, MAX_RECORDS - e->n, "more events of %s than expected", oid);
    e->n += n;
  }
}

static bool order_events_complete(const order_events *e) {
  for (size_t i = 0; i < N_FLOW; i++) {
    bool seen = false;
    for (size_t j = 0; j < e->n && !seen; j++) seen = strcmp(e->r[j].type, flow[i]) == 0;
    if (!seen) return false;
  }
  return true;
}

/* The whole file, NUL-terminated (freed by the caller). */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s", path);
  char *buf = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&buf, &len);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, n, mem);
  fclose(f);
  fclose(mem);
  return buf;
}

typedef struct log_lines {
  int order_command, saga, inventory, payment, programs;
} log_lines;

/* Checks every line of every program's log that names oid for the trace
 * id, and counts them by where they come from. */
static void log_lines_check(const char *oid, const char *trace, log_lines *seen) {
  const char *dir = getenv("SHOP_LOG_DIR");
  if (dir == NULL || dir[0] == '\0') dir = "/tmp";
  char want[64];
  snprintf(want, sizeof want, "\"trace_id\":\"%s\"", trace);
  memset(seen, 0, sizeof *seen);
  DIR *d = opendir(dir);
  cr_assert_not_null(d, "%s", dir);
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t nl = strlen(de->d_name);
    if (strncmp(de->d_name, "e2e-", 4) != 0 || nl < 8 || strcmp(de->d_name + nl - 4, ".log") != 0)
      continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    char *text = slurp(path);
    bool any = false;
    for (char *line = text; line != NULL && *line != '\0';) {
      char *end = strchr(line, '\n');
      if (end != NULL) *end = '\0';
      if (strstr(line, oid) != NULL) {
        any = true;
        cr_assert(strstr(line, want) != NULL, "%s: a line about %s without its trace %s: %s",
                  de->d_name, oid, trace, line);
        bool ev = strstr(line, "\"event_id\":\"") != NULL;
        if (strcmp(de->d_name, "e2e-order-command.log") == 0) {
          if (ev && strstr(line, "confirmed") != NULL) seen->saga++;
          if (strstr(line, "created for") != NULL) seen->order_command++;
        }
        if (strcmp(de->d_name, "e2e-inventory-worker.log") == 0 && ev) seen->inventory++;
        if (strcmp(de->d_name, "e2e-payment-worker.log") == 0 && ev) seen->payment++;
      }
      line = end != NULL ? end + 1 : NULL;
    }
    seen->programs += any;
    free(text);
  }
  closedir(d);
}

Test(trace, a_create_orders_trace_id_is_on_every_event_and_log_line_it_causes) {
  char adm[AUTH_TOKEN_MAX], cust[AUTH_TOKEN_MAX], pid[37], oid[37];
  actors(adm, cust, pid);

  /* CreateOrder under a known trace: the client continues the trace of
   * the scope it is called in. */
  char tp[LOG_TRACEPARENT_SIZE], trace[LOG_TRACE_ID_SIZE];
  log_traceparent_child(NULL, tp);
  log_trace_id(tp, trace);
  log_scope scope;
  log_scope_enter(&scope, NULL, tp, NULL);
  place(cust, pid, oid);
  log_scope_leave(&scope);

  /* Kafka: every event of the order, on every topic, carries the trace. */
  order_events ev;
  WAIT_UNTIL((order_events_read(&ev, oid), order_events_complete(&ev)), 120000,
             "every event of %s on Kafka (%zu so far)", oid, ev.n);
  for (size_t i = 0; i < ev.n; i++) {
    char got[LOG_TRACE_ID_SIZE];
    log_trace_id(ev.r[i].traceparent, got);
    cr_assert_str_eq(got, trace, "%s %s carries traceparent '%s', not trace %s", ev.r[i].type,
                     ev.r[i].id, ev.r[i].traceparent, trace);
  }

  /* The logs: every line about the order carries the trace, and the
   * command, the saga and both workers wrote some. The lines of an event
   * are written before its own events reach Kafka, so they are all there. */
  log_lines seen;
  log_lines_check(oid, trace, &seen);
  cr_assert_geq(seen.order_command, 1, "no CreateOrder line about %s", oid);
  cr_assert_geq(seen.saga, 1, "no saga line about %s", oid);
  cr_assert_geq(seen.inventory, 1, "no inventory-worker line about %s", oid);
  cr_assert_geq(seen.payment, 2, "payment-worker: authorized and captured lines about %s", oid);
  cr_assert_geq(seen.programs, 3);
}
