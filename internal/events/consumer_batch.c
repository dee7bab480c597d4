/* A batch of a consumer: the inbox, the transaction, offsets. See
 * consumer.h for the contract. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crash/crash.h"
#include "events/consumer_internal.h"
#include "events/events_internal.h"
#include "log/log.h"

/* Event ids per inbox insert (two values each), and per lookup of the
 * slow path (one statement text with SEEN_CHUNK placeholders). */
#define INBOX_CHUNK 128
#define SEEN_CHUNK 32

typedef enum { TX_OK, TX_TRANSIENT, TX_REJECT } tx_outcome;

/* --- Offsets ---------------------------------------------------------------------- */

/* Stores, per partition, the offset after the last done record that has
 * no unfinished record before it, so a crash never skips one. */
static void store_done(consumer *c, size_t n) {
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
  rd_kafka_topic_partition_list_t *blocked = rd_kafka_topic_partition_list_new(4);
  for (size_t i = 0; i < n; i++) {
    const rd_kafka_message_t *m = c->items[i].m;
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (rd_kafka_topic_partition_list_find(blocked, topic, m->partition) != NULL) continue;
    if (!c->items[i].done) {
      rd_kafka_topic_partition_list_add(blocked, topic, m->partition);
      continue;
    }
    rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(list, topic, m->partition);
    if (p == NULL) p = rd_kafka_topic_partition_list_add(list, topic, m->partition);
    p->offset = m->offset + 1;
  }
  if (list->cnt > 0) {
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      /* A partition revoked meanwhile: the next owner redelivers, the
       * inbox skips. */
      log_debug(NULL, "consumer %s: storing offsets: %s", c->group, rd_kafka_err2str(e));
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_topic_partition_list_destroy(blocked);
}

/* Seeks every partition back to its first unfinished record, so the loop
 * polls them again. */
static void rewind_unfinished(consumer *c, size_t n) {
  store_done(c, n);
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
  for (size_t i = 0; i < n; i++) {
    if (c->items[i].done) continue;
    const rd_kafka_message_t *m = c->items[i].m;
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(list, topic, m->partition);
    if (p == NULL) {
      p = rd_kafka_topic_partition_list_add(list, topic, m->partition);
      p->offset = m->offset;
    } else if (m->offset < p->offset) {
      p->offset = m->offset;
    }
  }
  if (list->cnt > 0) {
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, list, 10000);
    if (e != NULL) {
      log_warn(NULL, "consumer %s: rewinding: %s", c->group, rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
}

/* --- One transaction ---------------------------------------------------------------- */

static const char seen_sql[] =
    "SELECT event_id FROM processed_events WHERE consumer_group = ? AND event_id IN (?, ?, ?, ?,"
    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
_Static_assert(SEEN_CHUNK == 32, "seen_sql holds 32 ids");

/* Inserts the ids of idx[] (all fresh) with INSERT IGNORE: one round trip
 * per INBOX_CHUNK ids. Returns ALREADY_EXISTS when a row was ignored, i.e.
 * some id was seen before (or twice in the batch): the caller then rolls
 * back and takes the slow path. IGNORE is safe here: the values were
 * validated (ids at most 64 printable ASCII characters, the group at most
 * 128), so the only thing it can ignore is a duplicate key. */
static status_code inbox_fast(consumer *c, const size_t *idx, size_t k, char *errbuf,
                              size_t errlen) {
  for (size_t base = 0; base < k; base += INBOX_CHUNK) {
    size_t cnt = k - base < INBOX_CHUNK ? k - base : INBOX_CHUNK;
    char sql[112 + INBOX_CHUNK * 8];
    size_t o = (size_t)snprintf(
        sql, sizeof sql, "INSERT IGNORE INTO processed_events (consumer_group, event_id) VALUES ");
    db_value p[2 * INBOX_CHUNK];
    for (size_t j = 0; j < cnt; j++) {
      o += (size_t)snprintf(sql + o, sizeof sql - o, "%s(?, ?)", j ? ", " : "");
      p[2 * j] = DB_STR(c->group);
      p[2 * j + 1] = DB_STR(c->items[idx[base + j]].env->id);
      c->items[idx[base + j]].fresh = true;
    }
    uint64_t affected = 0;
    status_code st = db_exec(c->db, sql, p, 2 * cnt, &affected, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
    if (affected != cnt) return STATUS_ALREADY_EXISTS;
  }
  return STATUS_OK;
}

/* The slow path: marks the items of idx[] whose id is already in the
 * inbox (or earlier in this batch) as not fresh, and inserts the fresh
 * ids. */
static status_code inbox_slow(consumer *c, const size_t *idx, size_t k, char *errbuf,
                              size_t errlen) {
  for (size_t i = 0; i < k; i++) c->items[idx[i]].fresh = true;
  for (size_t base = 0; base < k; base += SEEN_CHUNK) {
    size_t cnt = k - base < SEEN_CHUNK ? k - base : SEEN_CHUNK;
    db_value p[1 + SEEN_CHUNK];
    p[0] = DB_STR(c->group);
    for (size_t j = 0; j < SEEN_CHUNK; j++) {
      p[1 + j] = DB_STR(c->items[idx[base + (j < cnt ? j : 0)]].env->id);
    }
    db_rows *r;
    status_code st = db_query(c->db, seen_sql, p, 1 + SEEN_CHUNK, &r, errbuf, errlen);
    if (st != STATUS_OK) return st;
    while (db_rows_next(r)) {
      const char *id = db_rows_str(r, 0, NULL);
      for (size_t j = base; j < base + cnt; j++) {
        if (strcmp(c->items[idx[j]].env->id, id) == 0) c->items[idx[j]].fresh = false;
      }
    }
    db_rows_free(r);
  }
  /* The same id twice in one batch (a relay re-send): only the first. */
  for (size_t i = 0; i < k; i++) {
    item *a = &c->items[idx[i]];
    if (!a->fresh) continue;
    for (size_t j = i + 1; j < k; j++) {
      item *b = &c->items[idx[j]];
      if (b->fresh && strcmp(a->env->id, b->env->id) == 0) b->fresh = false;
    }
  }
  size_t fresh[INBOX_CHUNK];
  size_t nf = 0;
  for (size_t i = 0; i <= k; i++) {
    if (i < k && c->items[idx[i]].fresh) fresh[nf++] = idx[i];
    if (nf == 0 || (nf < INBOX_CHUNK && i < k)) continue;
    char sql[96 + INBOX_CHUNK * 8];
    size_t o = (size_t)snprintf(sql, sizeof sql,
                                "INSERT INTO processed_events (consumer_group, event_id) VALUES ");
    db_value p[2 * INBOX_CHUNK];
    for (size_t j = 0; j < nf; j++) {
      o += (size_t)snprintf(sql + o, sizeof sql - o, "%s(?, ?)", j ? ", " : "");
      p[2 * j] = DB_STR(c->group);
      p[2 * j + 1] = DB_STR(c->items[fresh[j]].env->id);
    }
    status_code st = db_exec(c->db, sql, p, 2 * nf, NULL, NULL, errbuf, errlen);
    /* Another member applied one meanwhile (a rebalance in between): the
     * retry sees it in the inbox. */
    if (st == STATUS_ALREADY_EXISTS) st = STATUS_ABORTED;
    if (st != STATUS_OK) return st;
    nf = 0;
  }
  return STATUS_OK;
}

/* Runs the items idx[0..k) in one transaction. */
static tx_outcome run_tx_body(consumer *c, const size_t *idx, size_t k, status_code *st_out,
                              char *errbuf, size_t errlen) {
  status_code st = db_begin(c->db, errbuf, errlen);
  if (st == STATUS_OK) st = inbox_fast(c, idx, k, errbuf, errlen);
  if (st == STATUS_ALREADY_EXISTS) {
    /* Seen before: a redelivery. Start over, finding out which. */
    db_rollback(c->db);
    st = db_begin(c->db, errbuf, errlen);
    if (st == STATUS_OK) st = inbox_slow(c, idx, k, errbuf, errlen);
  }
  if (st != STATUS_OK) {
    /* The framework's own statements: never the event's fault. */
    db_rollback(c->db);
    *st_out = st;
    return TX_TRANSIENT;
  }
  size_t n = 0;
  for (size_t i = 0; i < k; i++) {
    item *it = &c->items[idx[i]];
    if (!it->fresh) continue;
    const rd_kafka_message_t *m = it->m;
    c->msgs[n++] = (consumer_msg){.env = it->env,
                                  .msg = it->msg,
                                  .topic = rd_kafka_topic_name(m->rkt),
                                  .partition = m->partition,
                                  .offset = m->offset,
                                  .timestamp_ms = rd_kafka_message_timestamp(m, NULL)};
  }
  if (n > 0) {
    errbuf[0] = '\0';
    st = c->o.types != NULL ? consumer_table_apply(c->db, c->o.types, c->o.n_types, c->o.prepare,
                                                   c->msgs, n, c->o.handler_arg, errbuf, errlen)
                            : c->o.handler(c->db, c->msgs, n, c->o.handler_arg, errbuf, errlen);
    if (st == STATUS_OK && c->o.before_commit != NULL)
      st = c->o.before_commit(c->db, c->o.handler_arg, errbuf, errlen);
    if (st != STATUS_OK) {
      bool link_lost = !db_in_tx(c->db);
      db_rollback(c->db);
      *st_out = st;
      return consumer_status_transient(st) || link_lost ? TX_TRANSIENT : TX_REJECT;
    }
  }
  crash_point("consumer.mid_batch");
  st = db_commit(c->db, errbuf, errlen);
  if (st != STATUS_OK) {
    *st_out = st;
    return TX_TRANSIENT;
  }
  crash_point("consumer.after_commit");
  for (size_t i = 0; i < k; i++) c->items[idx[i]].done = true;
  atomic_fetch_add(&c->st_batches, 1);
  atomic_fetch_add(&c->st_applied, (long long)n);
  atomic_fetch_add(&c->st_duplicates, (long long)(k - n));
  if (n > 0) {
    if (c->o.committed != NULL) c->o.committed(c->msgs, n, c->o.committed_arg);
    outbox_relay_nudge(c->o.relay);
  }
  *st_out = STATUS_OK;
  return TX_OK;
}

static tx_outcome run_tx(consumer *c, const size_t *idx, size_t k, status_code *st_out,
                         char *errbuf, size_t errlen) {
  tx_outcome r = run_tx_body(c, idx, k, st_out, errbuf, errlen);
  if (c->o.ended != NULL) c->o.ended(c->db, c->o.handler_arg);
  return r;
}

/* A transient failure: rewind what is unfinished and back off. */
static void transient(consumer *c, size_t n, status_code st, const char *err) {
  c->transient_streak++;
  atomic_fetch_add(&c->st_transient, 1);
  int64_t wait = consumer_backoff_ms(c, c->transient_streak);
  if (c->transient_streak == 1 || c->transient_streak % 20 == 0) {
    log_warn(NULL, "consumer %s: transient failure (%s: %s); retrying in %lld ms", c->group,
             status_name(st), err, (long long)wait);
  }
  rewind_unfinished(c, n);
  consumer_nap(c, wait);
}

/* --- The batch ------------------------------------------------------------------------ */

void consumer_process(consumer *c, size_t n) {
  char err[1024];
  /* 1. Poison records, and events their type's decode or check refuses:
   * nothing will ever make them pass. */
  for (size_t i = 0; i < n; i++) {
    item *it = &c->items[i];
    if (!it->bad) continue;
    char why[600];
    snprintf(why, sizeof why, "INVALID_ARGUMENT: %s", it->err);
    if (!consumer_dlt_send(c, it, why, 0)) {
      transient(c, n, STATUS_UNAVAILABLE, "the dead-letter topic cannot be written");
      return;
    }
    it->done = true;
  }
  size_t idx[n > 0 ? n : 1];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (!c->items[i].done) idx[k++] = i;
  }
  if (k == 0) {
    /* Nothing this consumer takes: no transaction at all. */
    store_done(c, n);
    return;
  }
  status_code st;
  /* 2. The whole batch in one transaction. */
  if (k > 1) {
    tx_outcome r = run_tx(c, idx, k, &st, err, sizeof err);
    if (r == TX_OK) {
      c->transient_streak = 0;
      store_done(c, n);
      return;
    }
    if (r == TX_TRANSIENT) {
      transient(c, n, st, err);
      return;
    }
    atomic_fetch_add(&c->st_rejects, 1);
    log_info(NULL, "consumer %s: a batch of %zu was rejected (%s: %s); one by one now", c->group, k,
             status_name(st), err);
  }
  /* 3. One event per transaction, so only the poison one fails. */
  for (size_t j = 0; j < k; j++) {
    item *it = &c->items[idx[j]];
    for (int attempt = 1;; attempt++) {
      tx_outcome r = run_tx(c, &idx[j], 1, &st, err, sizeof err);
      if (r == TX_OK) {
        c->transient_streak = 0;
        break;
      }
      if (r == TX_TRANSIENT) {
        transient(c, n, st, err);
        return;
      }
      atomic_fetch_add(&c->st_rejects, 1);
      if (attempt >= c->o.max_retries) {
        char why[1100];
        snprintf(why, sizeof why, "%s: %s", status_name(st), err);
        if (!consumer_dlt_send(c, it, why, attempt)) {
          transient(c, n, STATUS_UNAVAILABLE, "the dead-letter topic cannot be written");
          return;
        }
        it->done = true;
        break;
      }
      char trace[LOG_TRACE_ID_SIZE];
      log_trace_id(it->env->traceparent, trace);
      log_warn(&(log_ctx){.event_id = it->env->id, .trace_id = trace},
               "consumer %s: handler rejected the event (attempt %d of %d): %s: %s", c->group,
               attempt, c->o.max_retries, status_name(st), err);
      consumer_nap(c, consumer_backoff_ms(c, attempt));
      if (consumer_stopping(c)) {
        rewind_unfinished(c, n);
        return;
      }
    }
  }
  store_done(c, n);
}

size_t consumer_batch_keys(const consumer_msg *msgs, size_t n,
                           const ProtobufCMessageDescriptor *only, const char *field,
                           size_t max_len, const char **keys) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const ProtobufCMessage *m = msgs[i].msg;
    if (m == NULL || (only != NULL && m->descriptor != only)) continue;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
      continue;
    const char *v = *(char *const *)((const char *)m + f->offset);
    size_t len = v != NULL ? strlen(v) : 0;
    if (len == 0 || len > max_len) continue;
    bool seen = false;
    for (size_t j = 0; j < k && !seen; j++) seen = strcmp(keys[j], v) == 0;
    if (!seen) keys[k++] = v;
  }
  return k;
}
