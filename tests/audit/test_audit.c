/* The hash-chained audit log (internal/audit/audit.h) against the test
 * profile's MariaDB: appends in order, once; the chain verifies; a row
 * changed through the root account is named; two writers keep one linear
 * chain; the audit account may not UPDATE. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "domtest.h"
#include "events/events.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "testenv.h"

#define N_EV 8

typedef struct batch {
  char ids[N_EV][EVENTS_ID_SIZE];
  char subject[EVENTS_ID_SIZE];
  Shop__Common__V1__Timestamp ts[N_EV];
  events_envelope env[N_EV];
  consumer_msg msgs[N_EV];
} batch;

static void batch_make(batch *b, const char *topic) {
  domtest_id(b->subject);
  for (int i = 0; i < N_EV; i++) {
    domtest_id(b->ids[i]);
    shop__common__v1__timestamp__init(&b->ts[i]);
    b->ts[i].seconds = 1700000000 + i;
    shop__events__v1__event_envelope__init(&b->env[i]);
    b->env[i].id = b->ids[i];
    b->env[i].source = "test";
    b->env[i].type = "shop.order.v1.OrderCreated";
    b->env[i].subject = b->subject;
    b->env[i].key = b->subject;
    b->env[i].sequence = i + 1;
    b->env[i].actor = "tester";
    b->env[i].time = &b->ts[i];
    b->env[i].data.data = (uint8_t *)b->ids[i];
    b->env[i].data.len = 10;
    b->msgs[i] = (consumer_msg){.env = &b->env[i],
                                .topic = topic,
                                .partition = i % 3,
                                .offset = 100 + i,
                                .timestamp_ms = 0};
  }
}

static db_conn *audit_db(void) {
  return domtest_db("audit", audit_migrations, audit_migrations_count);
}

static int64_t row_of(db_conn *c, const char *event_id) {
  int64_t row = 0;
  char err[256];
  db_value p[1] = {DB_STR(event_id)};
  cr_assert_eq(db_query_i64(c, "SELECT row_id FROM audit_log WHERE event_id = ?", p, 1, &row, err,
                            sizeof err),
               STATUS_OK, "%s", err);
  return row;
}

static void append_ok(db_conn *c, batch *b, size_t n, int expect_added) {
  char err[512];
  int added = -1;
  cr_assert_eq(audit_append(c, b->msgs, n, 10, &added, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(added, expect_added);
}

Test(audit_log, appends_each_event_once_in_the_order_given) {
  db_conn *c = audit_db();
  batch b;
  batch_make(&b, "shop.order.events.v1");
  append_ok(c, &b, N_EV, N_EV);
  append_ok(c, &b, N_EV, 0); /* a redelivery appends nothing */
  int64_t first = row_of(c, b.ids[0]);
  for (int i = 1; i < N_EV; i++) cr_assert_eq(row_of(c, b.ids[i]), first + i);
  char err[512];
  audit_verify_result v;
  cr_assert_eq(audit_verify(c, first, 0, &v, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(v.ok, "%s", v.detail);
  cr_assert_geq(v.rows_checked, N_EV);
  db_close(c);
}

static void root_sql(const char *sql) {
  const char *sock = getenv("SHOP_MYSQL_SOCKET");
  cr_assert_not_null(sock, "SHOP_MYSQL_SOCKET is not set: run through make test");
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "mariadb --no-defaults -S '%s' -u root -e \"%s\"", sock, sql);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(audit_log, verify_names_a_row_changed_through_the_root_account) {
  db_conn *c = audit_db();
  batch b;
  batch_make(&b, "shop.payment.events.v1");
  append_ok(c, &b, N_EV, N_EV);
  int64_t first = row_of(c, b.ids[0]);
  int64_t bad = row_of(c, b.ids[3]);
  char sql[256];
  snprintf(sql, sizeof sql, "UPDATE shop_test.audit_log SET actor = 'mallory' WHERE row_id = %lld",
           (long long)bad);
  root_sql(sql);
  char err[512];
  audit_verify_result v;
  cr_assert_eq(audit_verify(c, first, N_EV, &v, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_not(v.ok);
  cr_assert_eq(v.bad_row_id, bad);
  cr_assert_str_eq(v.bad_event_id, b.ids[3]);
  cr_assert_eq(v.fault, SHOP__AUDIT__V1__CHAIN_FAULT__CHAIN_FAULT_HASH_MISMATCH);
  /* Put it back, so that the log of shop_test verifies again. */
  snprintf(sql, sizeof sql, "UPDATE shop_test.audit_log SET actor = 'tester' WHERE row_id = %lld",
           (long long)bad);
  root_sql(sql);
  cr_assert_eq(audit_verify(c, first, N_EV, &v, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(v.ok, "%s", v.detail);
  db_close(c);
}

typedef struct writer {
  batch b;
  status_code st;
  char err[512];
} writer;

static void *writer_main(void *arg) {
  writer *w = arg;
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  for (int i = 0; i < N_EV && w->st == STATUS_OK; i++) {
    int added = 0;
    w->st = audit_append(c, &w->b.msgs[i], 1, 30, &added, w->err, sizeof w->err);
  }
  db_close(c);
  return NULL;
}

Test(audit_log, two_writers_keep_one_linear_chain) {
  db_conn *c = audit_db();
  writer w[2];
  memset(w, 0, sizeof w);
  pthread_t t[2];
  for (int i = 0; i < 2; i++) {
    batch_make(&w[i].b, "shop.inventory.events.v1");
    pthread_create(&t[i], NULL, writer_main, &w[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 2; i++) cr_assert_eq(w[i].st, STATUS_OK, "%s", w[i].err);
  int64_t first = row_of(c, w[0].b.ids[0]);
  int64_t other = row_of(c, w[1].b.ids[0]);
  if (other < first) first = other;
  char err[512];
  audit_verify_result v;
  cr_assert_eq(audit_verify(c, first, 0, &v, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(v.ok, "%s", v.detail);
  cr_assert_geq(v.rows_checked, 2 * N_EV);
  db_close(c);
}

Test(audit_log, the_audit_account_may_not_update_or_delete) {
  char err[512];
  db_conn *m = testenv_db_connect("shop_migrate", "shop_audit");
  cr_assert_eq(
      db_migrate(m, "audit", audit_migrations, audit_migrations_count, NULL, err, sizeof err),
      STATUS_OK, "%s", err);
  db_close(m);
  db_conn *c = testenv_db_connect("shop_audit", "shop_audit");
  status_code st = db_exec(c, "UPDATE audit_log SET actor = 'x' WHERE row_id = 1", NULL, 0, NULL,
                           NULL, err, sizeof err);
  cr_assert_neq(st, STATUS_OK);
  cr_assert(strstr(err, "denied") != NULL, "%s", err);
  st = db_exec(c, "DELETE FROM audit_log WHERE row_id = 1", NULL, 0, NULL, NULL, err, sizeof err);
  cr_assert_neq(st, STATUS_OK);
  cr_assert(strstr(err, "denied") != NULL, "%s", err);
  db_close(c);
}
