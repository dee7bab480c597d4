/* audit-worker end to end: a full order flow through the real programs,
 * then the audit log as AuditQueryService and the shop_audit database show
 * it: every event of the order once, Kafka order kept within each
 * partition, the chain verifies, and only admins may ask. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e_orders/ostack.h"
#include "events/events.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"

#define OCMD_SVC (&shop__order__v1__order_command_service__descriptor)
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define AUDIT_SVC (&shop__audit__v1__audit_query_service__descriptor)

ReportHook(PRE_ALL)(struct criterion_test_set *set) { ostack_up(); }
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { ostack_down(); }

static const char *audit_url(void) { return ostack_cfg()->endpoints.audit_query; }

static void audit_up(void) {
  ostack_require();
  ostack_start("audit-worker", audit_url(), NULL);
}

TestSuite(audit, .init = audit_up, .fini = ostack_release, .timeout = 300);

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

static char *key(void) {
  static char k[8][96];
  static int i;
  i = (i + 1) % 8;
  ostack_unique(k[i], sizeof k[i], "k");
  return k[i];
}

static void product(const char *token, char id[37]) {
  char sku[96], u[64];
  ostack_unique(u, sizeof u, "p");
  snprintf(sku, sizeof sku, "%s-a%s", ostack_run(), u);
  Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  Shop__Product__V1__ProductDetails d = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money m = SHOP__COMMON__V1__MONEY__INIT;
  Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  d.name = "Audit mug";
  d.description = "For the audit tests.";
  d.category = "mugs";
  m.units = 1250;
  m.currency = "EUR";
  rule.max_quantity_per_order = 10;
  req.sku = sku;
  req.details = &d;
  req.price = &m;
  req.initial_stock = 100;
  req.inventory_rule = &rule;
  Shop__Product__V1__CreateProductResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(ostack_call(ostack_url("product-command"), PCMD_SVC, "CreateProduct", &req.base,
                           (ProtobufCMessage **)&r, token, key(), &st),
               STATUS_OK, "CreateProduct: %s", st.message);
  snprintf(id, 37, "%s", r->product_id);
  Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = r->consistency;
  rc.wait_ms = 15000;
  g.product_id = id;
  g.consistency = &rc;
  cr_assert_eq(ostack_call(ostack_url("product-query"), PQRY_SVC, "GetProduct", &g.base, NULL, NULL,
                           NULL, &st),
               STATUS_OK, "GetProduct: %s", st.message);
  free_msg(r);
}

static void place(const char *token, const char *product_id, char order_id[37]) {
  Shop__Order__V1__CreateOrderRequest req = SHOP__ORDER__V1__CREATE_ORDER_REQUEST__INIT;
  Shop__Order__V1__CreateOrderLine line = SHOP__ORDER__V1__CREATE_ORDER_LINE__INIT;
  Shop__Order__V1__CreateOrderLine *lp[1] = {&line};
  Shop__Order__V1__ShippingAddress addr = SHOP__ORDER__V1__SHIPPING_ADDRESS__INIT;
  addr.recipient = "Grace Hopper";
  addr.line1 = "1 Harbour Street";
  addr.city = "Arlington";
  addr.postal_code = "22201";
  addr.country = "US";
  line.product_id = (char *)product_id;
  line.quantity = 2;
  req.shipping_address = &addr;
  req.payment_token = "tok_visa";
  req.n_lines = 1;
  req.lines = lp;
  Shop__Order__V1__CreateOrderResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(ostack_call(ostack_url("order-command"), OCMD_SVC, "CreateOrder", &req.base,
                           (ProtobufCMessage **)&r, token, key(), &st),
               STATUS_OK, "CreateOrder: %s", st.message);
  snprintf(order_id, 37, "%s", r->order_id);
  free_msg(r);
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
  char adm_id[EVENTS_ID_SIZE], cust_id[EVENTS_ID_SIZE];
  char adm[AUTH_TOKEN_MAX], cust[AUTH_TOKEN_MAX];
  events_uuid_v7(adm_id);
  events_uuid_v7(cust_id);
  ostack_token(adm, adm_id, AUTH_ROLE_ADMIN);
  ostack_token(cust, cust_id, AUTH_ROLE_CUSTOMER);
  char pid[37], oid[37];
  product(adm, pid);
  place(cust, pid, oid);

  /* The timeline fills as the saga runs and the worker catches up. */
  Shop__Audit__V1__GetOrderTimelineRequest tq = SHOP__AUDIT__V1__GET_ORDER_TIMELINE_REQUEST__INIT;
  tq.order_id = oid;
  Shop__Audit__V1__GetOrderTimelineResponse *tl = NULL;
  rpc_status st;
  int64_t until = ostack_now_ms() + 180000;
  for (;;) {
    free_msg(tl);
    tl = NULL;
    ostack_call(audit_url(), AUDIT_SVC, "GetOrderTimeline", &tq.base, (ProtobufCMessage **)&tl, adm,
                NULL, &st);
    if (flow_complete(tl) || ostack_now_ms() > until) break;
    usleep(100000);
  }
  cr_assert(flow_complete(tl), "the timeline of %s is incomplete", oid);
  /* Give late duplicates a chance to show, then look again. */
  usleep(1500000);
  free_msg(tl);
  tl = NULL;
  cr_assert_eq(ostack_call(audit_url(), AUDIT_SVC, "GetOrderTimeline", &tq.base,
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
  db_conn *c = ostack_db("shop_audit");
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
  cr_assert_eq(ostack_call(audit_url(), AUDIT_SVC, "VerifyChain", &vq.base, (ProtobufCMessage **)&v,
                           adm, NULL, &st),
               STATUS_OK, "VerifyChain: %s", st.message);
  cr_assert(v->ok, "chain broken at row %lld: %s",
            v->first_break ? (long long)v->first_break->row_id : 0LL,
            v->first_break ? v->first_break->detail : "");
  cr_assert_geq(v->rows_checked, (int64_t)N_FLOW);
  free_msg(v);
  cr_assert_eq(ostack_call(audit_url(), AUDIT_SVC, "VerifyChain", &vq.base, NULL, cust, NULL, &st),
               STATUS_PERMISSION_DENIED);

  /* ListAuditEvents by aggregate, paged by two. */
  Shop__Audit__V1__ListAuditEventsRequest lq = SHOP__AUDIT__V1__LIST_AUDIT_EVENTS_REQUEST__INIT;
  Shop__Common__V1__PageRequest pg = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  pg.page_size = 2;
  lq.page = &pg;
  lq.aggregate_id = oid;
  lq.type = "shop.order.v1.OrderCreated";
  Shop__Audit__V1__ListAuditEventsResponse *lr = NULL;
  cr_assert_eq(ostack_call(audit_url(), AUDIT_SVC, "ListAuditEvents", &lq.base,
                           (ProtobufCMessage **)&lr, adm, NULL, &st),
               STATUS_OK, "ListAuditEvents: %s", st.message);
  cr_assert_eq(lr->n_records, 1);
  cr_assert_str_eq(lr->records[0]->event->subject, oid);
  free_msg(lr);

  /* The order read model rebuilt from the log alone equals the live one. */
  Shop__Audit__V1__RebuildOrderProjectionRequest rq =
      SHOP__AUDIT__V1__REBUILD_ORDER_PROJECTION_REQUEST__INIT;
  rq.max_differences = 5;
  Shop__Audit__V1__RebuildOrderProjectionResponse *rr = NULL;
  cr_assert_eq(ostack_call(audit_url(), AUDIT_SVC, "RebuildOrderProjection", &rq.base,
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

  /* The run's books balance: money, stock, one OrderCreated, the chain. */
  cr_assert(ostack_books_clean(false, 30000), "reconcile found broken books (see stderr)");
}
