/* Reading the log back as events (audit.h, audit_replay). */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "clock/clock.h"

#define REPLAY_BATCH 500

/* One row of the SELECT below as the envelope a consumer would have read;
 * borrows from r. */
static void row_envelope(db_rows *r, events_envelope *e, Shop__Common__V1__Timestamp *ts,
                         consumer_msg *m) {
  shop__events__v1__event_envelope__init(e);
  shop__common__v1__timestamp__init(ts);
  e->id = (char *)db_rows_str(r, 1, NULL);
  e->topic = (char *)db_rows_str(r, 2, NULL);
  e->type = (char *)db_rows_str(r, 5, NULL);
  e->source = (char *)db_rows_str(r, 6, NULL);
  e->actor = (char *)db_rows_str(r, 7, NULL);
  e->subject = (char *)db_rows_str(r, 8, NULL);
  e->sequence = db_rows_i64(r, 9);
  clock_timestamp_set(ts, db_rows_i64(r, 10));
  e->time = ts;
  e->correlation_id = (char *)db_rows_str(r, 11, NULL);
  e->traceparent = (char *)db_rows_str(r, 12, NULL);
  e->key = (char *)db_rows_str(r, 13, NULL);
  size_t dl = 0;
  e->data.data = (uint8_t *)db_rows_str(r, 14, &dl);
  e->data.len = dl;
  *m = (consumer_msg){.env = e,
                      .topic = e->topic,
                      .partition = (int32_t)db_rows_i64(r, 3),
                      .offset = db_rows_i64(r, 4)};
}

status_code audit_replay(db_conn *log, const char *const *topics, size_t n_topics, db_conn *tx,
                         audit_replay_cb apply, void *self, int64_t *applied, char *errbuf,
                         size_t errlen) {
  *applied = 0;
  if (n_topics == 0 || n_topics > AUDIT_REPLAY_TOPICS_MAX) {
    snprintf(errbuf, errlen, "audit_replay: %zu topics (1..%d)", n_topics, AUDIT_REPLAY_TOPICS_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  char sql[640];
  int len = snprintf(sql, sizeof sql,
                     "SELECT row_id, event_id, topic, kpartition, koffset, type, source, actor,"
                     " subject, sequence, event_time_ms, correlation_id, traceparent, ev_key, data"
                     " FROM audit_log WHERE row_id > ? AND topic IN (?");
  for (size_t i = 1; i < n_topics; i++) len += snprintf(sql + len, sizeof sql - len, ", ?");
  snprintf(sql + len, sizeof sql - len, ") ORDER BY row_id LIMIT %d", REPLAY_BATCH);
  int64_t after = 0;
  for (;;) {
    db_value p[1 + AUDIT_REPLAY_TOPICS_MAX];
    p[0] = DB_I64(after);
    for (size_t i = 0; i < n_topics; i++) p[1 + i] = DB_STR(topics[i]);
    db_rows *r = NULL;
    status_code st = db_query(log, sql, p, 1 + n_topics, &r, errbuf, errlen);
    if (st != STATUS_OK) return st;
    st = db_begin(tx, errbuf, errlen);
    size_t n = 0;
    while (st == STATUS_OK && db_rows_next(r)) {
      events_envelope e;
      Shop__Common__V1__Timestamp ts;
      consumer_msg m;
      after = db_rows_i64(r, 0);
      row_envelope(r, &e, &ts, &m);
      st = apply(self, &m, tx, errbuf, errlen);
      n++;
    }
    db_rows_free(r);
    if (st == STATUS_OK) st = db_commit(tx, errbuf, errlen);
    if (st != STATUS_OK) {
      db_rollback(tx);
      return st;
    }
    *applied += (int64_t)n;
    if (n < REPLAY_BATCH) break;
  }
  return STATUS_OK;
}
