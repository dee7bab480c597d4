/* The transactional outbox: appending rows in the caller's transaction,
 * the event constructor, and the table helpers. The relay is relay.c. See
 * outbox.h for the contract. */
#include "events/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events_internal.h"
#include "log/log.h"
#include "topology/topology.h"

static bool str_empty(const char *s) { return s == NULL || s[0] == '\0'; }

/* --- outbox_append and the table helpers ----------------------------------- */

status_code outbox_append(db_conn *tx, const events_envelope *ev, char id_out[EVENTS_ID_SIZE],
                          char *errbuf, size_t errlen) {
  if (!db_in_tx(tx)) {
    if (db_link_lost(tx)) {
      status_seterr(errbuf, errlen, "connection lost inside the transaction");
      return STATUS_UNAVAILABLE;
    }
    status_seterr(errbuf, errlen, "outbox_append needs an open transaction on its connection");
    return STATUS_FAILED_PRECONDITION;
  }
  events_envelope e = *ev;
  char id[EVENTS_ID_SIZE];
  events_timestamp now = SHOP__COMMON__V1__TIMESTAMP__INIT;
  if (str_empty(e.id)) {
    events_uuid_v7(id);
    e.id = id;
  }
  if (e.time == NULL) {
    events_now(&now);
    e.time = &now;
  }
  /* protobuf-c packs NULL strings as empty, but say so explicitly. */
  char empty[] = "";
  if (e.subject == NULL) e.subject = empty;
  if (e.correlation_id == NULL) e.correlation_id = empty;
  if (e.actor == NULL) e.actor = empty;
  /* An event continues the trace of the work that appends it (log.h). */
  if (str_empty(e.traceparent)) e.traceparent = (char *)log_current_traceparent();
  status_code st = events_envelope_validate(&e, errbuf, errlen);
  if (st != STATUS_OK) return st;
  uint8_t stackbuf[4096];
  size_t len = shop__events__v1__event_envelope__get_packed_size(&e);
  uint8_t *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
  if (buf == NULL) {
    status_seterr(errbuf, errlen, "out of memory packing an event");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  shop__events__v1__event_envelope__pack(&e, buf);
  /* Sent with the commit, every row of the transaction in one statement
   * (db_insert_later): the ids, taken then, still follow the order of the
   * aggregate's lock (see the header). */
  db_value p[3] = {DB_STR(e.id), DB_STR(e.topic), DB_BLOB(buf, len)};
  st = db_insert_later(tx, "INSERT INTO outbox (event_id, topic, envelope)", p, 3, errbuf, errlen);
  if (buf != stackbuf) free(buf);
  if (st == STATUS_OK && id_out != NULL && e.id == id) memcpy(id_out, id, EVENTS_ID_SIZE);
  return st;
}

static status_code sink_append_cb(void *self, db_conn *tx, const events_envelope *ev, char *errbuf,
                                  size_t errlen) {
  (void)self;
  return outbox_append(tx, ev, NULL, errbuf, errlen);
}

static void sink_committed_cb(void *self) { outbox_relay_nudge(self); }

outbox_sink outbox_sink_of(outbox_relay *relay, const char *program) {
  return (outbox_sink){.append_cb = sink_append_cb,
                       .committed_cb = sink_committed_cb,
                       .self = relay,
                       .program = program};
}

outbox_cause outbox_cause_of_event(const events_envelope *cause) {
  outbox_cause c = {0};
  if (cause == NULL) return c;
  c.correlation_id = !str_empty(cause->correlation_id) ? cause->correlation_id : cause->id;
  c.traceparent = cause->traceparent;
  return c;
}

status_code outbox_emit(const outbox_sink *sink, db_conn *tx, const outbox_cause *cause,
                        const char *aggregate_id, int64_t version, const ProtobufCMessage *m,
                        char *errbuf, size_t errlen) {
  const char *topic = topology_topic_of_type(m->descriptor->name);
  if (topic == NULL) {
    status_seterr(errbuf, errlen, "%s belongs to no domain topic", m->descriptor->name);
    return STATUS_INVALID_ARGUMENT;
  }
  uint8_t stackbuf[4096];
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
  if (buf == NULL) {
    status_seterr(errbuf, errlen, "out of memory packing %s", m->descriptor->name);
    return STATUS_INTERNAL;
  }
  protobuf_c_message_pack(m, buf);
  const char *program = sink->program != NULL ? sink->program : "";
  char source[160];
  snprintf(source, sizeof source, "/shop/%s", program);
  const char *actor = cause != NULL && !str_empty(cause->actor) ? cause->actor : program;
  events_envelope env = SHOP__EVENTS__V1__EVENT_ENVELOPE__INIT;
  env.source = source;
  env.type = (char *)m->descriptor->name;
  env.subject = (char *)(aggregate_id != NULL ? aggregate_id : "");
  env.key = env.subject;
  env.topic = (char *)topic;
  env.sequence = version;
  env.actor = (char *)actor;
  env.correlation_id =
      (char *)(cause != NULL && cause->correlation_id != NULL ? cause->correlation_id : "");
  env.traceparent = (char *)(cause != NULL && cause->traceparent != NULL ? cause->traceparent : "");
  env.data.data = buf;
  env.data.len = n;
  status_code st = sink->append_cb(sink->self, tx, &env, errbuf, errlen);
  if (buf != stackbuf) free(buf);
  return st;
}

status_code outbox_backlog(db_conn *c, int64_t *unsent, int64_t *parked, char *errbuf,
                           size_t errlen) {
  db_rows *r;
  status_code st = db_query(c,
                            "SELECT COALESCE(SUM(state = 0), 0), COALESCE(SUM(state = 2), 0)"
                            " FROM outbox WHERE state IN (0, 2)",
                            NULL, 0, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  *unsent = 0;
  if (parked != NULL) *parked = 0;
  if (db_rows_next(r)) {
    *unsent = db_rows_i64(r, 0);
    if (parked != NULL) *parked = db_rows_i64(r, 1);
  }
  db_rows_free(r);
  return STATUS_OK;
}

status_code outbox_unpark(db_conn *c, int64_t *count, char *errbuf, size_t errlen) {
  uint64_t n = 0;
  status_code st = db_exec(c, "UPDATE outbox SET state = 0, error = NULL WHERE state = 2", NULL, 0,
                           &n, NULL, errbuf, errlen);
  if (count != NULL) *count = (int64_t)n;
  return st;
}

status_code outbox_purge(db_conn *c, int retention_s, int64_t *deleted, char *errbuf,
                         size_t errlen) {
  int64_t total = 0;
  status_code st;
  for (;;) {
    uint64_t n = 0;
    db_value p[1] = {DB_I64(retention_s)};
    st = db_exec(c,
                 "DELETE FROM outbox WHERE state = 1 AND sent_at < NOW(6) - INTERVAL ? SECOND"
                 " LIMIT 1000",
                 p, 1, &n, NULL, errbuf, errlen);
    if (st != STATUS_OK) break;
    total += (int64_t)n;
    if (n < 1000) break;
  }
  if (deleted != NULL) *deleted = total;
  return st;
}

/* ---- backlog age, for metrics ---------------------------------------------------- */

status_code outbox_oldest_unsent_age_ms(db_conn *c, int64_t *age_ms, char *errbuf, size_t errlen) {
  /* The lowest unsent id is the oldest row: one step down the
   * (state, id) index. */
  status_code st =
      db_query_i64(c,
                   "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, CURRENT_TIMESTAMP(6))"
                   " DIV 1000 FROM outbox WHERE state = 0 ORDER BY id LIMIT 1",
                   NULL, 0, age_ms, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    *age_ms = 0;
    return STATUS_OK;
  }
  if (st == STATUS_OK && *age_ms < 0) *age_ms = 0;
  return st;
}
