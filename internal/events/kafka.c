/* librdkafka glue shared by the relay, the consumer and the dead-letter
 * tools: configuration, logging, headers, topic administration. */
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events_internal.h"
#include "events/kafka_internal.h"
#include "log/log.h"

/* librdkafka's syslog levels onto Shop's. Runs on librdkafka's threads;
 * log_emit is thread-safe. */
static void events_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  log_level l = level <= 3   ? LOG_LEVEL_ERROR
                : level == 4 ? LOG_LEVEL_WARN
                : level <= 6 ? LOG_LEVEL_INFO
                             : LOG_LEVEL_DEBUG;
  /* Connection failures while a broker is down are expected and retried;
   * librdkafka reports them at error level, which would flood the log
   * during an outage that the relay rides out by design. */
  if (l == LOG_LEVEL_ERROR && (strcmp(fac, "FAIL") == 0 || strcmp(fac, "ERROR") == 0)) {
    l = LOG_LEVEL_WARN;
  }
  if (!log_enabled(l)) return;
  const char *kv[] = {"component", "rdkafka", "client", rd_kafka_name(rk), "facility", fac};
  log_emit_kv(l, NULL, kv, 3, "%s", buf);
}

void events_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)opaque;
  /* Transport errors repeat for as long as a broker is down and are also
   * in the log_cb lines; only the ones that need a person are logged. */
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char why[512];
    rd_kafka_fatal_error(rk, why, sizeof why);
    log_error(NULL, "kafka %s: fatal error: %s (%s)", rd_kafka_name(rk), why, reason);
  } else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    log_warn(NULL, "kafka %s: all brokers are down; retrying", rd_kafka_name(rk));
  } else {
    log_debug(NULL, "kafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
  }
}

bool events_kafka_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errbuf,
                      size_t errlen) {
  char why[256];
  if (rd_kafka_conf_set(conf, key, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
    status_seterr(errbuf, errlen, "kafka config %s=%s: %s", key, value, why);
    return false;
  }
  return true;
}

rd_kafka_conf_t *events_kafka_conf_new(const char *brokers, const char *client_id, char *errbuf,
                                       size_t errlen) {
  if (brokers == NULL || brokers[0] == '\0') {
    status_seterr(errbuf, errlen, "no Kafka brokers given");
    return NULL;
  }
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (!events_kafka_set(conf, "bootstrap.servers", brokers, errbuf, errlen) ||
      (client_id != NULL && !events_kafka_set(conf, "client.id", client_id, errbuf, errlen))) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_conf_set_log_cb(conf, events_kafka_log_cb);
  rd_kafka_conf_set_error_cb(conf, events_kafka_error_cb);
  return conf;
}

rd_kafka_t *events_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errbuf,
                             size_t errlen, const char *fmt, ...) {
  char why[512];
  rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof why);
  if (rk != NULL) return rk;
  rd_kafka_conf_destroy(conf);
  char prefix[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  status_seterr(errbuf, errlen, "%s: %s", prefix, why);
  return NULL;
}

bool events_kafka_producer_conf(rd_kafka_conf_t *conf, int message_timeout_ms, int linger_ms,
                                char *errbuf, size_t errlen) {
  char timeout[16], linger[16];
  snprintf(timeout, sizeof timeout, "%d", message_timeout_ms);
  snprintf(linger, sizeof linger, "%d", linger_ms);
  /* Idempotence keeps per-partition order through retries and makes
   * librdkafka drop the duplicates its own retries would cause; it needs
   * acks=all and at most 5 requests in flight. murmur2_random places keys
   * as Java clients do. */
  return events_kafka_set(conf, "enable.idempotence", "true", errbuf, errlen) &&
         events_kafka_set(conf, "acks", "all", errbuf, errlen) &&
         events_kafka_set(conf, "partitioner", "murmur2_random", errbuf, errlen) &&
         events_kafka_set(conf, "max.in.flight.requests.per.connection", "5", errbuf, errlen) &&
         events_kafka_set(conf, "message.send.max.retries", "2147483647", errbuf, errlen) &&
         events_kafka_set(conf, "message.timeout.ms", timeout, errbuf, errlen) &&
         events_kafka_set(conf, "linger.ms", linger, errbuf, errlen);
}

rd_kafka_headers_t *events_kafka_headers_from_envelope(const events_envelope *ev) {
  events_ce_headers ce;
  events_ce_headers_build(&ce, ev);
  rd_kafka_headers_t *h = rd_kafka_headers_new(ce.count);
  for (size_t i = 0; i < ce.count; i++) {
    rd_kafka_header_add(h, ce.h[i].name, -1, ce.h[i].value, (ssize_t)ce.h[i].len);
  }
  return h;
}

void events_kafka_dlt_headers_add(rd_kafka_headers_t *h, const char *topic, int32_t partition,
                                  int64_t offset, const char *group, const char *error,
                                  int attempts) {
  char part[16], off[24], att[16];
  snprintf(part, sizeof part, "%d", (int)partition);
  snprintf(off, sizeof off, "%lld", (long long)offset);
  snprintf(att, sizeof att, "%d", attempts);
  rd_kafka_header_add(h, EVENTS_DLT_ORIGINAL_TOPIC, -1, topic, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ORIGINAL_PARTITION, -1, part, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ORIGINAL_OFFSET, -1, off, -1);
  rd_kafka_header_add(h, EVENTS_DLT_GROUP, -1, group, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ERROR, -1, error, -1);
  rd_kafka_header_add(h, EVENTS_DLT_ATTEMPTS, -1, att, -1);
}

bool events_kafka_record_view(const rd_kafka_message_t *m, events_record *rec,
                              events_header **headers) {
  *headers = NULL;
  memset(rec, 0, sizeof *rec);
  rec->topic = m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "";
  rec->partition = m->partition;
  rec->offset = m->offset;
  rec->timestamp_ms = rd_kafka_message_timestamp(m, NULL);
  rec->key = m->key;
  rec->key_len = m->key_len;
  rec->value = m->payload;
  rec->value_len = m->len;
  rd_kafka_headers_t *h = NULL;
  /* rd_kafka_message_headers wants a non-const message but does not
   * change what we see of it (it parses the headers once, lazily). */
  if (rd_kafka_message_headers((rd_kafka_message_t *)m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return true;
  }
  size_t n = rd_kafka_header_cnt(h);
  if (n == 0) return true;
  events_header *arr = calloc(n, sizeof *arr);
  if (arr == NULL) return false;
  for (size_t i = 0; i < n; i++) {
    const char *name;
    const void *value;
    size_t size;
    if (rd_kafka_header_get_all(h, i, &name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) break;
    arr[i] = (events_header){.name = name, .value = value != NULL ? value : "", .len = size};
    rec->header_count = i + 1;
  }
  rec->headers = arr;
  *headers = arr;
  return true;
}

bool events_kafka_err_permanent(rd_kafka_resp_err_t err) {
  switch (err) {
  case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
  case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
  case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
  case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
  case RD_KAFKA_RESP_ERR_INVALID_RECORD:
  case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
  case RD_KAFKA_RESP_ERR__INVALID_ARG:
    return true;
  default:
    return false;
  }
}

int events_kafka_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                  status_code *st, char *errbuf, size_t errlen) {
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  if (rkt == NULL) {
    *st = STATUS_INVALID_ARGUMENT;
    status_seterr(errbuf, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
    return -1;
  }
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
  rd_kafka_topic_destroy(rkt);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    *st = STATUS_UNAVAILABLE;
    status_seterr(errbuf, errlen, "metadata of %s: %s", topic, rd_kafka_err2str(err));
    return -1;
  }
  int n = -1;
  *st = STATUS_NOT_FOUND;
  status_seterr(errbuf, errlen, "topic %s does not exist", topic);
  for (int i = 0; i < md->topic_cnt; i++) {
    if (strcmp(md->topics[i].topic, topic) != 0) continue;
    if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[i].partition_cnt > 0) {
      n = md->topics[i].partition_cnt;
      *st = STATUS_OK;
    } else if (md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      *st = STATUS_UNAVAILABLE;
      status_seterr(errbuf, errlen, "metadata of %s: %s", topic,
                    rd_kafka_err2str(md->topics[i].err));
    }
  }
  rd_kafka_metadata_destroy(md);
  return n;
}

int events_kafka_watermarks(rd_kafka_t *rk, const char *topic, int timeout_ms, int64_t **lo,
                            int64_t **hi, status_code *st, char *errbuf, size_t errlen) {
  *lo = *hi = NULL;
  int n = events_kafka_topic_partitions(rk, topic, timeout_ms, st, errbuf, errlen);
  if (n < 0) return -1;
  *lo = calloc((size_t)n, sizeof **lo);
  *hi = calloc((size_t)n, sizeof **hi);
  if (*lo == NULL || *hi == NULL) {
    *st = STATUS_RESOURCE_EXHAUSTED;
    status_seterr(errbuf, errlen, "out of memory");
    n = -1;
  }
  for (int p = 0; p < n; p++) {
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(rk, topic, p, &(*lo)[p], &(*hi)[p], timeout_ms);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      *st = STATUS_UNAVAILABLE;
      status_seterr(errbuf, errlen, "offsets of %s [%d]: %s", topic, p, rd_kafka_err2str(e));
      n = -1;
    }
  }
  if (n < 0) {
    free(*lo);
    free(*hi);
    *lo = *hi = NULL;
  }
  return n;
}

/* --- Topic administration ------------------------------------------------- */

typedef enum { ADMIN_CREATE, ADMIN_DELETE } admin_op;

/* Creates or deletes the n topics in one admin request. Each topic's
 * outcome goes to its spec's result; the status is the first failure's. */
static status_code admin_run(const char *brokers, admin_op op, events_topic_spec *topics, size_t n,
                             int timeout_ms, char *errbuf, size_t errlen) {
  if (timeout_ms <= 0) timeout_ms = 30000;
  for (size_t i = 0; i < n; i++) topics[i].result = EVENTS_TOPIC_FAILED;
  if (n == 0) return STATUS_OK;
  rd_kafka_conf_t *conf = events_kafka_conf_new(brokers, "shop-events-admin", errbuf, errlen);
  if (conf == NULL) return STATUS_INVALID_ARGUMENT;
  rd_kafka_t *rk = events_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen, "kafka admin client");
  if (rk == NULL) return STATUS_INTERNAL;
  char why[512];
  status_code st = STATUS_INTERNAL;
  rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
  rd_kafka_DeleteTopic_t **dt = calloc(n, sizeof *dt);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_event_t *ev = NULL;
  rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(
      rk, op == ADMIN_CREATE ? RD_KAFKA_ADMIN_OP_CREATETOPICS : RD_KAFKA_ADMIN_OP_DELETETOPICS);
  if (nt == NULL || dt == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    st = STATUS_RESOURCE_EXHAUSTED;
    goto out;
  }
  rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, NULL, 0);
  rd_kafka_AdminOptions_set_operation_timeout(ao, timeout_ms, NULL, 0);
  if (op == ADMIN_CREATE) {
    for (size_t i = 0; i < n; i++) {
      /* Replication factor -1: the brokers' default.replication.factor
       * (1 on the single broker of make run and make test, 3 on the
       * cluster profile), with their min.insync.replicas. */
      nt[i] = rd_kafka_NewTopic_new(topics[i].name, topics[i].partitions, -1, why, sizeof why);
      if (nt[i] == NULL) {
        status_seterr(errbuf, errlen, "topic %s: %s", topics[i].name, why);
        st = STATUS_INVALID_ARGUMENT;
        goto out;
      }
      /* Events are kept for good (read models are rebuilt from them), and
       * never compacted away: every version of an aggregate matters. */
      if (rd_kafka_NewTopic_set_config(nt[i], "retention.ms", "-1") ||
          rd_kafka_NewTopic_set_config(nt[i], "retention.bytes", "-1") ||
          rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "delete")) {
        status_seterr(errbuf, errlen, "topic %s: cannot set its config", topics[i].name);
        goto out;
      }
    }
    rd_kafka_CreateTopics(rk, nt, n, ao, q);
  } else {
    for (size_t i = 0; i < n; i++) dt[i] = rd_kafka_DeleteTopic_new(topics[i].name);
    rd_kafka_DeleteTopics(rk, dt, n, ao, q);
  }
  ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
  if (ev == NULL) {
    status_seterr(errbuf, errlen, "topic %s%s: no answer from the brokers in %d ms", topics[0].name,
                  n > 1 ? " and others" : "", timeout_ms);
    st = STATUS_DEADLINE_EXCEEDED;
    goto out;
  }
  if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status_seterr(errbuf, errlen, "topic %s%s: %s", topics[0].name, n > 1 ? " and others" : "",
                  rd_kafka_event_error_string(ev));
    st = STATUS_UNAVAILABLE;
    goto out;
  }
  size_t nres = 0;
  const rd_kafka_topic_result_t **res =
      op == ADMIN_CREATE
          ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres)
          : rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &nres);
  st = nres == n ? STATUS_OK : STATUS_INTERNAL;
  if (st != STATUS_OK) status_seterr(errbuf, errlen, "%zu topic results for %zu topics", nres, n);
  for (size_t r = 0; r < nres; r++) {
    const char *name = rd_kafka_topic_result_name(res[r]);
    events_topic_spec *t = NULL;
    for (size_t i = 0; i < n && t == NULL; i++)
      if (strcmp(topics[i].name, name) == 0) t = &topics[i];
    rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[r]);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (t != NULL) t->result = EVENTS_TOPIC_DONE;
      continue;
    }
    if ((op == ADMIN_CREATE && e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) ||
        (op == ADMIN_DELETE && e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)) {
      if (t != NULL) t->result = EVENTS_TOPIC_ALREADY;
      continue;
    }
    if (st != STATUS_OK) continue; /* the first failure is the one reported */
    const char *msg = rd_kafka_topic_result_error_string(res[r]);
    status_seterr(errbuf, errlen, "topic %s: %s", name, msg != NULL ? msg : rd_kafka_err2str(e));
    st = e == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION || e == RD_KAFKA_RESP_ERR_INVALID_PARTITIONS
             ? STATUS_INVALID_ARGUMENT
             : STATUS_UNAVAILABLE;
  }
out:
  if (ev != NULL) rd_kafka_event_destroy(ev);
  for (size_t i = 0; i < n && nt != NULL; i++)
    if (nt[i] != NULL) rd_kafka_NewTopic_destroy(nt[i]);
  for (size_t i = 0; i < n && dt != NULL; i++)
    if (dt[i] != NULL) rd_kafka_DeleteTopic_destroy(dt[i]);
  free(nt);
  free(dt);
  rd_kafka_AdminOptions_destroy(ao);
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(rk);
  return st;
}

status_code events_topics_create(const char *brokers, events_topic_spec *topics, size_t n,
                                 int timeout_ms, char *errbuf, size_t errlen) {
  return admin_run(brokers, ADMIN_CREATE, topics, n, timeout_ms, errbuf, errlen);
}

status_code events_topic_create(const char *brokers, const char *topic, int partitions,
                                int timeout_ms, char *errbuf, size_t errlen) {
  events_topic_spec t = {.name = topic, .partitions = partitions};
  return admin_run(brokers, ADMIN_CREATE, &t, 1, timeout_ms, errbuf, errlen);
}

status_code events_topic_delete(const char *brokers, const char *topic, int timeout_ms,
                                char *errbuf, size_t errlen) {
  events_topic_spec t = {.name = topic};
  return admin_run(brokers, ADMIN_DELETE, &t, 1, timeout_ms, errbuf, errlen);
}

bool events_shutdown_wait(int timeout_ms) { return rd_kafka_wait_destroyed(timeout_ms) == 0; }

/* --- Statistics ------------------------------------------------------------ */

bool events_kafka_stats_conf(rd_kafka_conf_t *conf, int interval_ms,
                             int (*cb)(rd_kafka_t *, char *, size_t, void *), char *errbuf,
                             size_t errlen) {
  if (interval_ms <= 0) return true;
  char v[16];
  snprintf(v, sizeof v, "%d", interval_ms);
  if (!events_kafka_set(conf, "statistics.interval.ms", v, errbuf, errlen)) return false;
  rd_kafka_conf_set_stats_cb(conf, cb);
  return true;
}

enum { KS_REQUESTS, KS_FETCHES, KS_PRODUCES, KS_TX_BYTES, KS_RX_BYTES };

static int64_t json_i64(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

void events_kafka_stats_parse(events_kafka_counters *c, const char *json, size_t len) {
  json_t *root = json_loadb(json, len, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return;
  }
  int64_t fetches = 0, produces = 0;
  const char *name;
  json_t *b;
  json_object_foreach(json_object_get(root, "brokers"), name, b) {
    const json_t *req = json_object_get(b, "req");
    fetches += json_i64(req, "Fetch");
    produces += json_i64(req, "Produce");
  }
  atomic_store(&c->now[KS_REQUESTS], json_i64(root, "tx"));
  atomic_store(&c->now[KS_FETCHES], fetches);
  atomic_store(&c->now[KS_PRODUCES], produces);
  atomic_store(&c->now[KS_TX_BYTES], json_i64(root, "tx_bytes"));
  atomic_store(&c->now[KS_RX_BYTES], json_i64(root, "rx_bytes"));
  json_decref(root);
}

void events_kafka_counters_rebase(events_kafka_counters *c) {
  for (int i = 0; i < 5; i++) atomic_fetch_add(&c->base[i], atomic_exchange(&c->now[i], 0));
}

void events_kafka_counters_get(events_kafka_counters *c, events_kafka_totals *out) {
  int64_t v[5];
  for (int i = 0; i < 5; i++) v[i] = atomic_load(&c->base[i]) + atomic_load(&c->now[i]);
  *out = (events_kafka_totals){.requests = v[KS_REQUESTS],
                               .fetches = v[KS_FETCHES],
                               .produces = v[KS_PRODUCES],
                               .bytes_sent = v[KS_TX_BYTES],
                               .bytes_received = v[KS_RX_BYTES]};
}
