/* The consumer framework: set-up, the poll loop, rebalances, lag. See
 * consumer.h for the contract. */
#include "events/consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/consumer_internal.h"
#include "events/events_internal.h"
#include "log/log.h"
#include "topology/topology.h"

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

status_code consumer_spec_apply(db_conn *tx, const consumer_spec *spec, const consumer_msg *msgs,
                                size_t n, void *arg, char *errbuf, size_t errlen) {
  status_code st = STATUS_OK;
  if (spec->types == NULL) {
    st = spec->handler(tx, msgs, n, arg, errbuf, errlen);
  } else {
    consumer_msg *taken = calloc(n > 0 ? n : 1, sizeof *taken);
    if (taken == NULL) {
      status_seterr(errbuf, errlen, "out of memory");
      return STATUS_RESOURCE_EXHAUSTED;
    }
    size_t nt = 0;
    for (size_t i = 0; i < n && st == STATUS_OK; i++) {
      ProtobufCMessage *m = NULL;
      size_t k = 0;
      st = consumer_event_decode(msgs[i].env, spec->types, spec->n_types, &m, &k, errbuf, errlen);
      if (st == STATUS_OK && m != NULL) {
        taken[nt] = msgs[i];
        taken[nt++].msg = m;
      }
    }
    if (st == STATUS_OK && nt > 0)
      st = consumer_table_apply(tx, spec->types, spec->n_types, spec->prepare, taken, nt, arg,
                                errbuf, errlen);
    for (size_t i = 0; i < nt; i++)
      protobuf_c_message_free_unpacked((ProtobufCMessage *)taken[i].msg, NULL);
    free(taken);
  }
  if (st == STATUS_OK && spec->before_commit != NULL)
    st = spec->before_commit(tx, arg, errbuf, errlen);
  return st;
}

status_code consumer_table_apply(db_conn *tx, const consumer_event_type *types, size_t n_types,
                                 consumer_prepare_cb prepare, const consumer_msg *msgs, size_t n,
                                 void *arg, char *errbuf, size_t errlen) {
  status_code st = prepare != NULL ? prepare(tx, msgs, n, arg, errbuf, errlen) : STATUS_OK;
  int max_pass = 0;
  for (size_t k = 0; k < n_types; k++)
    if (types[k].pass > max_pass) max_pass = types[k].pass;
  for (int pass = 0; pass <= max_pass && st == STATUS_OK; pass++) {
    for (size_t i = 0; i < n && st == STATUS_OK; i++) {
      const consumer_event_type *t = NULL;
      for (size_t k = 0; k < n_types && t == NULL; k++)
        if (types[k].desc == msgs[i].msg->descriptor) t = &types[k];
      if (t == NULL || t->pass != pass) continue;
      log_scope scope;
      events_log_scope_enter(&scope, msgs[i].env);
      st = t->apply(tx, &msgs[i], arg, errbuf, errlen);
      log_scope_leave(&scope);
    }
  }
  return st;
}

bool consumer_status_transient(status_code st) {
  return st == STATUS_UNAVAILABLE || st == STATUS_ABORTED;
}

void consumer_opts_init(consumer_opts *o, const shop_cfg *cfg, const consumer_spec *spec) {
  memset(o, 0, sizeof *o);
  o->batch_size = 256;
  o->fetch_wait_max_ms = 100;
  o->fetch_min_bytes = 1;
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
    o->fetch_wait_max_ms = cfg->kafka.fetch_wait_max_ms;
    o->fetch_min_bytes = cfg->kafka.fetch_min_bytes;
    o->batch_linger_ms = cfg->kafka.batch_linger_ms;
    o->statistics_interval_ms = cfg->kafka.statistics_interval_ms;
  }
  if (spec != NULL) {
    o->group = spec->group;
    o->types = spec->types;
    o->n_types = spec->n_types;
    o->handler = spec->handler;
    o->topics = spec->topics;
    o->topic_count = spec->topic_count;
    o->committed = spec->committed;
    o->ended = spec->ended;
    o->before_commit = spec->before_commit;
    o->prepare = spec->prepare;
  }
}

/* The distinct topics of types (or the given topics, or every domain
 * topic), at most max; 0 when a type has none. */
static size_t topics_of(const consumer_event_type *types, size_t n_types, const char *const *topics,
                        size_t topic_count, const char **out, size_t max) {
  size_t n = 0;
  if (types == NULL) {
    size_t total = topics != NULL ? topic_count : topology_topic_count();
    for (size_t i = 0; i < total && n < max; i++)
      out[n++] = topics != NULL ? topics[i] : topology_topic(i);
    return n;
  }
  for (size_t i = 0; i < n_types; i++) {
    const char *t = topology_topic_of_type(types[i].desc->name);
    if (t == NULL) return 0;
    bool seen = false;
    for (size_t j = 0; j < n && !seen; j++) seen = strcmp(out[j], t) == 0;
    if (!seen && n < max) out[n++] = t;
  }
  return n;
}

size_t consumer_spec_topics(const consumer_spec *spec, const char **out, size_t max) {
  return topics_of(spec->types, spec->n_types, spec->topics, spec->topic_count, out, max);
}

void consumer_stats_get(consumer *c, consumer_stats *out) {
  out->applied = atomic_load(&c->st_applied);
  out->skipped = atomic_load(&c->st_skipped);
  out->duplicates = atomic_load(&c->st_duplicates);
  out->dead_lettered = atomic_load(&c->st_dead);
  out->batches = atomic_load(&c->st_batches);
  out->rejects = atomic_load(&c->st_rejects);
  out->transient = atomic_load(&c->st_transient);
  out->assigned = atomic_load(&c->st_assigned);
  events_kafka_counters_get(&c->kstats, &out->kafka);
}

void consumer_stop(consumer *c) {
  if (c != NULL) atomic_store(&c->stop, true);
}

bool consumer_stopping(consumer *c) { return atomic_load(&c->stop); }

void consumer_nap(consumer *c, int64_t ms) {
  int64_t until = events_now_ms() + ms;
  while (!consumer_stopping(c)) {
    int64_t left = until - events_now_ms();
    if (left <= 0) return;
    events_sleep_ms(left < 50 ? left : 50);
  }
}

int64_t consumer_backoff_ms(const consumer *c, int attempt) {
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

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  (void)rk;
  events_kafka_stats_parse(&((consumer *)opaque)->kstats, json, len);
  return 0; /* librdkafka frees json */
}

static bool consumer_conf(consumer *c, rd_kafka_conf_t *conf, char *errbuf, size_t errlen) {
  char session[16], heartbeat[16], wait[16], minb[16];
  snprintf(wait, sizeof wait, "%d", c->o.fetch_wait_max_ms);
  snprintf(minb, sizeof minb, "%d", c->o.fetch_min_bytes);
  snprintf(session, sizeof session, "%d", c->o.session_timeout_ms);
  snprintf(heartbeat, sizeof heartbeat, "%d", c->o.heartbeat_ms);
  return events_kafka_set(conf, "group.id", c->group, errbuf, errlen) &&
         events_kafka_set(conf, "enable.auto.offset.store", "false", errbuf, errlen) &&
         events_kafka_set(conf, "enable.auto.commit", "true", errbuf, errlen) &&
         events_kafka_set(conf, "auto.commit.interval.ms", "1000", errbuf, errlen) &&
         events_kafka_set(conf, "auto.offset.reset", "earliest", errbuf, errlen) &&
         events_kafka_set(conf, "enable.partition.eof", "false", errbuf, errlen) &&
         /* A rewind (seek) waits for the fetch in flight: keep the wait
          * short. fetch.min.bytes lets a busy broker answer with batches. */
         events_kafka_set(conf, "fetch.wait.max.ms", wait, errbuf, errlen) &&
         events_kafka_set(conf, "fetch.min.bytes", minb, errbuf, errlen) &&
         events_kafka_set(conf, "session.timeout.ms", session, errbuf, errlen) &&
         events_kafka_set(conf, "heartbeat.interval.ms", heartbeat, errbuf, errlen) &&
         events_kafka_stats_conf(conf, c->o.statistics_interval_ms, stats_cb, errbuf, errlen);
}

status_code consumer_create(consumer **out, const consumer_opts *o, char *errbuf, size_t errlen) {
  if (o->brokers == NULL || o->group == NULL || o->group[0] == '\0' || o->db == NULL ||
      (o->handler == NULL) == (o->types == NULL)) {
    status_seterr(errbuf, errlen,
                  "consumer: brokers, group, db and either a table of types or a handler are"
                  " required");
    return STATUS_INVALID_ARGUMENT;
  }
  for (size_t i = 0; o->types != NULL && i < o->n_types; i++) {
    if (o->types[i].desc == NULL || o->types[i].apply == NULL || o->types[i].pass < 0 ||
        o->types[i].pass > 7) {
      status_seterr(errbuf, errlen,
                    "consumer %s: type %zu needs a descriptor, an apply function and a pass"
                    " of 0..7",
                    o->group, i);
      return STATUS_INVALID_ARGUMENT;
    }
  }
  if (o->fetch_wait_max_ms < 0 || o->fetch_min_bytes < 1) {
    status_seterr(errbuf, errlen, "consumer %s: need fetch_wait_max_ms >= 0, fetch_min_bytes >= 1",
                  o->group);
    return STATUS_INVALID_ARGUMENT;
  }
  if (o->batch_size < 1 || o->max_retries < 1 || o->retry_backoff_ms < 1 ||
      o->poll_timeout_ms < 1 || o->batch_linger_ms < 0 || strlen(o->group) > 128) {
    status_seterr(
        errbuf, errlen,
        "consumer %s: need batch_size, max_retries, retry_backoff_ms, poll_timeout_ms >= 1"
        " and a group name of at most 128 characters",
        o->group);
    return STATUS_INVALID_ARGUMENT;
  }
  const char *derived[64];
  const char *const *topics = o->topics;
  size_t ntopics = o->topic_count;
  if (topics == NULL) {
    ntopics = topics_of(o->types, o->n_types, NULL, 0, derived, 64);
    topics = derived;
  }
  if (ntopics == 0) {
    status_seterr(errbuf, errlen,
                  "consumer %s: no topics (an event type of no domain topic, or none given)",
                  o->group);
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
  bool db_ok = db_params_dup(&c->dbp, o->db);
  atomic_init(&c->stop, false);
  if (!db_ok || c->brokers == NULL || c->group == NULL || c->client_id == NULL ||
      c->topics == NULL || c->items == NULL || c->msgs == NULL) {
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
  c->o.db = &c->dbp.p;

  status_code st = db_connect(&c->db, &c->dbp.p, errbuf, errlen);
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
  c->rk = events_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen, "consumer %s", c->group);
  if (c->rk == NULL) {
    consumer_destroy(c);
    return STATUS_INTERNAL;
  }
  /* Errors, logs and rebalances all come out of rd_kafka_consumer_poll. */
  rd_kafka_poll_set_consumer(c->rk);
  *out = c;
  return STATUS_OK;
oom:
  status_seterr(errbuf, errlen, "consumer: out of memory");
  return STATUS_RESOURCE_EXHAUSTED;
}

static void items_release(consumer *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (c->items[i].m != NULL) rd_kafka_message_destroy(c->items[i].m);
    events_envelope_free(c->items[i].env);
    if (c->items[i].msg != NULL) protobuf_c_message_free_unpacked(c->items[i].msg, NULL);
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
  consumer_dlt_close(c);
  if (c->revoked != NULL) rd_kafka_topic_partition_list_destroy(c->revoked);
  db_close(c->db);
  for (size_t i = 0; i < c->ntopics; i++) free(c->topics[i]);
  free(c->topics);
  free(c->items);
  free(c->msgs);
  free(c->brokers);
  free(c->group);
  free(c->client_id);
  db_params_copy_free(&c->dbp);
  free(c);
}

/* --- The loop --------------------------------------------------------------------------- */

static bool revoked_has(consumer *c, const rd_kafka_message_t *m) {
  return rd_kafka_topic_partition_list_find(c->revoked, rd_kafka_topic_name(m->rkt),
                                            m->partition) != NULL;
}

/* Table mode: finds the record's type and decodes and checks its message,
 * before any database work. A type the table does not take is done. */
static void take(consumer *c, item *it) {
  size_t k = 0;
  char why[sizeof it->err];
  status_code st =
      consumer_event_decode(it->env, c->o.types, c->o.n_types, &it->msg, &k, why, sizeof why);
  if (st != STATUS_OK) {
    it->bad = true;
    snprintf(it->err, sizeof it->err, "%s", why);
  } else if (it->msg == NULL) {
    it->done = true;
    atomic_fetch_add(&c->st_skipped, 1);
  } else {
    it->type = &c->o.types[k];
  }
}

/* Polls up to batch_size records: waits poll_timeout_ms for the first,
 * then takes what arrives within batch_linger_ms of it (only what is
 * already there when that is 0). */
static size_t fill(consumer *c) {
  size_t n = 0;
  int timeout = c->o.poll_timeout_ms;
  int64_t until = 0; /* set by the first record: the batch's linger ends */
  c->revoke_mark = 0;
  while (n < c->cap && !consumer_stopping(c)) {
    c->fill_n = n;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout);
    if (m == NULL) break;
    timeout = 0;
    if (c->o.batch_linger_ms > 0) {
      int64_t now = events_now_ms();
      if (until == 0) until = now + c->o.batch_linger_ms;
      timeout = until > now ? (int)(until - now) : 0;
    }
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
      it->bad = true;
    } else if (c->o.types != NULL) {
      take(c, it);
    }
    free(hdrs);
  }
  if (c->revoked->cnt > 0) {
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
      if (i < c->revoke_mark && revoked_has(c, c->items[i].m)) {
        rd_kafka_message_destroy(c->items[i].m);
        events_envelope_free(c->items[i].env);
        if (c->items[i].msg != NULL) protobuf_c_message_free_unpacked(c->items[i].msg, NULL);
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

status_code consumer_inbox_forget(db_conn *tx, const char *group, const char *event_id,
                                  char *errbuf, size_t errlen) {
  db_value p[2] = {DB_STR(group), DB_STR(event_id)};
  return db_exec(tx, "DELETE FROM processed_events WHERE consumer_group = ? AND event_id = ?", p, 2,
                 NULL, NULL, errbuf, errlen);
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
    status_seterr(errbuf, errlen, "consumer %s: consumer_run may be called once", c->group);
    return STATUS_FAILED_PRECONDITION;
  }
  c->ran = true;
  char why[512];
  if (consumer_dlt_topics_create(c, why, sizeof why) != STATUS_OK) {
    /* Not fatal: the topics may exist already, and a dead letter that
     * cannot be written is retried (the batch waits). */
    log_warn(NULL, "consumer %s: creating its dead-letter topics: %s", c->group, why);
  }
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)c->ntopics);
  for (size_t i = 0; i < c->ntopics; i++) {
    rd_kafka_topic_partition_list_add(subs, c->topics[i], RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status_seterr(errbuf, errlen, "consumer %s: subscribe: %s", c->group, rd_kafka_err2str(e));
    rd_kafka_consumer_close(c->rk);
    return STATUS_INVALID_ARGUMENT;
  }
  log_info(NULL, "consumer %s: subscribed to %zu topic(s)", c->group, c->ntopics);
  c->next_purge_ms = events_now_ms() + c->o.purge_interval_ms;
  while (!consumer_stopping(c)) {
    size_t n = fill(c);
    if (n > 0) consumer_process(c, n);
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
    status_seterr(errbuf, errlen, "consumer %s: already started", c->group);
    return STATUS_FAILED_PRECONDITION;
  }
  int e = pthread_create(&c->thread, NULL, consumer_main, c);
  if (e != 0) {
    status_seterr(errbuf, errlen, "consumer %s: thread: %s", c->group, strerror(e));
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
