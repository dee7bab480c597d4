/* inventory's rules and its operations against MariaDB (database
 * shop_test), with events written to a test table in the same
 * transaction. Every test makes its own products and orders. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domtest.h"
#include "inventory/inventory.h"
#include "shop/order/v1/events.pb-c.h"
#include "testenv.h"

#define R_UNKNOWN SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_UNKNOWN_PRODUCT
#define R_ARCHIVED SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_PRODUCT_ARCHIVED
#define R_LIMIT SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_QUANTITY_LIMIT_EXCEEDED
#define R_OUT SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_OUT_OF_STOCK
#define RES_RESERVED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_RESERVED
#define RES_REJECTED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_REJECTED
#define RES_RELEASED SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_RELEASED
#define RES_PENDING SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_PENDING

#define T_RESERVED "shop.inventory.v1.InventoryReserved"
#define T_REJECTED "shop.inventory.v1.InventoryRejected"
#define T_RELEASED "shop.inventory.v1.InventoryReleased"
#define T_SHIPPED "shop.inventory.v1.InventoryShipped"
#define T_LEVEL "shop.inventory.v1.StockLevelChanged"
#define T_LOW "shop.inventory.v1.InventoryLow"

/* ---- Pure rules ---------------------------------------------------------------------- */

Test(inventory_rules, a_line_is_checked_unknown_then_archived_then_limit_then_stock) {
  inventory_stock_view s = {.known = false};
  cr_assert_eq(inventory_line_check(&s, 1), R_UNKNOWN);
  s = (inventory_stock_view){.known = true, .archived = true, .available = 0};
  cr_assert_eq(inventory_line_check(&s, 1), R_ARCHIVED);
  s = (inventory_stock_view){.known = true, .available = 0, .max_quantity_per_order = 2};
  cr_assert_eq(inventory_line_check(&s, 3), R_LIMIT);
  cr_assert_eq(inventory_line_check(&s, 2), R_OUT);
  s.available = 2;
  cr_assert_eq(inventory_line_check(&s, 2), 0);
  s.max_quantity_per_order = 0;
  s.available = 1000;
  cr_assert_eq(inventory_line_check(&s, 1000), 0);
}

Test(inventory_rules, low_stock_fires_only_on_a_downward_crossing) {
  cr_assert(inventory_low_crossed(5, 4, 5));
  cr_assert(inventory_low_crossed(10, 0, 5));
  cr_assert_not(inventory_low_crossed(4, 3, 5), "already below: no second alert");
  cr_assert_not(inventory_low_crossed(6, 5, 5), "at the threshold is not below it");
  cr_assert_not(inventory_low_crossed(3, 8, 5), "upward");
  cr_assert_not(inventory_low_crossed(10, 0, 0), "threshold 0 is off");
}

/* ---- Fixture ------------------------------------------------------------------------- */

static db_conn *db;
static inventory_ctx ctx;
static int64_t fake_now = 1700000000000;

static int64_t fake_now_cb(void *self) { return fake_now; }

static void setup(void) {
  db = domtest_db("inventory", inventory_migrations, inventory_migrations_count);
  inventory_ctx_init(&ctx, NULL, "inventory-test", domtest_sink());
  ctx.unknown_product_wait_ms = 5000;
  ctx.clock.now_ms_cb = fake_now_cb;
}

static void teardown(void) {
  inventory_ctx_destroy(&ctx);
  db_close(db);
}

TestSuite(inventory, .init = setup, .fini = teardown, .timeout = 60);

/* One operation in one transaction. */
typedef struct op {
  enum { OP_CREATE, OP_RESERVE, OP_RELEASE, OP_SHIP, OP_RESTOCK, OP_ARCHIVE } kind;
  const char *id; /* product or order */
  const char *sku;
  int64_t stock; /* initial stock or restock quantity */
  int64_t threshold;
  int32_t max_per_order;
  int64_t seq; /* restock sequence */
  const inventory_line *lines;
  size_t n;
  inventory_outcome outcome;
  bool done;
} op;

static status_code op_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  op *o = arg;
  events_envelope cause = SHOP__EVENTS__V1__EVENT_ENVELOPE__INIT;
  cause.id = "cause";
  cause.sequence = 1;
  switch (o->kind) {
  case OP_CREATE: {
    Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
    rule.low_stock_threshold = o->threshold;
    rule.max_quantity_per_order = o->max_per_order;
    Shop__Product__V1__ProductCreated e = SHOP__PRODUCT__V1__PRODUCT_CREATED__INIT;
    e.product_id = (char *)o->id;
    e.sku = (char *)(o->sku != NULL ? o->sku : "SKU");
    e.initial_stock = o->stock;
    e.inventory_rule = &rule;
    return inventory_product_created(tx, &ctx, &cause, &e, errbuf, errlen);
  }
  case OP_RESERVE:
    return inventory_reserve(tx, &ctx, &cause, o->id, o->lines, o->n, &o->outcome, errbuf, errlen);
  case OP_RELEASE:
    return inventory_release(tx, &ctx, &cause, o->id, &o->done, errbuf, errlen);
  case OP_SHIP:
    return inventory_ship(tx, &ctx, &cause, o->id, &o->done, errbuf, errlen);
  case OP_RESTOCK: {
    Shop__Product__V1__StockAdjusted e = SHOP__PRODUCT__V1__STOCK_ADJUSTED__INIT;
    e.product_id = (char *)o->id;
    e.quantity = o->stock;
    e.restock_sequence = o->seq;
    uint8_t buf[256];
    cause.data.len = shop__product__v1__stock_adjusted__pack(&e, buf);
    cause.data.data = buf;
    cause.sequence = o->seq + 1;
    return inventory_restock(tx, &ctx, &cause, &e, errbuf, errlen);
  }
  case OP_ARCHIVE:
    return inventory_product_archived(tx, o->id, errbuf, errlen);
  }
  return STATUS_INTERNAL;
}

static void product(char id[EVENTS_ID_SIZE], int64_t stock, int64_t threshold, int32_t max) {
  domtest_id(id);
  op o = {
      .kind = OP_CREATE, .id = id, .stock = stock, .threshold = threshold, .max_per_order = max};
  domtest_tx(db, op_cb, &o);
}

static inventory_outcome reserve(const char *order, const inventory_line *l, size_t n) {
  op o = {.kind = OP_RESERVE, .id = order, .lines = l, .n = n};
  domtest_tx(db, op_cb, &o);
  return o.outcome;
}

static bool settle(int kind, const char *order) {
  op o = {.kind = kind, .id = order};
  domtest_tx(db, op_cb, &o);
  return o.done;
}

static inventory_level level(const char *product_id) {
  inventory_level l;
  char err[512];
  cr_assert_eq(inventory_level_get(db, product_id, &l, err, sizeof err), STATUS_OK, "%s", err);
  return l;
}

static int reservation_status(const char *order) {
  int status = -1;
  char err[512];
  cr_assert_eq(inventory_reservation_get(db, order, &status, NULL, err, sizeof err), STATUS_OK,
               "%s", err);
  return status;
}

static void assert_level(const char *p, int64_t avail, int64_t res, int64_t ship, int64_t recv) {
  inventory_level l = level(p);
  cr_assert_eq(l.available, avail, "available %lld, want %lld", (long long)l.available,
               (long long)avail);
  cr_assert_eq(l.reserved, res, "reserved %lld, want %lld", (long long)l.reserved, (long long)res);
  cr_assert_eq(l.shipped, ship);
  cr_assert_eq(l.received, recv);
}

/* ---- Tests ------------------------------------------------------------------------- */

Test(inventory, a_new_product_starts_at_its_initial_stock_with_version_1) {
  char p[EVENTS_ID_SIZE];
  product(p, 7, 0, 0);
  assert_level(p, 7, 0, 0, 7);
  int64_t seq = 0;
  Shop__Inventory__V1__StockLevelChanged *e =
      (void *)domtest_last(db, p, &shop__inventory__v1__stock_level_changed__descriptor, &seq);
  cr_assert_not_null(e);
  cr_assert_eq(e->level->available, 7);
  cr_assert_eq(e->level->version, 1);
  cr_assert_eq(seq, 1);
  cr_assert_eq(e->cause, SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_INITIAL);
  protobuf_c_message_free_unpacked(&e->base, NULL);
  /* ProductCreated again (a replay) changes nothing. */
  op o = {.kind = OP_CREATE, .id = p, .stock = 100};
  domtest_tx(db, op_cb, &o);
  assert_level(p, 7, 0, 0, 7);
  cr_assert_eq(domtest_count(db, p, T_LEVEL), 1);
}

Test(inventory, an_order_reserves_every_line_or_none) {
  char a[EVENTS_ID_SIZE], b[EVENTS_ID_SIZE], o1[EVENTS_ID_SIZE], o2[EVENTS_ID_SIZE];
  product(a, 5, 0, 0);
  product(b, 1, 0, 0);
  domtest_id(o1);
  inventory_line l[2] = {{a, 2}, {b, 2}};
  cr_assert_eq(reserve(o1, l, 2), INVENTORY_REJECTED);
  assert_level(a, 5, 0, 0, 5);
  assert_level(b, 1, 0, 0, 1);
  cr_assert_eq(reservation_status(o1), RES_REJECTED);
  Shop__Inventory__V1__InventoryRejected *rej =
      (void *)domtest_last(db, o1, &shop__inventory__v1__inventory_rejected__descriptor, NULL);
  cr_assert_not_null(rej);
  cr_assert_eq(rej->n_rejected_lines, 1, "only the failing line is named");
  cr_assert_str_eq(rej->rejected_lines[0]->product_id, b);
  cr_assert_eq(rej->rejected_lines[0]->reason, R_OUT);
  cr_assert_eq(rej->rejected_lines[0]->requested, 2);
  cr_assert_eq(rej->rejected_lines[0]->available, 1);
  protobuf_c_message_free_unpacked(&rej->base, NULL);
  cr_assert_eq(domtest_count(db, a, T_LEVEL), 1, "no level change for a rejected order");

  domtest_id(o2);
  inventory_line ok[2] = {{b, 1}, {a, 2}};
  cr_assert_eq(reserve(o2, ok, 2), INVENTORY_RESERVED);
  assert_level(a, 3, 2, 0, 5);
  assert_level(b, 0, 1, 0, 1);
  cr_assert_eq(domtest_count(db, o2, T_RESERVED), 1);
  cr_assert_eq(level(a).version, 2);
  Shop__Inventory__V1__StockLevelChanged *e =
      (void *)domtest_last(db, b, &shop__inventory__v1__stock_level_changed__descriptor, NULL);
  cr_assert_eq(e->level->available, 0);
  cr_assert_eq(e->level->reserved, 1);
  cr_assert_str_eq(e->order_id, o2);
  cr_assert_eq(e->cause, SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESERVED);
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

Test(inventory, a_redelivered_order_reserves_nothing_more) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE];
  product(p, 10, 0, 0);
  domtest_id(o);
  inventory_line l[1] = {{p, 3}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_RESERVED);
  cr_assert_eq(reserve(o, l, 1), INVENTORY_UNCHANGED);
  assert_level(p, 7, 3, 0, 10);
  cr_assert_eq(domtest_count(db, o, T_RESERVED), 1);
}

Test(inventory, a_cancelled_order_releases_its_stock_once) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE];
  product(p, 10, 0, 0);
  domtest_id(o);
  inventory_line l[1] = {{p, 4}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_RESERVED);
  cr_assert(settle(OP_RELEASE, o));
  assert_level(p, 10, 0, 0, 10);
  cr_assert_not(settle(OP_RELEASE, o), "a second release gives nothing back");
  assert_level(p, 10, 0, 0, 10);
  cr_assert_eq(domtest_count(db, o, T_RELEASED), 1);
  cr_assert_eq(reservation_status(o), RES_RELEASED);
  int64_t seq = 0;
  void *m = domtest_last(db, o, &shop__inventory__v1__inventory_released__descriptor, &seq);
  cr_assert_eq(seq, 2, "the reservation's second event");
  protobuf_c_message_free_unpacked(m, NULL);
}

Test(inventory, a_rejected_order_releases_nothing) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE];
  product(p, 1, 0, 0);
  domtest_id(o);
  inventory_line l[1] = {{p, 4}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_REJECTED);
  cr_assert_not(settle(OP_RELEASE, o));
  assert_level(p, 1, 0, 0, 1);
  cr_assert_eq(domtest_count(db, o, T_RELEASED), 0);
}

Test(inventory, a_shipped_order_turns_its_reservation_into_shipped_stock) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE];
  product(p, 10, 0, 0);
  domtest_id(o);
  inventory_line l[1] = {{p, 4}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_RESERVED);
  cr_assert(settle(OP_SHIP, o));
  assert_level(p, 6, 0, 4, 10);
  cr_assert_not(settle(OP_SHIP, o));
  cr_assert_not(settle(OP_RELEASE, o), "shipped stock is not released");
  assert_level(p, 6, 0, 4, 10);
  cr_assert_eq(domtest_count(db, o, T_SHIPPED), 1);
}

Test(inventory, inventory_low_fires_once_per_downward_crossing) {
  char p[EVENTS_ID_SIZE], o[5][EVENTS_ID_SIZE];
  product(p, 10, 5, 0);
  inventory_line l3[1] = {{p, 3}}, l1[1] = {{p, 1}};
  for (int i = 0; i < 5; i++) domtest_id(o[i]);
  cr_assert_eq(reserve(o[0], l3, 1), INVENTORY_RESERVED); /* 7 */
  cr_assert_eq(domtest_count(db, p, T_LOW), 0);
  cr_assert_eq(reserve(o[1], l3, 1), INVENTORY_RESERVED); /* 4: crossed */
  cr_assert_eq(domtest_count(db, p, T_LOW), 1);
  cr_assert_eq(reserve(o[2], l1, 1), INVENTORY_RESERVED); /* 3: still below */
  cr_assert_eq(domtest_count(db, p, T_LOW), 1);
  Shop__Inventory__V1__InventoryLow *low =
      (void *)domtest_last(db, p, &shop__inventory__v1__inventory_low__descriptor, NULL);
  cr_assert_eq(low->available, 4);
  cr_assert_eq(low->threshold, 5);
  cr_assert_str_eq(low->sku, "SKU");
  protobuf_c_message_free_unpacked(&low->base, NULL);
  /* Back above by a release, then down again: a second alert. */
  cr_assert(settle(OP_RELEASE, o[0]));                    /* 6 */
  cr_assert_eq(reserve(o[3], l3, 1), INVENTORY_RESERVED); /* 3 */
  cr_assert_eq(domtest_count(db, p, T_LOW), 2);
}

Test(inventory, the_per_order_limit_and_archiving_reject_lines) {
  char p[EVENTS_ID_SIZE], q[EVENTS_ID_SIZE], o1[EVENTS_ID_SIZE], o2[EVENTS_ID_SIZE];
  product(p, 100, 0, 2);
  product(q, 100, 0, 0);
  domtest_id(o1);
  domtest_id(o2);
  inventory_line l[1] = {{p, 3}};
  cr_assert_eq(reserve(o1, l, 1), INVENTORY_REJECTED);
  Shop__Inventory__V1__InventoryRejected *rej =
      (void *)domtest_last(db, o1, &shop__inventory__v1__inventory_rejected__descriptor, NULL);
  cr_assert_eq(rej->rejected_lines[0]->reason, R_LIMIT);
  protobuf_c_message_free_unpacked(&rej->base, NULL);
  op a = {.kind = OP_ARCHIVE, .id = q};
  domtest_tx(db, op_cb, &a);
  inventory_line lq[1] = {{q, 1}};
  cr_assert_eq(reserve(o2, lq, 1), INVENTORY_REJECTED);
  rej = (void *)domtest_last(db, o2, &shop__inventory__v1__inventory_rejected__descriptor, NULL);
  cr_assert_eq(rej->rejected_lines[0]->reason, R_ARCHIVED);
  protobuf_c_message_free_unpacked(&rej->base, NULL);
}

Test(inventory, an_order_for_an_unknown_product_waits_for_its_product_created) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE];
  domtest_id(p);
  domtest_id(o);
  inventory_line l[1] = {{p, 2}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_WAITING);
  cr_assert_eq(reservation_status(o), RES_PENDING);
  cr_assert_eq(domtest_count(db, o, NULL), 0, "no answer yet");
  /* The product arrives: the waiting order is reserved in that same
   * transaction. */
  op c = {.kind = OP_CREATE, .id = p, .stock = 5};
  domtest_tx(db, op_cb, &c);
  cr_assert_eq(reservation_status(o), RES_RESERVED);
  assert_level(p, 3, 2, 0, 5);
  cr_assert_eq(domtest_count(db, o, T_RESERVED), 1);
}

Test(inventory, an_order_for_a_product_that_never_comes_is_rejected_after_the_wait) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE], err[512];
  domtest_id(p);
  domtest_id(o);
  inventory_line l[1] = {{p, 2}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_WAITING);
  int decided = -1;
  cr_assert_eq(inventory_expire_waiting(db, &ctx, &decided, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(reservation_status(o), RES_PENDING, "still within the wait");
  fake_now += ctx.unknown_product_wait_ms;
  cr_assert_eq(inventory_expire_waiting(db, &ctx, &decided, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_geq(decided, 1);
  cr_assert_eq(reservation_status(o), RES_REJECTED);
  Shop__Inventory__V1__InventoryRejected *rej =
      (void *)domtest_last(db, o, &shop__inventory__v1__inventory_rejected__descriptor, NULL);
  cr_assert_eq(rej->rejected_lines[0]->reason, R_UNKNOWN);
  cr_assert_eq(rej->rejected_lines[0]->available, 0);
  protobuf_c_message_free_unpacked(&rej->base, NULL);
}

Test(inventory, an_order_cancelled_while_waiting_never_reserves) {
  char p[EVENTS_ID_SIZE], o[EVENTS_ID_SIZE];
  domtest_id(p);
  domtest_id(o);
  inventory_line l[1] = {{p, 2}};
  cr_assert_eq(reserve(o, l, 1), INVENTORY_WAITING);
  cr_assert_not(settle(OP_RELEASE, o));
  cr_assert_eq(reservation_status(o), INVENTORY_RESERVATION_CLOSED);
  op c = {.kind = OP_CREATE, .id = p, .stock = 5};
  domtest_tx(db, op_cb, &c);
  assert_level(p, 5, 0, 0, 5);
  cr_assert_eq(domtest_count(db, o, NULL), 0);
}

Test(inventory, restocks_apply_once_and_in_sequence_order) {
  char p[EVENTS_ID_SIZE];
  product(p, 1, 0, 0);
  op r2 = {.kind = OP_RESTOCK, .id = p, .stock = 20, .seq = 2};
  domtest_tx(db, op_cb, &r2);
  assert_level(p, 1, 0, 0, 1); /* held behind the missing first restock */
  op r1 = {.kind = OP_RESTOCK, .id = p, .stock = 10, .seq = 1};
  domtest_tx(db, op_cb, &r1);
  assert_level(p, 31, 0, 0, 31);
  domtest_tx(db, op_cb, &r1); /* a repeat */
  assert_level(p, 31, 0, 0, 31);
  cr_assert_eq(level(p).version, 3);
  Shop__Inventory__V1__StockLevelChanged *e =
      (void *)domtest_last(db, p, &shop__inventory__v1__stock_level_changed__descriptor, NULL);
  cr_assert_eq(e->restock_sequence, 2);
  cr_assert_eq(e->cause, SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESTOCKED);
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

/* ---- Concurrency ------------------------------------------------------------------- */

#define RACERS 100

typedef struct racer {
  pthread_t t;
  const char *product_id;
  char order_id[EVENTS_ID_SIZE];
  inventory_outcome outcome;
  status_code st;
  char err[512];
  pthread_barrier_t *start;
} racer;

static status_code race_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  racer *r = arg;
  inventory_line l[1] = {{r->product_id, 1}};
  return inventory_reserve(tx, &ctx, NULL, r->order_id, l, 1, &r->outcome, errbuf, errlen);
}

static void *race_main(void *arg) {
  racer *r = arg;
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  pthread_barrier_wait(r->start);
  r->st = db_tx_run(c, race_cb, r, 50, r->err, sizeof r->err);
  db_close(c);
  return NULL;
}

Test(inventory, a_hundred_concurrent_one_unit_orders_against_stock_ten_reserve_exactly_ten) {
  char p[EVENTS_ID_SIZE];
  product(p, 10, 0, 0);
  static racer r[RACERS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, RACERS);
  for (int i = 0; i < RACERS; i++) {
    r[i] = (racer){.product_id = p, .start = &start};
    domtest_id(r[i].order_id);
    cr_assert_eq(pthread_create(&r[i].t, NULL, race_main, &r[i]), 0);
  }
  int reserved = 0, rejected = 0;
  for (int i = 0; i < RACERS; i++) {
    pthread_join(r[i].t, NULL);
    cr_assert_eq(r[i].st, STATUS_OK, "racer %d: %s: %s", i, status_name(r[i].st), r[i].err);
    if (r[i].outcome == INVENTORY_RESERVED) reserved++;
    if (r[i].outcome == INVENTORY_REJECTED) rejected++;
  }
  pthread_barrier_destroy(&start);
  cr_assert_eq(reserved, 10);
  cr_assert_eq(rejected, 90);
  assert_level(p, 0, 10, 0, 10);
  inventory_level l = level(p);
  cr_assert_eq(l.version, 11, "one version per reservation");
  cr_assert_eq(domtest_count(db, p, T_LEVEL), 11);
  for (int i = 0; i < RACERS; i++) {
    int want = r[i].outcome == INVENTORY_RESERVED ? RES_RESERVED : RES_REJECTED;
    cr_assert_eq(reservation_status(r[i].order_id), want);
    cr_assert_eq(domtest_count(db, r[i].order_id, NULL), 1, "one answer per order");
  }
}

/* ---- The consumer's batch ------------------------------------------------------------ */

typedef struct order_msg {
  Shop__Order__V1__OrderCreated created;
  Shop__Order__V1__OrderLine line[2], *lines[2];
} order_msg;

static void order_created(order_msg *m, const char *order, const char *p1, int q1, const char *p2,
                          int q2) {
  shop__order__v1__order_created__init(&m->created);
  m->created.order_id = (char *)order;
  const char *p[2] = {p1, p2};
  int q[2] = {q1, q2};
  for (int i = 0; i < 2; i++) {
    shop__order__v1__order_line__init(&m->line[i]);
    m->line[i].product_id = (char *)p[i];
    m->line[i].quantity = q[i];
    m->lines[i] = &m->line[i];
  }
  m->created.lines = m->lines;
  m->created.n_lines = p2 != NULL ? 2 : 1;
}

static int64_t level_version(const char *p) {
  int64_t seq = 0;
  Shop__Inventory__V1__StockLevelChanged *e =
      (void *)domtest_last(db, p, &shop__inventory__v1__stock_level_changed__descriptor, &seq);
  cr_assert_not_null(e);
  cr_assert_eq(e->level->version, seq);
  protobuf_c_message_free_unpacked(&e->base, NULL);
  return seq;
}

Test(inventory, a_batch_of_orders_reserves_as_one_by_one_whatever_else_it_holds) {
  char p[EVENTS_ID_SIZE], q[EVENTS_ID_SIZE], u[EVENTS_ID_SIZE], o[7][EVENTS_ID_SIZE];
  product(p, 10, 5, 0);
  product(q, 3, 0, 0);
  domtest_id(u); /* never created */
  for (int i = 0; i < 7; i++) domtest_id(o[i]);
  order_msg m[5];
  order_created(&m[0], o[0], p, 3, q, 1);    /* p 7, q 2 */
  order_created(&m[1], o[1], p, 3, NULL, 0); /* p 4: below 5, InventoryLow */
  order_created(&m[2], o[2], q, 5, NULL, 0); /* q has 2: rejected */
  order_created(&m[3], o[3], u, 1, NULL, 0); /* unknown: waits (row by row from here) */
  order_created(&m[4], o[4], p, 1, NULL, 0); /* p 3 */
  Shop__Order__V1__OrderCancelled cancel = SHOP__ORDER__V1__ORDER_CANCELLED__INIT;
  cancel.order_id = o[0]; /* p 6, q 3 */
  const ProtobufCMessage *ms[] = {&m[0].created.base, &m[1].created.base, &m[2].created.base,
                                  &m[3].created.base, &m[4].created.base, &cancel.base};
  size_t n = sizeof ms / sizeof ms[0];
  domtest_event ev[sizeof ms / sizeof ms[0]];
  for (int round = 0; round < 2; round++) {
    /* The second round is a redelivery past the inbox: nothing changes. */
    for (size_t i = 0; i < n; i++) domtest_event_make(&ev[i], ms[i]);
    domtest_consume(db, &inventory_consumer, ev, n, &ctx);
    assert_level(p, 6, 4, 0, 10);
    assert_level(q, 3, 0, 0, 3);
    cr_assert_eq(reservation_status(o[0]), RES_RELEASED);
    cr_assert_eq(reservation_status(o[1]), RES_RESERVED);
    cr_assert_eq(reservation_status(o[2]), RES_REJECTED);
    cr_assert_eq(reservation_status(o[3]), RES_PENDING);
    cr_assert_eq(reservation_status(o[4]), RES_RESERVED);
    cr_assert_eq(domtest_count(db, o[0], T_RESERVED), 1);
    cr_assert_eq(domtest_count(db, o[0], T_RELEASED), 1);
    cr_assert_eq(domtest_count(db, o[1], T_RESERVED), 1);
    cr_assert_eq(domtest_count(db, o[2], T_REJECTED), 1);
    cr_assert_eq(domtest_count(db, o[3], NULL), 0);
    cr_assert_eq(domtest_count(db, o[4], T_RESERVED), 1);
    cr_assert_eq(domtest_count(db, p, T_LOW), 1);
    /* 1 at creation, then o0, o1, o4 and the release: one version each. */
    cr_assert_eq(level_version(p), 5);
    cr_assert_eq(level_version(q), 3);
    cr_assert_eq(domtest_count(db, p, T_LEVEL), 5);
  }
  Shop__Inventory__V1__InventoryRejected *rej =
      (void *)domtest_last(db, o[2], &shop__inventory__v1__inventory_rejected__descriptor, NULL);
  cr_assert_eq(rej->n_rejected_lines, 1);
  cr_assert_eq(rej->rejected_lines[0]->reason, R_OUT);
  cr_assert_eq(rej->rejected_lines[0]->available, 2);
  protobuf_c_message_free_unpacked(&rej->base, NULL);

  /* A batch of new orders only: every level is written back once. */
  order_msg m2[2];
  order_created(&m2[0], o[5], p, 1, q, 1);
  order_created(&m2[1], o[6], p, 2, NULL, 0);
  domtest_event ev2[2];
  domtest_event_make(&ev2[0], &m2[0].created.base);
  domtest_event_make(&ev2[1], &m2[1].created.base);
  domtest_consume(db, &inventory_consumer, ev2, 2, &ctx);
  assert_level(p, 3, 7, 0, 10);
  assert_level(q, 2, 1, 0, 3);
  cr_assert_eq(level(p).version, 7);
  cr_assert_eq(level_version(p), 7);
  cr_assert_eq(level(q).version, 4);
  /* The waiting one reserves when its product comes, as row by row. */
  op c = {.kind = OP_CREATE, .id = u, .stock = 5};
  domtest_tx(db, op_cb, &c);
  cr_assert_eq(reservation_status(o[3]), RES_RESERVED);
  assert_level(u, 4, 1, 0, 5);
}
