/* See domtest.h. */
#include "domtest.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testenv.h"

static pthread_mutex_t migrate_mu = PTHREAD_MUTEX_INITIALIZER;

db_conn *domtest_db(const char *component, const db_migration *migs, size_t n) {
  char err[512];
  pthread_mutex_lock(&migrate_mu);
  db_conn *m = testenv_db_connect("shop_migrate", "shop_test");
  status_code st = events_migrate(m, NULL, err, sizeof err);
  if (st == STATUS_OK && component != NULL)
    st = db_migrate(m, component, migs, n, NULL, err, sizeof err);
  if (st == STATUS_OK)
    st = db_exec(m,
                 "CREATE TABLE IF NOT EXISTS domtest_events (id BIGINT NOT NULL AUTO_INCREMENT, "
                 "event_key VARCHAR(191) NOT NULL, type VARCHAR(255) NOT NULL, sequence BIGINT "
                 "NOT NULL, data MEDIUMBLOB NOT NULL, PRIMARY KEY (id), KEY (event_key, type)) "
                 "ENGINE=InnoDB",
                 NULL, 0, NULL, NULL, err, sizeof err);
  db_close(m);
  pthread_mutex_unlock(&migrate_mu);
  cr_assert_eq(st, STATUS_OK, "migrations of %s: %s", component, err);
  return testenv_db_connect("shop_test", "shop_test");
}

static status_code sink_append_cb(void *self, db_conn *tx, const events_envelope *ev, char *errbuf,
                                  size_t errlen) {
  db_value v[4] = {DB_STR(ev->key), DB_STR(ev->type), DB_I64(ev->sequence),
                   DB_BLOB(ev->data.data, ev->data.len)};
  return db_exec(tx,
                 "INSERT INTO domtest_events (event_key, type, sequence, data) VALUES (?, ?, ?, ?)",
                 v, 4, NULL, NULL, errbuf, errlen);
}

static void sink_committed_cb(void *self) {}

outbox_sink domtest_sink(void) {
  return (outbox_sink){.append_cb = sink_append_cb, .committed_cb = sink_committed_cb};
}

int domtest_count(db_conn *c, const char *key, const char *type) {
  char err[512];
  int64_t n = 0;
  status_code st;
  if (type != NULL) {
    db_value v[2] = {DB_STR(key), DB_STR(type)};
    st = db_query_i64(c, "SELECT COUNT(*) FROM domtest_events WHERE event_key = ? AND type = ?", v,
                      2, &n, err, sizeof err);
  } else {
    db_value v[1] = {DB_STR(key)};
    st = db_query_i64(c, "SELECT COUNT(*) FROM domtest_events WHERE event_key = ?", v, 1, &n, err,
                      sizeof err);
  }
  cr_assert_eq(st, STATUS_OK, "%s", err);
  return (int)n;
}

ProtobufCMessage *domtest_last(db_conn *c, const char *key, const ProtobufCMessageDescriptor *desc,
                               int64_t *sequence) {
  char err[512];
  db_value v[2] = {DB_STR(key), DB_STR(desc->name)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            "SELECT data, sequence FROM domtest_events WHERE event_key = ? AND "
                            "type = ? ORDER BY id DESC LIMIT 1",
                            v, 2, &r, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s", err);
  ProtobufCMessage *m = NULL;
  if (db_rows_next(r)) {
    size_t len = 0;
    const char *data = db_rows_str(r, 0, &len);
    m = protobuf_c_message_unpack(desc, NULL, len, (const uint8_t *)data);
    cr_assert_not_null(m, "undecodable %s", desc->name);
    if (sequence != NULL) *sequence = db_rows_i64(r, 1);
  }
  db_rows_free(r);
  return m;
}

void domtest_id(char out[EVENTS_ID_SIZE]) { events_uuid_v7(out); }

void domtest_tx(db_conn *c, db_tx_fn fn, void *arg) {
  char err[512] = "";
  status_code st = db_tx_run(c, fn, arg, 20, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "transaction: %s: %s", status_name(st), err);
}

void domtest_event_make(domtest_event *e, const ProtobufCMessage *m) {
  shop__events__v1__event_envelope__init(&e->env);
  domtest_id(e->id);
  e->env.id = e->id;
  e->env.type = (char *)m->descriptor->name;
  e->env.source = "/shop/test";
  e->env.correlation_id = "corr-batch";
  cr_assert_lt(protobuf_c_message_get_packed_size(m), sizeof e->data);
  e->env.data.len = protobuf_c_message_pack(m, e->data);
  e->env.data.data = e->data;
}

typedef struct consume_arg {
  const consumer_spec *spec;
  domtest_event *events;
  size_t n;
  void *arg;
} consume_arg;

static status_code consume_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  consume_arg *a = arg;
  consumer_msg *msgs = calloc(a->n, sizeof *msgs);
  if (msgs == NULL) return STATUS_RESOURCE_EXHAUSTED;
  for (size_t i = 0; i < a->n; i++) msgs[i] = (consumer_msg){.env = &a->events[i].env};
  status_code st = consumer_spec_apply(tx, a->spec, msgs, a->n, a->arg, errbuf, errlen);
  if (a->spec->ended != NULL) a->spec->ended(tx, a->arg);
  free(msgs);
  return st;
}

void domtest_consume(db_conn *c, const consumer_spec *spec, domtest_event *events, size_t n,
                     void *arg) {
  consume_arg a = {.spec = spec, .events = events, .n = n, .arg = arg};
  domtest_tx(c, consume_cb, &a);
}
