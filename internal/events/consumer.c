/* The consumer framework. See consumer.h for the contract. */
#include "events/consumer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crash/crash.h"
#include "events/events_private.h"
#include "events/kafka_private.h"
#include "log/log.h"
#include "topology/topology.h"

/* Event ids per inbox statement (the db layer binds at most 64 values). */
#define INBOX_CHUNK 32

typedef struct item {
  rd_kafka_message_t *m;
  events_envelope *env; /* NULL: the record is poison */
  char err[256];        /* why it is poison */
  bool fresh;           /* in the current transaction: new, handed to the handler */
  bool done;            /* applied, skipped or dead-lettered: its offset may be stored */
} item;

typedef enum { TX_OK, TX_TRANSIENT, TX_REJECT } tx_outcome;

struct consumer {
  consumer_opts o;
  char *brokers, *group, *client_id;
  char **topics;
  size_t ntopics;
  db_params dbp;
  char *db_host, *db_user, *db_password, *db_database;
  db_conn *db;
  rd_kafka_t *rk;
  rd_kafka_t *dlt; /* made on the first dead letter */
  atomic_bool stop;
  pthread_t thread;
  bool started, joined, ran;
  atomic_llong st_applied, st_duplicates, st_dead, st_batches, st_rejects, st_transient,
      st_assigned;

  /* The consumer thread's own. */
  item *items;
  consumer_msg *msgs;
  size_t cap;
  rd_kafka_topic_partition_list_t *revoked; /* during the current fill */
  size_t fill_n;                            /* records polled so far in the current fill */
  size_t revoke_mark;                       /* records polled before the last revoke */
  int transient_streak;
  int64_t next_purge_ms;
  rd_kafka_resp_err_t last_poll_err;
  int64_t last_poll_err_ms;
};

status_code consumer_apply_each(db_conn *tx, const consumer_msg *msgs, size_t n,
                                consumer_apply_one_cb apply_one, void *arg, char *errbuf,
                                size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    log_scope scope;
    events_log_scope_enter(&scope, msgs[i].env);
    status_code st = apply_one(tx, msgs[i].env, arg, errbuf, errlen);
    log_scope_leave(&scope);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

status_code consumer_event_decode(const events_envelope *ev, const consumer_event_type *types,
                                  size_t n, ProtobufCMessage **out, size_t *which, char *errbuf,
                                  size_t errlen) {
  *out = NULL;
  size_t k = 0;
  while (k < n && strcmp(ev->type, types[k].desc->name) != 0) k++;
  if (k == n) return STATUS_OK;
  ProtobufCMessage *m = protobuf_c_message_unpack(types[k].desc, NULL, ev->data.len, ev->data.data);
  if (m == NULL) {
    snprintf(errbuf, errlen, "undecodable %s (event %s)", ev->type, ev->id);
    return STATUS_INVALID_ARGUMENT;
  }
  const char *why = types[k].check != NULL ? types[k].check(m, ev) : NULL;
  if (why != NULL) {
    snprintf(errbuf, errlen, "%s (event %s): %s", ev->type, ev->id, why);
    protobuf_c_message_free_unpacked(m, NULL);
    return STATUS_INVALID_ARGUMENT;
  }
  *out = m;
  *which = k;
  return STATUS_OK;
}

bool consumer_status_transient(status_code st) {
  return st == STATUS_UNAVAILABLE || st == STATUS_ABORTED;
}

void consumer_opts_init(consumer_opts *o, const shop_cfg *cfg) {
  memset(o, 0, sizeof *o);
  o->batch_size = 10;
  o->max_retries = 5;
  o->retry_backoff_ms = 200;
  o->session_timeout_ms = 45000;
  o->heartbeat_ms = 3000;
  o->processed_retention_s = 7 * 24 * 3600;
  o->purge_interval_ms = 60000;
  o->poll_timeout_ms = 100;
  if (cfg != NULL) {
    o->brokers = cfg->kafka.brokers;
    o->batch_size = cfg->kafka.batch_size;
    o->max_retries = cfg->kafka.max_retries;
    o->retry_backoff_ms = cfg->kafka.retry_backoff_ms;
    o->session_timeout_ms = cfg->kafka.session_timeout_ms;
    o->heartbeat_ms = cfg->kafka.heartbeat_ms;
    o->processed_retention_s = cfg->kafka.processed_retention_s;
  }
}

void consumer_stats_get(consumer *c, consumer_stats *out) {
  out->applied = atomic_load(&c->st_applied);
  out->duplicates = atomic_load(&c->st_duplicates);
  out->dead_lettered = atomic_load(&c->st_dead);
  out->batches = atomic_load(&c->st_batches);
  out->rejects = atomic_load(&c->st_rejects);
  out->transient = atomic_load(&c->st_transient);
  out->assigned = atomic_load(&c->st_assigned);
}

void consumer_stop(consumer *c) {
  if (c != NULL) atomic_store(&c->stop, true);
}

static bool stopping(consumer *c) { return atomic_load(&c->stop); }

/* Sleeps up to ms, waking early on stop. */
static void nap(consumer *c, int64_t ms) {
  int64_t until = events_now_ms() + ms;
  while (!stopping(c)) {
    int64_t left = until - events_now_ms();
    if (left <= 0) return;
    events_sleep_ms(left < 50 ? left : 50);
  }
}

static int64_t backoff_ms(const consumer *c, int attempt) {
  int64_t b = c->o.retry_backoff_ms;
  for (int i = 1; i < attempt && b < (int64_t)c->o.retry_backoff_ms * 10; i++) b *= 2;
  int64_t cap = (int64_t)c->o.retry_backoff_ms * 10;
  return b < cap ? b : cap;
}

/* --- Rebalances ---------------------------------------------------------------- */

/* Runs inside rd_kafka_consumer_poll / rd_kafka_consumer_close on the
 * consumer's thread. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  consumer *c = opaque;
  bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    log_info(NULL, "consumer %s: assigned %d partition(s)", c->group, parts->cnt);
    if (coop) {
      rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
      if (e != NULL) {
        log_error(NULL, "consumer %s: incremental assign: %s", c->group, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
      }
      atomic_fetch_add(&c->st_assigned, parts->cnt);
    } else {
      rd_kafka_assign(rk, parts);
      atomic_store(&c->st_assigned, parts->cnt);
    }
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    log_info(NULL, "consumer %s: %d partition(s) %s", c->group, parts->cnt,
             rd_kafka_assignment_lost(rk) ? "lost" : "revoked");
  } else {
    log_error(NULL, "consumer %s: rebalance error: %s", c->group, rd_kafka_err2str(err));
  }
  /* Records of these partitions polled before now and not yet processed
   * are dropped: their offsets are not stored, so whoever owns the
   * partition next (us again, after an eager reassignment, from the
   * committed offset) gets them again. Records polled after a reassignment
   * are kept. */
  c->revoke_mark = c->fill_n;
  for (int i = 0; i < parts->cnt; i++) {
    rd_kafka_topic_partition_list_add(c->revoked, parts->elems[i].topic, parts->elems[i].partition);
  }
  if (coop) {
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
    if (e != NULL) rd_kafka_error_destroy(e);
    atomic_fetch_sub(&c->st_assigned, parts->cnt);
  } else {
    rd_kafka_assign(rk, NULL);
    atomic_store(&c->st_assigned, 0);
  }
}

/* --- Creating and destroying ----------------------------------------------------- */

static char *dup_or_null(const char *s) { return s != NULL ? strdup(s) : NULL; }

static bool consumer_conf(consumer *c, rd_kafka_conf_t *conf, char *errbuf, size_t errlen) {
  char session[16], heartbeat[16];
  snprintf(session, sizeof session, "%d", c->o.session_timeout_ms);
  snprintf(heartbeat, sizeof heartbeat, "%d", c->o.heartbeat_ms);
  return events_kafka_set(conf, "group.id", c->group, errbuf, errlen) &&
         events_kafka_set(conf, "enable.auto.offset.store", "false", errbuf, errlen) &&
         events_kafka_set(conf, "enable.auto.commit", "true", errbuf, errlen) &&
         events_kafka_set(conf, "auto.commit.interval.ms", "1000", errbuf, errlen) &&
         events_kafka_set(conf, "auto.offset.reset", "earliest", errbuf, errlen) &&
         events_kafka_set(conf, "enable.partition.eof", "false", errbuf, errlen) &&
         /* A rewind (seek) waits for the fetch in flight; keep that short. */
         events_kafka_set(conf, "fetch.wait.max.ms", "100", errbuf, errlen) &&
         events_kafka_set(conf, "session.timeout.ms", session, errbuf, errlen) &&
         events_kafka_set(conf, "heartbeat.interval.ms", heartbeat, errbuf, errlen);
}

status_code consumer_create(consumer **out, const consumer_opts *o, char *errbuf, size_t errlen) {
  if (o->brokers == NULL || o->group == NULL || o->group[0] == '\0' || o->db == NULL ||
      o->handler == NULL) {
    events_seterr(errbuf, errlen, "consumer: brokers, group, db and handler are required");
    return STATUS_INVALID_ARGUMENT;
  }
  if (o->batch_size < 1 || o->max_retries < 1 || o->retry_backoff_ms < 1 ||
      o->poll_timeout_ms < 1 || strlen(o->group) > 128) {
    events_seterr(
        errbuf, errlen,
        "consumer %s: need batch_size, max_retries, retry_backoff_ms, poll_timeout_ms >= 1"
        " and a group name of at most 128 characters",
        o->group);
    return STATUS_INVALID_ARGUMENT;
  }
  const char *const *topics = o->topics;
  size_t ntopics = o->topic_count;
  if (topics == NULL) {
    const topology_group *g = topology_group_find(o->group);
    if (g == NULL) {
      events_seterr(errbuf, errlen, "consumer: no topics given and %s is not a group in topology",
                    o->group);
      return STATUS_INVALID_ARGUMENT;
    }
    topics = g->topics;
    ntopics = g->topic_count;
  }
  if (ntopics == 0) {
    events_seterr(errbuf, errlen, "consumer %s: no topics", o->group);
    return STATUS_INVALID_ARGUMENT;
  }
  consumer *c = calloc(1, sizeof *c);
  if (c == NULL) goto oom;
  c->o = *o;
  c->brokers = strdup(o->brokers);
  c->group = strdup(o->group);
  c->client_id = strdup(o->client_id != NULL ? o->client_id : o->group);
  c->topics = calloc(ntopics, sizeof *c->topics);
  c->cap = (size_t)o->batch_size;
  c->items = calloc(c->cap, sizeof *c->items);
  c->msgs = calloc(c->cap, sizeof *c->msgs);
  c->revoked = rd_kafka_topic_partition_list_new(8);
  c->dbp = *o->db;
  c->db_host = dup_or_null(o->db->host);
  c->db_user = dup_or_null(o->db->user);
  c->db_password = dup_or_null(o->db->password);
  c->db_database = dup_or_null(o->db->database);
  c->dbp.host = c->db_host;
  c->dbp.user = c->db_user;
  c->dbp.password = c->db_password;
  c->dbp.database = c->db_database;
  atomic_init(&c->stop, false);
  if (c->brokers == NULL || c->group == NULL || c->client_id == NULL || c->topics == NULL ||
      c->items == NULL || c->msgs == NULL) {
    consumer_destroy(c);
    goto oom;
  }
  for (size_t i = 0; i < ntopics; i++) {
    if ((c->topics[i] = strdup(topics[i])) == NULL) {
      consumer_destroy(c);
      goto oom;
    }
    c->ntopics++;
  }
  c->o.brokers = c->brokers;
  c->o.group = c->group;
  c->o.client_id = c->client_id;
  c->o.topics = (const char *const *)c->topics;
  c->o.db = &c->dbp;

  status_code st = db_connect(&c->db, &c->dbp, errbuf, errlen);
  if (st != STATUS_OK) {
    c->db = NULL;
    consumer_destroy(c);
    return st;
  }
  rd_kafka_conf_t *conf = events_kafka_conf_new(c->brokers, c->client_id, errbuf, errlen);
  if (conf == NULL || !consumer_conf(c, conf, errbuf, errlen)) {
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    consumer_destroy(c);
    return STATUS_INVALID_ARGUMENT;
  }
  rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
  rd_kafka_conf_set_opaque(conf, c);
  char why[512];
  c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  if (c->rk == NULL) {
    rd_kafka_conf_destroy(conf);
    events_seterr(errbuf, errlen, "consumer %s: %s", c->group, why);
    consumer_destroy(c);
    return STATUS_INTERNAL;
  }
  /* Errors, logs and rebalances all come out of rd_kafka_consumer_poll. */
  rd_kafka_poll_set_consumer(c->rk);
  *out = c;
  return STATUS_OK;
oom:
  events_seterr(errbuf, errlen, "consumer: out of memory");
  return STATUS_RESOURCE_EXHAUSTED;
}

static void items_release(consumer *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (c->items[i].m != NULL) rd_kafka_message_destroy(c->items[i].m);
    events_envelope_free(c->items[i].env);
    memset(&c->items[i], 0, sizeof c->items[i]);
  }
}

void consumer_destroy(consumer *c) {
  if (c == NULL) return;
  consumer_stop(c);
  if (c->started && !c->joined) {
    pthread_join(c->thread, NULL);
    c->joined = true;
  }
  if (c->rk != NULL) {
    /* A consumer that never ran has nothing to commit; closing is
     * harmless and keeps librdkafka's teardown uniform. */
    if (!c->ran) rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
  }
  if (c->dlt != NULL) {
    rd_kafka_flush(c->dlt, 5000);
    rd_kafka_destroy(c->dlt);
  }
  if (c->revoked != NULL) rd_kafka_topic_partition_list_destroy(c->revoked);
  db_close(c->db);
  for (size_t i = 0; i < c->ntopics; i++) free(c->topics[i]);
  free(c->topics);
  free(c->items);
  free(c->msgs);
  free(c->brokers);
  free(c->group);
  free(c->client_id);
  free(c->db_host);
  free(c->db_user);
  if (c->db_password != NULL) memset(c->db_password, 0, strlen(c->db_password));
  free(c->db_password);
  free(c->db_database);
  free(c);
}

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

/* --- Dead letters ---------------------------------------------------------------- */

static void dlt_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  *(rd_kafka_resp_err_t *)m->_private = m->err;
}

static bool dlt_producer(consumer *c) {
  char why[256];
  if (c->dlt != NULL &&
      rd_kafka_fatal_error(c->dlt, why, sizeof why) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    log_warn(NULL, "consumer %s: dead-letter producer failed (%s); replacing it", c->group, why);
    rd_kafka_purge(c->dlt, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(c->dlt);
    c->dlt = NULL;
  }
  if (c->dlt != NULL) return true;
  char err[512], id[160];
  snprintf(id, sizeof id, "%s-dlt", c->client_id);
  rd_kafka_conf_t *conf = events_kafka_conf_new(c->brokers, id, err, sizeof err);
  /* A bounded message timeout: a dead letter that cannot be delivered
   * fails, the batch is rewound and tried again later. */
  if (conf == NULL || !events_kafka_producer_conf(conf, 30000, 0, err, sizeof err)) {
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    log_error(NULL, "consumer %s: dead-letter producer: %s", c->group, err);
    return false;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, dlt_dr_cb);
  c->dlt = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (c->dlt == NULL) {
    rd_kafka_conf_destroy(conf);
    log_error(NULL, "consumer %s: dead-letter producer: %s", c->group, err);
    return false;
  }
  return true;
}

/* Sends the record unchanged plus the dlt_* headers and waits for the
 * delivery. False if it was not delivered. */
static bool dlt_send(consumer *c, item *it, const char *error, int attempts) {
  const rd_kafka_message_t *m = it->m;
  const char *topic = rd_kafka_topic_name(m->rkt);
  char dlt[TOPOLOGY_TOPIC_NAME_MAX + 1];
  if (topology_dlt_name(dlt, sizeof dlt, topic, c->group) < 0) {
    log_error(NULL, "consumer %s: no dead-letter topic name for %s", c->group, topic);
    return false;
  }
  if (!dlt_producer(c)) return false;
  rd_kafka_headers_t *orig = NULL;
  rd_kafka_headers_t *h;
  if (rd_kafka_message_headers(it->m, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR && orig != NULL) {
    h = rd_kafka_headers_copy(orig);
  } else {
    h = rd_kafka_headers_new(6);
  }
  char partition[16], offset[24], att[16];
  snprintf(partition, sizeof partition, "%d", (int)m->partition);
  snprintf(offset, sizeof offset, "%lld", (long long)m->offset);
  snprintf(att, sizeof att, "%d", attempts);
  rd_kafka_header_add(h, EVENTS_DLT_ORIGINAL_TOPIC, -1, topic, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ORIGINAL_PARTITION, -1, partition, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ORIGINAL_OFFSET, -1, offset, -1);
  rd_kafka_header_add(h, EVENTS_DLT_GROUP, -1, c->group, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ERROR, -1, error, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ATTEMPTS, -1, att, -1);
  volatile rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR__IN_PROGRESS;
  rd_kafka_resp_err_t e = rd_kafka_producev(
      c->dlt, RD_KAFKA_V_TOPIC(dlt), RD_KAFKA_V_KEY(m->key, m->key_len),
      RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)&result), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(h);
    log_error(NULL, "consumer %s: dead-lettering to %s: %s", c->group, dlt, rd_kafka_err2str(e));
    return false;
  }
  while (result == RD_KAFKA_RESP_ERR__IN_PROGRESS) {
    rd_kafka_poll(c->dlt, 100);
    if (stopping(c) && result == RD_KAFKA_RESP_ERR__IN_PROGRESS) {
      /* Do not leave with the report outstanding: it points at result. */
      rd_kafka_purge(c->dlt, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_flush(c->dlt, 5000);
      rd_kafka_poll(c->dlt, 0);
      if (result == RD_KAFKA_RESP_ERR__IN_PROGRESS) {
        /* Purged messages always report; this cannot stay unset. */
        abort();
      }
    }
  }
  if (result != RD_KAFKA_RESP_ERR_NO_ERROR) {
    log_error(NULL, "consumer %s: dead letter to %s not delivered: %s", c->group, dlt,
              rd_kafka_err2str(result));
    return false;
  }
  const char *eid = it->env != NULL ? it->env->id : NULL;
  char trace[LOG_TRACE_ID_SIZE];
  log_trace_id(it->env != NULL ? it->env->traceparent : NULL, trace);
  log_error(&(log_ctx){.event_id = eid, .trace_id = trace},
            "consumer %s: dead-lettered %s [%d] @%lld to %s after %d attempt(s): %s", c->group,
            topic, (int)m->partition, (long long)m->offset, dlt, attempts, error);
  atomic_fetch_add(&c->st_dead, 1);
  return true;
}

/* --- One transaction ---------------------------------------------------------------- */

static const char seen_sql[] =
    "SELECT event_id FROM processed_events WHERE consumer_group = ? AND event_id IN (?, ?, ?, ?,"
    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

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
  for (size_t base = 0; base < k; base += INBOX_CHUNK) {
    size_t cnt = k - base < INBOX_CHUNK ? k - base : INBOX_CHUNK;
    db_value p[1 + INBOX_CHUNK];
    p[0] = DB_STR(c->group);
    for (size_t j = 0; j < INBOX_CHUNK; j++) {
      p[1 + j] = DB_STR(c->items[idx[base + (j < cnt ? j : 0)]].env->id);
    }
    db_rows *r;
    status_code st = db_query(c->db, seen_sql, p, 1 + INBOX_CHUNK, &r, errbuf, errlen);
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
static tx_outcome run_tx(consumer *c, const size_t *idx, size_t k, status_code *st_out,
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
                                  .topic = rd_kafka_topic_name(m->rkt),
                                  .partition = m->partition,
                                  .offset = m->offset,
                                  .timestamp_ms = rd_kafka_message_timestamp(m, NULL)};
  }
  if (n > 0) {
    errbuf[0] = '\0';
    st = c->o.handler(c->db, c->msgs, n, c->o.handler_arg, errbuf, errlen);
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

/* A transient failure: rewind what is unfinished and back off. */
static void transient(consumer *c, size_t n, status_code st, const char *err) {
  c->transient_streak++;
  atomic_fetch_add(&c->st_transient, 1);
  int64_t wait = backoff_ms(c, c->transient_streak);
  if (c->transient_streak == 1 || c->transient_streak % 20 == 0) {
    log_warn(NULL, "consumer %s: transient failure (%s: %s); retrying in %lld ms", c->group,
             status_name(st), err, (long long)wait);
  }
  rewind_unfinished(c, n);
  nap(c, wait);
}

/* --- The batch ------------------------------------------------------------------------ */

static void process(consumer *c, size_t n) {
  char err[1024];
  /* 1. Poison records: nothing will ever make them decode. */
  for (size_t i = 0; i < n; i++) {
    item *it = &c->items[i];
    if (it->env != NULL) continue;
    char why[300];
    snprintf(why, sizeof why, "INVALID_ARGUMENT: %s", it->err);
    if (!dlt_send(c, it, why, 0)) {
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
        if (!dlt_send(c, it, why, attempt)) {
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
      nap(c, backoff_ms(c, attempt));
      if (stopping(c)) {
        rewind_unfinished(c, n);
        return;
      }
    }
  }
  store_done(c, n);
}

/* --- The loop --------------------------------------------------------------------------- */

static bool revoked_has(consumer *c, const rd_kafka_message_t *m) {
  return rd_kafka_topic_partition_list_find(c->revoked, rd_kafka_topic_name(m->rkt),
                                            m->partition) != NULL;
}

/* Polls up to batch_size records: waits poll_timeout_ms for the first,
 * then takes only what is already there. */
static size_t fill(consumer *c) {
  size_t n = 0;
  int timeout = c->o.poll_timeout_ms;
  c->revoke_mark = 0;
  while (n < c->cap && !stopping(c)) {
    c->fill_n = n;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout);
    if (m == NULL) break;
    timeout = 0;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      int64_t now = events_now_ms();
      if (m->err != c->last_poll_err || now - c->last_poll_err_ms > 30000) {
        log_warn(NULL, "consumer %s: %s", c->group, rd_kafka_message_errstr(m));
        c->last_poll_err = m->err;
        c->last_poll_err_ms = now;
      }
      rd_kafka_message_destroy(m);
      continue;
    }
    item *it = &c->items[n++];
    memset(it, 0, sizeof *it);
    it->m = m;
    events_record rec;
    events_header *hdrs;
    if (!events_kafka_record_view(m, &rec, &hdrs)) {
      /* Out of memory: give the record back to the partition. */
      n--;
      it->m = NULL;
      rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
      rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset =
          m->offset;
      rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, l, 10000);
      if (e != NULL) rd_kafka_error_destroy(e);
      rd_kafka_topic_partition_list_destroy(l);
      rd_kafka_message_destroy(m);
      break;
    }
    if (events_envelope_decode(&it->env, &rec, it->err, sizeof it->err) != STATUS_OK) {
      it->env = NULL;
    }
    free(hdrs);
  }
  if (c->revoked->cnt > 0) {
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
      if (i < c->revoke_mark && revoked_has(c, c->items[i].m)) {
        rd_kafka_message_destroy(c->items[i].m);
        events_envelope_free(c->items[i].env);
        continue;
      }
      c->items[keep++] = c->items[i];
    }
    for (size_t i = keep; i < n; i++) memset(&c->items[i], 0, sizeof c->items[i]);
    n = keep;
    rd_kafka_topic_partition_list_destroy(c->revoked);
    c->revoked = rd_kafka_topic_partition_list_new(8);
  }
  return n;
}

static void purge_processed(consumer *c) {
  if (c->o.purge_interval_ms <= 0) return;
  int64_t now = events_now_ms();
  if (now < c->next_purge_ms) return;
  c->next_purge_ms = now + c->o.purge_interval_ms;
  char err[512];
  int64_t total = 0;
  for (;;) {
    uint64_t n = 0;
    db_value p[2] = {DB_STR(c->group), DB_I64(c->o.processed_retention_s)};
    if (db_exec(c->db,
                "DELETE FROM processed_events WHERE consumer_group = ? AND processed_at < NOW(6)"
                " - INTERVAL ? SECOND LIMIT 1000",
                p, 2, &n, NULL, err, sizeof err) != STATUS_OK) {
      log_warn(NULL, "consumer %s: purging processed ids: %s", c->group, err);
      return;
    }
    total += (int64_t)n;
    if (n < 1000) break;
  }
  if (total > 0)
    log_info(NULL, "consumer %s: purged %lld processed id(s)", c->group, (long long)total);
}

status_code consumer_run(consumer *c, char *errbuf, size_t errlen) {
  if (c->ran) {
    events_seterr(errbuf, errlen, "consumer %s: consumer_run may be called once", c->group);
    return STATUS_FAILED_PRECONDITION;
  }
  c->ran = true;
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)c->ntopics);
  for (size_t i = 0; i < c->ntopics; i++) {
    rd_kafka_topic_partition_list_add(subs, c->topics[i], RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    events_seterr(errbuf, errlen, "consumer %s: subscribe: %s", c->group, rd_kafka_err2str(e));
    rd_kafka_consumer_close(c->rk);
    return STATUS_INVALID_ARGUMENT;
  }
  log_info(NULL, "consumer %s: subscribed to %zu topic(s)", c->group, c->ntopics);
  c->next_purge_ms = events_now_ms() + c->o.purge_interval_ms;
  while (!stopping(c)) {
    size_t n = fill(c);
    if (n > 0) process(c, n);
    items_release(c, n);
    purge_processed(c);
  }
  e = rd_kafka_consumer_close(c->rk);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    log_warn(NULL, "consumer %s: close: %s", c->group, rd_kafka_err2str(e));
  }
  log_info(NULL, "consumer %s: closed", c->group);
  return STATUS_OK;
}

static void *consumer_main(void *arg) {
  consumer *c = arg;
  char err[512];
  if (consumer_run(c, err, sizeof err) != STATUS_OK) {
    log_error(NULL, "consumer %s: %s", c->group, err);
  }
  return NULL;
}

status_code consumer_start(consumer *c, char *errbuf, size_t errlen) {
  if (c->started || c->ran) {
    events_seterr(errbuf, errlen, "consumer %s: already started", c->group);
    return STATUS_FAILED_PRECONDITION;
  }
  int e = pthread_create(&c->thread, NULL, consumer_main, c);
  if (e != 0) {
    events_seterr(errbuf, errlen, "consumer %s: thread: %s", c->group, strerror(e));
    return STATUS_INTERNAL;
  }
  c->started = true;
  return STATUS_OK;
}

/* ---- lag, for metrics ------------------------------------------------------------ */

void consumer_lag_foreach(consumer *c, int timeout_ms, consumer_lag_cb cb, void *arg) {
  rd_kafka_topic_partition_list_t *parts = NULL;
  if (c == NULL || c->rk == NULL ||
      rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
    return;
  rd_kafka_position(c->rk, parts);
  /* Partitions with nothing handed out since the assignment: their
   * committed offset is where the consumer stands. */
  rd_kafka_topic_partition_list_t *idle = rd_kafka_topic_partition_list_new(parts->cnt + 1);
  for (int i = 0; i < parts->cnt; i++)
    if (parts->elems[i].offset < 0)
      rd_kafka_topic_partition_list_add(idle, parts->elems[i].topic, parts->elems[i].partition);
  if (idle->cnt > 0) rd_kafka_committed(c->rk, idle, timeout_ms);
  for (int i = 0; i < parts->cnt; i++) {
    rd_kafka_topic_partition_t *p = &parts->elems[i];
    int64_t lo = -1, hi = -1;
    if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        hi < 0)
      continue;
    int64_t pos = p->offset;
    if (pos < 0) {
      rd_kafka_topic_partition_t *q =
          rd_kafka_topic_partition_list_find(idle, p->topic, p->partition);
      pos = q != NULL && q->err == RD_KAFKA_RESP_ERR_NO_ERROR && q->offset >= 0
                ? q->offset
                : (lo >= 0 ? lo : 0);
    }
    cb(p->topic, p->partition, hi > pos ? hi - pos : 0, arg);
  }
  rd_kafka_topic_partition_list_destroy(idle);
  rd_kafka_topic_partition_list_destroy(parts);
}
