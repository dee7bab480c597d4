/* The simulated card processor on its own (a fresh state folder per test)
 * and the payment worker's operations against MariaDB (database
 * shop_test), with events written to a test table in the same
 * transaction. */
#define _XOPEN_SOURCE 700
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "domtest.h"
#include "payment/payment.h"
#include "shop/order/v1/events.pb-c.h"

#define FR(name) SHOP__PAYMENT__V1__PAYMENT_FAILURE_REASON__PAYMENT_FAILURE_REASON_##name
#define PS(name) SHOP__PAYMENT__V1__PAYMENT_STATUS__PAYMENT_STATUS_##name
#define T_AUTHORIZED "shop.payment.v1.PaymentAuthorized"
#define T_FAILED "shop.payment.v1.PaymentFailed"
#define T_CAPTURED "shop.payment.v1.PaymentCaptured"
#define T_VOIDED "shop.payment.v1.PaymentVoided"
#define T_REFUNDED "shop.payment.v1.PaymentRefunded"

static char dir[256];

/* Fake randomness: a queue of values, then 999 (no failure) forever. */
static uint32_t rnd_queue[8];
static int rnd_n, rnd_i;
static int slept_ms;

static uint32_t fake_random(void *self) { return rnd_i < rnd_n ? rnd_queue[rnd_i++] : 999; }
static void fake_sleep(void *self, int ms) { slept_ms += ms; }

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

static void dir_setup(void) {
  snprintf(dir, sizeof dir, "/tmp/shop-payment-test-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  rnd_n = rnd_i = 0;
  slept_ms = 0;
}

static void dir_teardown(void) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static payment_sim *sim_make(int latency, int permille) {
  payment_sim_opts o = {.state_dir = dir,
                        .latency_ms = latency,
                        .failure_permille = permille,
                        .amount_limit = 100000,
                        .currencies = "EUR,USD",
                        .sleep_ms_cb = fake_sleep,
                        .random_cb = fake_random};
  payment_sim *s = NULL;
  char err[512];
  cr_assert_eq(payment_sim_create(&s, &o, err, sizeof err), STATUS_OK, "%s", err);
  return s;
}

static payment_gw_result call(payment_sim *s, payment_op op, const char *key, const char *token,
                              int64_t amount, const char *ref) {
  payment_gateway gw = payment_sim_gateway(s);
  payment_gw_request req = {.idempotency_key = key,
                            .token = token,
                            .amount = amount,
                            .currency = "EUR",
                            .reference = ref};
  payment_gw_result res;
  gw.call_cb(gw.self, op, &req, &res);
  return res;
}

/* ---- The simulated processor --------------------------------------------------------- */

TestSuite(payment_sim, .init = dir_setup, .fini = dir_teardown, .timeout = 30);

Test(payment_sim, test_tokens_authorize_decline_or_fail_as_documented) {
  payment_sim *s = sim_make(0, 0);
  struct {
    const char *token;
    int64_t amount;
    payment_gw_outcome outcome;
    int reason;
  } cases[] = {
      {"tok_visa", 100, PAYMENT_GW_APPROVED, 0},
      {"tok_ok_anything_9", 100, PAYMENT_GW_APPROVED, 0},
      {"tok_capture_fail", 100, PAYMENT_GW_APPROVED, 0},
      {"tok_decline", 100, PAYMENT_GW_DECLINED, FR(DECLINED)},
      {"tok_decline_stolen", 100, PAYMENT_GW_DECLINED, FR(DECLINED)},
      {"tok_insufficient_funds", 100, PAYMENT_GW_DECLINED, FR(INSUFFICIENT_FUNDS)},
      {"tok_expired", 100, PAYMENT_GW_DECLINED, FR(INVALID_TOKEN)},
      {"4111111111111111", 100, PAYMENT_GW_DECLINED, FR(INVALID_TOKEN)},
      {"tok_", 100, PAYMENT_GW_DECLINED, FR(INVALID_TOKEN)},
      {"tok_UPPER", 100, PAYMENT_GW_DECLINED, FR(INVALID_TOKEN)},
      {"tok_visa", 100001, PAYMENT_GW_DECLINED, FR(AMOUNT_LIMIT_EXCEEDED)},
      {"tok_visa", 0, PAYMENT_GW_DECLINED, FR(AMOUNT_LIMIT_EXCEEDED)},
      {"tok_unavailable", 100, PAYMENT_GW_TRANSIENT, FR(GATEWAY_UNAVAILABLE)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char key[64];
    snprintf(key, sizeof key, "k%zu/authorize", i);
    payment_gw_result r = call(s, PAYMENT_OP_AUTHORIZE, key, cases[i].token, cases[i].amount, NULL);
    cr_assert_eq(r.outcome, cases[i].outcome, "%s: outcome %d", cases[i].token, r.outcome);
    if (cases[i].reason != 0) cr_assert_eq(r.reason, cases[i].reason, "%s", cases[i].token);
    if (r.outcome == PAYMENT_GW_APPROVED)
      cr_assert(strncmp(r.reference, "auth_", 5) == 0, "%s", r.reference);
  }
  /* A currency it does not take. */
  payment_gateway gw = payment_sim_gateway(s);
  payment_gw_request req = {
      .idempotency_key = "jpy", .token = "tok_visa", .amount = 5, .currency = "JPY"};
  payment_gw_result r;
  gw.call_cb(gw.self, PAYMENT_OP_AUTHORIZE, &req, &r);
  cr_assert_eq(r.reason, FR(CURRENCY_NOT_SUPPORTED));
  payment_sim_destroy(s);
}

Test(payment_sim, one_key_authorizes_once_and_answers_the_same_after_a_restart) {
  payment_sim *s = sim_make(0, 0);
  payment_gw_result a = call(s, PAYMENT_OP_AUTHORIZE, "order-1/authorize", "tok_visa", 500, NULL);
  payment_gw_result b = call(s, PAYMENT_OP_AUTHORIZE, "order-1/authorize", "tok_visa", 500, NULL);
  cr_assert_eq(a.outcome, PAYMENT_GW_APPROVED);
  cr_assert_str_eq(a.reference, b.reference);
  int64_t n[5];
  payment_sim_performed(s, n);
  cr_assert_eq(n[PAYMENT_OP_AUTHORIZE], 1);
  payment_sim_destroy(s);
  s = sim_make(0, 0);
  payment_gw_result c = call(s, PAYMENT_OP_AUTHORIZE, "order-1/authorize", "tok_visa", 500, NULL);
  cr_assert_str_eq(a.reference, c.reference, "the records are on disk");
  payment_sim_performed(s, n);
  cr_assert_eq(n[PAYMENT_OP_AUTHORIZE], 0);
  /* The same key for another amount is refused. */
  payment_gw_result d = call(s, PAYMENT_OP_AUTHORIZE, "order-1/authorize", "tok_visa", 501, NULL);
  cr_assert_eq(d.outcome, PAYMENT_GW_DECLINED);
  cr_assert_eq(d.reason, FR(AUTHORIZATION_INVALID));
  payment_sim_destroy(s);
}

Test(payment_sim, two_sims_sharing_a_folder_see_each_others_answers) {
  /* Two payment-worker instances share the processor's folder. */
  payment_sim *a = sim_make(0, 0), *b = sim_make(0, 0);
  payment_gw_result x = call(a, PAYMENT_OP_AUTHORIZE, "shared/authorize", "tok_visa", 300, NULL);
  payment_gw_result y = call(b, PAYMENT_OP_AUTHORIZE, "shared/authorize", "tok_visa", 300, NULL);
  cr_assert_eq(x.outcome, PAYMENT_GW_APPROVED);
  cr_assert_str_eq(x.reference, y.reference, "b answers a's authorization from the journal");
  payment_gw_result c = call(b, PAYMENT_OP_CAPTURE, "shared/capture", NULL, 300, x.reference);
  cr_assert_eq(c.outcome, PAYMENT_GW_APPROVED);
  /* a learns of b's capture: the authorization is no longer open. */
  payment_gw_result v = call(a, PAYMENT_OP_VOID, "shared/void", NULL, 300, x.reference);
  cr_assert_eq(v.outcome, PAYMENT_GW_DECLINED);
  cr_assert_eq(v.reason, FR(AUTHORIZATION_INVALID));
  int64_t na[5], nb[5];
  payment_sim_performed(a, na);
  payment_sim_performed(b, nb);
  cr_assert_eq(na[PAYMENT_OP_AUTHORIZE] + nb[PAYMENT_OP_AUTHORIZE], 1);
  char err[256];
  cr_assert_eq(payment_sim_sync(a, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(payment_sim_sync(b, err, sizeof err), STATUS_OK, "%s", err);
  payment_sim_destroy(a);
  payment_sim_destroy(b);
}

Test(payment_sim, an_older_folder_of_one_file_per_record_is_moved_into_the_journal) {
  /* The layout before the journal: keys/<sha256 of the key> and
   * ledger/<id>, "name=value" lines. */
  char path[512];
  snprintf(path, sizeof path, "%s/keys", dir);
  cr_assert_eq(mkdir(path, 0700), 0);
  snprintf(path, sizeof path, "%s/ledger", dir);
  cr_assert_eq(mkdir(path, 0700), 0);
  /* sha256("old/authorize") */
  snprintf(path, sizeof path,
           "%s/keys/9645c092f6eadbd465d9778f8cf0d683a34dd838e4963d68fe93da22376c1f35", dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(
      "key=old/authorize\nop=1\namount=900\noutcome=1\nreason=0\nreference="
      "auth_aaaaaaaaaaaaaaaaaaaaaaaa\nmessage=authorized\n",
      f);
  fclose(f);
  snprintf(path, sizeof path, "%s/ledger/auth_aaaaaaaaaaaaaaaaaaaaaaaa", dir);
  f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(
      "kind=authorization\nkey=old/authorize\namount=900\ncurrency=EUR\nstate=open\n"
      "capture_fail=0\ncapture=\n",
      f);
  fclose(f);
  payment_sim *s = sim_make(0, 0);
  /* The old record answers its key again... */
  payment_gw_result a = call(s, PAYMENT_OP_AUTHORIZE, "old/authorize", "tok_visa", 900, NULL);
  cr_assert_eq(a.outcome, PAYMENT_GW_APPROVED);
  cr_assert_str_eq(a.reference, "auth_aaaaaaaaaaaaaaaaaaaaaaaa");
  int64_t n[5];
  payment_sim_performed(s, n);
  cr_assert_eq(n[PAYMENT_OP_AUTHORIZE], 0, "answered from the imported record");
  /* ...and the old authorization is open and can be captured. */
  payment_gw_result c =
      call(s, PAYMENT_OP_CAPTURE, "old/capture", NULL, 900, "auth_aaaaaaaaaaaaaaaaaaaaaaaa");
  cr_assert_eq(c.outcome, PAYMENT_GW_APPROVED, "%s", c.message);
  payment_sim_destroy(s);
}

Test(payment_sim, capture_void_and_refund_follow_the_authorization) {
  payment_sim *s = sim_make(0, 0);
  payment_gw_result a = call(s, PAYMENT_OP_AUTHORIZE, "o/authorize", "tok_visa", 700, NULL);
  payment_gw_result c = call(s, PAYMENT_OP_CAPTURE, "o/capture", NULL, 700, a.reference);
  cr_assert_eq(c.outcome, PAYMENT_GW_APPROVED);
  cr_assert(strncmp(c.reference, "cap_", 4) == 0);
  payment_gw_result v = call(s, PAYMENT_OP_VOID, "o/void", NULL, 700, a.reference);
  cr_assert_eq(v.outcome, PAYMENT_GW_DECLINED, "a captured authorization cannot be voided");
  cr_assert_eq(v.reason, FR(AUTHORIZATION_INVALID));
  payment_gw_result r = call(s, PAYMENT_OP_REFUND, "o/refund", NULL, 700, c.reference);
  cr_assert_eq(r.outcome, PAYMENT_GW_APPROVED);
  cr_assert(strncmp(r.reference, "re_", 3) == 0);
  payment_gw_result r2 = call(s, PAYMENT_OP_REFUND, "o/refund-again", NULL, 700, c.reference);
  cr_assert_eq(r2.outcome, PAYMENT_GW_DECLINED, "refunded once only");

  payment_gw_result a2 = call(s, PAYMENT_OP_AUTHORIZE, "p/authorize", "tok_visa", 300, NULL);
  payment_gw_result v2 = call(s, PAYMENT_OP_VOID, "p/void", NULL, 300, a2.reference);
  cr_assert_eq(v2.outcome, PAYMENT_GW_APPROVED);
  payment_gw_result c2 = call(s, PAYMENT_OP_CAPTURE, "p/capture", NULL, 300, a2.reference);
  cr_assert_eq(c2.outcome, PAYMENT_GW_DECLINED, "a voided authorization cannot be captured");

  payment_gw_result a3 =
      call(s, PAYMENT_OP_AUTHORIZE, "q/authorize", "tok_capture_fail", 300, NULL);
  payment_gw_result c3 = call(s, PAYMENT_OP_CAPTURE, "q/capture", NULL, 300, a3.reference);
  cr_assert_eq(c3.outcome, PAYMENT_GW_DECLINED);
  payment_gw_result v3 = call(s, PAYMENT_OP_VOID, "q/void", NULL, 300, a3.reference);
  cr_assert_eq(v3.outcome, PAYMENT_GW_APPROVED, "the hold is still open after a failed capture");
  payment_sim_destroy(s);
}

Test(payment_sim, latency_is_added_and_a_lost_answer_is_found_again_by_its_key) {
  payment_sim *s = sim_make(25, 500);
  rnd_queue[0] = 66001; /* 66001 % 1000 = 1 < 500: fails; bit 16 set: after doing it */
  rnd_queue[1] = 7;     /* fails before doing anything */
  rnd_n = 2;
  payment_gw_result a = call(s, PAYMENT_OP_AUTHORIZE, "lost/authorize", "tok_visa", 100, NULL);
  cr_assert_eq(a.outcome, PAYMENT_GW_TRANSIENT);
  payment_gw_result b = call(s, PAYMENT_OP_AUTHORIZE, "lost/authorize", "tok_visa", 100, NULL);
  cr_assert_eq(b.outcome, PAYMENT_GW_TRANSIENT);
  payment_gw_result c = call(s, PAYMENT_OP_AUTHORIZE, "lost/authorize", "tok_visa", 100, NULL);
  cr_assert_eq(c.outcome, PAYMENT_GW_APPROVED);
  int64_t n[5];
  payment_sim_performed(s, n);
  cr_assert_eq(n[PAYMENT_OP_AUTHORIZE], 1, "done once, whatever was lost");
  cr_assert_eq(slept_ms, 75);
  payment_sim_destroy(s);
}

/* ---- The worker ------------------------------------------------------------------------ */

static db_conn *db;
static payment_sim *sim;
static payment_ctx ctx;

static void worker_setup(void) {
  dir_setup();
  db = domtest_db("payment", payment_migrations, payment_migrations_count);
  sim = sim_make(0, 0);
  payment_ctx_init(&ctx, NULL, "payment-test", domtest_sink(), payment_sim_gateway(sim));
  ctx.retry_max = 3;
  ctx.retry_backoff_ms = 10;
  ctx.sleep_ms_cb = fake_sleep;
}

static void worker_teardown(void) {
  payment_ctx_destroy(&ctx);
  payment_sim_destroy(sim);
  db_close(db);
  dir_teardown();
}

TestSuite(payment_worker, .init = worker_setup, .fini = worker_teardown, .timeout = 60);

typedef struct op {
  enum { AUTH, CAPTURE, COMPENSATE } kind;
  payment_order o;
  status_code want;
} op;

static status_code op_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  op *p = arg;
  switch (p->kind) {
  case AUTH:
    return payment_authorize(tx, &ctx, NULL, &p->o, errbuf, errlen);
  case CAPTURE:
    return payment_capture(tx, &ctx, NULL, p->o.order_id, errbuf, errlen);
  case COMPENSATE:
    return payment_compensate(tx, &ctx, NULL, p->o.order_id, errbuf, errlen);
  }
  return STATUS_INTERNAL;
}

static void run(int kind, const payment_order *o) {
  op p = {.kind = kind, .o = *o};
  domtest_tx(db, op_cb, &p);
}

static payment_order order(char id[EVENTS_ID_SIZE], const char *token, int64_t amount) {
  domtest_id(id);
  return (payment_order){.order_id = id,
                         .customer_id = "customer-1",
                         .idempotency_key = "create-key",
                         .token = token,
                         .amount = amount,
                         .currency = "EUR"};
}

static payment_row row(const char *order_id) {
  payment_row r;
  char err[512];
  cr_assert_eq(payment_row_get(db, order_id, &r, err, sizeof err), STATUS_OK, "%s", err);
  return r;
}

static int64_t attempts(const char *order_id, payment_op op) {
  int64_t n = -1;
  char err[512];
  cr_assert_eq(payment_attempts_count(db, order_id, op, &n, err, sizeof err), STATUS_OK, "%s", err);
  return n;
}

Test(payment_worker, an_order_is_authorized_once_however_often_it_arrives) {
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_visa", 1234);
  run(AUTH, &o);
  run(AUTH, &o);
  payment_row r = row(id);
  cr_assert_eq(r.status, PS(AUTHORIZED));
  cr_assert_eq(r.version, 1);
  cr_assert(strncmp(r.authorization_id, "auth_", 5) == 0);
  cr_assert_eq(domtest_count(db, id, T_AUTHORIZED), 1);
  cr_assert_eq(attempts(id, PAYMENT_OP_AUTHORIZE), 1, "the repeat never reached the gateway");
  int64_t seq = 0;
  Shop__Payment__V1__PaymentAuthorized *e =
      (void *)domtest_last(db, id, &shop__payment__v1__payment_authorized__descriptor, &seq);
  cr_assert_eq(seq, 1);
  cr_assert_eq(e->amount->units, 1234);
  cr_assert_str_eq(e->customer_id, "customer-1");
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

Test(payment_worker, a_declined_card_fails_the_payment_with_its_reason) {
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_insufficient_funds", 500);
  run(AUTH, &o);
  cr_assert_eq(row(id).status, PS(FAILED));
  Shop__Payment__V1__PaymentFailed *e =
      (void *)domtest_last(db, id, &shop__payment__v1__payment_failed__descriptor, NULL);
  cr_assert_eq(e->operation, PAYMENT_OP_AUTHORIZE);
  cr_assert_eq(e->reason, FR(INSUFFICIENT_FUNDS));
  cr_assert_str_eq(e->authorization_id, "");
  protobuf_c_message_free_unpacked(&e->base, NULL);
  run(COMPENSATE, &o);
  cr_assert_eq(domtest_count(db, id, NULL), 1, "nothing to void for a failed authorization");
}

Test(payment_worker, a_confirmed_order_is_captured_and_refunded_on_cancel_once_each) {
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_visa", 900);
  run(AUTH, &o);
  run(CAPTURE, &o);
  run(CAPTURE, &o);
  payment_row r = row(id);
  cr_assert_eq(r.status, PS(CAPTURED));
  cr_assert_eq(domtest_count(db, id, T_CAPTURED), 1);
  run(COMPENSATE, &o);
  run(COMPENSATE, &o);
  r = row(id);
  cr_assert_eq(r.status, PS(REFUNDED));
  cr_assert_eq(r.version, 3);
  cr_assert_eq(domtest_count(db, id, T_REFUNDED), 1);
  cr_assert_eq(domtest_count(db, id, T_VOIDED), 0);
  cr_assert_eq(attempts(id, 0), 3);
}

Test(payment_worker, a_cancelled_pending_order_voids_its_authorization) {
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_visa", 900);
  run(AUTH, &o);
  run(COMPENSATE, &o);
  run(CAPTURE, &o); /* an OrderConfirmed can no longer capture */
  cr_assert_eq(row(id).status, PS(VOIDED));
  cr_assert_eq(domtest_count(db, id, T_VOIDED), 1);
  cr_assert_eq(domtest_count(db, id, T_CAPTURED), 0);
}

Test(payment_worker, a_failed_capture_is_reported_and_the_hold_voided) {
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_capture_fail", 900);
  run(AUTH, &o);
  run(CAPTURE, &o);
  payment_row r = row(id);
  cr_assert_eq(r.status, PS(VOIDED));
  Shop__Payment__V1__PaymentFailed *e =
      (void *)domtest_last(db, id, &shop__payment__v1__payment_failed__descriptor, NULL);
  cr_assert_eq(e->operation, PAYMENT_OP_CAPTURE);
  cr_assert_str_eq(e->authorization_id, r.authorization_id);
  protobuf_c_message_free_unpacked(&e->base, NULL);
  cr_assert_eq(domtest_count(db, id, T_VOIDED), 1);
  run(COMPENSATE, &o); /* the saga's OrderCancelled that follows */
  cr_assert_eq(domtest_count(db, id, T_VOIDED), 1);
  cr_assert_eq(domtest_count(db, id, NULL), 3);
}

Test(payment_worker, a_gateway_that_stays_down_fails_the_authorization_after_the_retries) {
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_unavailable", 900);
  run(AUTH, &o);
  payment_row r = row(id);
  cr_assert_eq(r.status, PS(FAILED));
  cr_assert_eq(r.failure_reason, FR(GATEWAY_UNAVAILABLE));
  cr_assert_eq(attempts(id, PAYMENT_OP_AUTHORIZE), 4, "the first try and retry_max retries");
  cr_assert_eq(slept_ms, 10 + 20 + 40, "doubling backoff");
}

Test(payment_worker, a_lost_gateway_answer_is_retried_with_the_same_key) {
  payment_sim_destroy(sim);
  sim = sim_make(0, 500);
  ctx.gw = payment_sim_gateway(sim);
  rnd_queue[0] = 66001; /* done, answer lost (see above) */
  rnd_n = 1;
  char id[EVENTS_ID_SIZE];
  payment_order o = order(id, "tok_visa", 900);
  run(AUTH, &o);
  cr_assert_eq(row(id).status, PS(AUTHORIZED));
  cr_assert_eq(attempts(id, PAYMENT_OP_AUTHORIZE), 2);
  int64_t n[5];
  payment_sim_performed(sim, n);
  cr_assert_eq(n[PAYMENT_OP_AUTHORIZE], 1);
}

Test(payment_worker, a_void_the_gateway_keeps_failing_is_retried_later_not_dropped) {
  char id[EVENTS_ID_SIZE], err[512];
  payment_order o = order(id, "tok_visa", 900);
  run(AUTH, &o);
  payment_sim_destroy(sim);
  sim = sim_make(0, 1000);
  ctx.gw = payment_sim_gateway(sim);
  op p = {.kind = COMPENSATE, .o = o};
  status_code st = db_tx_run(db, op_cb, &p, 1, err, sizeof err);
  cr_assert_eq(st, STATUS_UNAVAILABLE, "%s", err);
  cr_assert_eq(row(id).status, PS(AUTHORIZED), "rolled back: the consumer tries again");
}

/* ---- The consumer's batch ----------------------------------------------------------- */

typedef struct created_msg {
  Shop__Order__V1__OrderCreated e;
  Shop__Common__V1__Money total;
} created_msg;

static void created(created_msg *m, const char *id, const char *token, int64_t amount) {
  shop__order__v1__order_created__init(&m->e);
  shop__common__v1__money__init(&m->total);
  m->total.units = amount;
  m->total.currency = "EUR";
  m->e.order_id = (char *)id;
  m->e.customer_id = "customer-1";
  m->e.idempotency_key = "create-key";
  m->e.payment_token = (char *)token;
  m->e.total = &m->total;
}

Test(payment_worker, a_batch_of_orders_is_paid_as_one_by_one) {
  char a[EVENTS_ID_SIZE], b[EVENTS_ID_SIZE], c[EVENTS_ID_SIZE], d[EVENTS_ID_SIZE];
  domtest_id(a);
  domtest_id(b);
  domtest_id(c);
  domtest_id(d);
  /* b was authorized in an earlier batch. */
  payment_order ob = {.order_id = b,
                      .customer_id = "customer-1",
                      .idempotency_key = "create-key",
                      .token = "tok_visa",
                      .amount = 700,
                      .currency = "EUR"};
  run(AUTH, &ob);
  created_msg ma, mc;
  created(&ma, a, "tok_visa", 500);    /* authorized, confirmed, captured here */
  created(&mc, c, "tok_decline", 300); /* declined: a FAILED row */
  Shop__Order__V1__OrderConfirmed conf_a = SHOP__ORDER__V1__ORDER_CONFIRMED__INIT,
                                  conf_b = SHOP__ORDER__V1__ORDER_CONFIRMED__INIT;
  conf_a.order_id = a;
  conf_b.order_id = b;
  Shop__Order__V1__OrderCancelled cancel_b = SHOP__ORDER__V1__ORDER_CANCELLED__INIT,
                                  cancel_d = SHOP__ORDER__V1__ORDER_CANCELLED__INIT;
  cancel_b.order_id = b; /* captured above in this batch: refunded */
  cancel_d.order_id = d; /* never seen: a closed row */
  const ProtobufCMessage *ms[] = {&ma.e.base,   &mc.e.base,     &conf_a.base,
                                  &conf_b.base, &cancel_b.base, &cancel_d.base};
  size_t n = sizeof ms / sizeof ms[0];
  domtest_event ev[sizeof ms / sizeof ms[0]];
  for (int round = 0; round < 2; round++) {
    /* The second round is a redelivery past the inbox: nothing changes. */
    for (size_t i = 0; i < n; i++) domtest_event_make(&ev[i], ms[i]);
    domtest_consume(db, &payment_consumer, ev, n, &ctx);
    payment_row r = row(a);
    cr_assert_eq(r.status, PS(CAPTURED));
    cr_assert_eq(r.version, 2);
    cr_assert_eq(r.amount, 500);
    cr_assert_neq(r.capture_id[0], '\0');
    r = row(b);
    cr_assert_eq(r.status, PS(REFUNDED));
    cr_assert_eq(r.version, 3);
    cr_assert_neq(r.refund_id[0], '\0');
    r = row(c);
    cr_assert_eq(r.status, PS(FAILED));
    cr_assert_eq(r.version, 1);
    cr_assert_neq(r.failure_reason, 0);
    r = row(d);
    cr_assert_eq(r.status, PS(FAILED));
    cr_assert_eq(r.version, 0);
    cr_assert_eq(domtest_count(db, a, T_CAPTURED), 1);
    cr_assert_eq(domtest_count(db, a, NULL), 2, "authorized, captured");
    cr_assert_eq(domtest_count(db, b, T_REFUNDED), 1);
    cr_assert_eq(domtest_count(db, b, NULL), 3, "authorized, captured, refunded");
    cr_assert_eq(domtest_count(db, c, NULL), 1, "failed");
    cr_assert_eq(domtest_count(db, d, NULL), 0);
    cr_assert_eq(attempts(a, 0), 2);
  }
}
