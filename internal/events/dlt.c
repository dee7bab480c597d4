/* Listing and replaying dead letters. See events.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"
#include "events/events_internal.h"
#include "events/kafka_internal.h"
#include "log/log.h"
#include "topology/topology.h"

/* A reader of one dead-letter topic, from chosen offsets up to the end the
 * topic had when it was opened. */
typedef struct dlt_reader {
  rd_kafka_t *rk;
  char dlt[TOPOLOGY_TOPIC_NAME_MAX + 1];
  int partitions;
  int64_t *start, *end, *committed; /* per partition */
} dlt_reader;

static void reader_close(dlt_reader *r) {
  if (r->rk != NULL) {
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
  }
  free(r->start);
  free(r->end);
  free(r->committed);
  memset(r, 0, sizeof *r);
}

/* Opens the reader; from_committed starts each partition at the replay
 * group's committed offset instead of the beginning. */
static status_code reader_open(dlt_reader *r, const char *brokers, const char *topic,
                               const char *group, bool from_committed, int timeout_ms, char *errbuf,
                               size_t errlen) {
  memset(r, 0, sizeof *r);
  if (topology_dlt_name(r->dlt, sizeof r->dlt, topic, group) < 0) {
    status_seterr(errbuf, errlen, "no dead-letter topic name for %s and %s", topic, group);
    return STATUS_INVALID_ARGUMENT;
  }
  char replay_group[256];
  snprintf(replay_group, sizeof replay_group, "%s.dlt-replay", group);
  rd_kafka_conf_t *conf = events_kafka_conf_new(brokers, "shop-dlt", errbuf, errlen);
  if (conf == NULL) return STATUS_INVALID_ARGUMENT;
  if (!events_kafka_set(conf, "group.id", replay_group, errbuf, errlen) ||
      !events_kafka_set(conf, "enable.auto.commit", "false", errbuf, errlen) ||
      !events_kafka_set(conf, "enable.auto.offset.store", "false", errbuf, errlen)) {
    rd_kafka_conf_destroy(conf);
    return STATUS_INVALID_ARGUMENT;
  }
  r->rk = events_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen, "dead-letter reader");
  if (r->rk == NULL) return STATUS_INTERNAL;
  rd_kafka_poll_set_consumer(r->rk);
  status_code st;
  r->partitions =
      events_kafka_watermarks(r->rk, r->dlt, timeout_ms, &r->start, &r->end, &st, errbuf, errlen);
  if (r->partitions < 0) {
    reader_close(r);
    return st;
  }
  r->committed = calloc((size_t)r->partitions, sizeof *r->committed);
  if (r->committed == NULL) {
    reader_close(r);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(r->partitions);
  for (int p = 0; p < r->partitions; p++) rd_kafka_topic_partition_list_add(list, r->dlt, p);
  rd_kafka_resp_err_t e = rd_kafka_committed(r->rk, list, timeout_ms);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status_seterr(errbuf, errlen, "replay position of %s: %s", r->dlt, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(list);
    reader_close(r);
    return STATUS_UNAVAILABLE;
  }
  for (int p = 0; p < r->partitions; p++) {
    int64_t c = list->elems[p].offset;
    r->committed[p] = c >= 0 ? c : r->start[p];
    if (r->committed[p] < r->start[p]) r->committed[p] = r->start[p];
    if (from_committed) r->start[p] = r->committed[p];
    list->elems[p].offset = r->start[p];
  }
  e = rd_kafka_assign(r->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status_seterr(errbuf, errlen, "reading %s: %s", r->dlt, rd_kafka_err2str(e));
    reader_close(r);
    return STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}

typedef int (*record_cb)(const rd_kafka_message_t *m, dlt_reader *r, void *arg);

/* Calls cb for every record from start to end; OK, or DEADLINE_EXCEEDED. */
static status_code reader_each(dlt_reader *r, record_cb cb, void *arg, int timeout_ms, char *errbuf,
                               size_t errlen) {
  int left = 0;
  for (int p = 0; p < r->partitions; p++) left += r->start[p] < r->end[p];
  int64_t until = events_now_ms() + timeout_ms;
  while (left > 0) {
    if (events_now_ms() > until) {
      status_seterr(errbuf, errlen, "reading %s: not at its end after %d ms", r->dlt, timeout_ms);
      return STATUS_DEADLINE_EXCEEDED;
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 200);
    if (m == NULL) continue;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      log_debug(NULL, "dlt: %s", rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    int p = m->partition;
    bool stop = false;
    if (p >= 0 && p < r->partitions && m->offset < r->end[p]) {
      stop = cb(m, r, arg) != 0;
      if (m->offset + 1 >= r->end[p]) left--;
    }
    rd_kafka_message_destroy(m);
    if (stop) break;
  }
  return STATUS_OK;
}

/* A header's value as a NUL-terminated copy in buf ("" when missing). */
static const char *header(const rd_kafka_message_t *m, const char *name, char *buf, size_t len) {
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t n;
  buf[0] = '\0';
  if (rd_kafka_message_headers((rd_kafka_message_t *)m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || v == NULL) {
    return buf;
  }
  if (n >= len) n = len - 1;
  memcpy(buf, v, n);
  buf[n] = '\0';
  return buf;
}

/* --- List ------------------------------------------------------------------------------ */

typedef struct list_ctx {
  events_dlt_entry_cb cb;
  void *arg;
} list_ctx;

static int list_one(const rd_kafka_message_t *m, dlt_reader *r, void *arg) {
  list_ctx *lc = arg;
  char otopic[256], opart[16], ooff[24], group[160], error[1100], attempts[16], id[80], type[256];
  events_dlt_entry e = {
      .dlt_topic = r->dlt,
      .dlt_partition = m->partition,
      .dlt_offset = m->offset,
      .timestamp_ms = rd_kafka_message_timestamp(m, NULL),
      .original_topic = header(m, EVENTS_DLT_ORIGINAL_TOPIC, otopic, sizeof otopic),
      .original_partition = atoi(header(m, EVENTS_DLT_ORIGINAL_PARTITION, opart, sizeof opart)),
      .original_offset = atoll(header(m, EVENTS_DLT_ORIGINAL_OFFSET, ooff, sizeof ooff)),
      .group = header(m, EVENTS_DLT_GROUP, group, sizeof group),
      .error = header(m, EVENTS_DLT_ERROR, error, sizeof error),
      .attempts = atoi(header(m, EVENTS_DLT_ATTEMPTS, attempts, sizeof attempts)),
      .event_id = header(m, "ce_id", id, sizeof id),
      .event_type = header(m, "ce_type", type, sizeof type),
      .key = m->key,
      .key_len = m->key_len,
      .value = m->payload,
      .value_len = m->len,
      .replayed = m->offset < r->committed[m->partition],
  };
  return lc->cb(&e, lc->arg);
}

status_code events_dlt_list(const char *brokers, const char *topic, const char *group,
                            events_dlt_entry_cb cb, void *arg, int timeout_ms, char *errbuf,
                            size_t errlen) {
  if (timeout_ms <= 0) timeout_ms = 30000;
  dlt_reader r;
  status_code st = reader_open(&r, brokers, topic, group, false, timeout_ms, errbuf, errlen);
  if (st != STATUS_OK) return st;
  list_ctx lc = {cb, arg};
  st = reader_each(&r, list_one, &lc, timeout_ms, errbuf, errlen);
  reader_close(&r);
  return st;
}

/* --- Replay ---------------------------------------------------------------------------- */

typedef struct replay_ctx {
  rd_kafka_t *producer;
  const char *event_id;
  size_t produced;
  size_t skipped;
  rd_kafka_resp_err_t failed; /* first delivery or produce error */
} replay_ctx;

static void replay_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  replay_ctx *rc = opaque;
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR && rc->failed == RD_KAFKA_RESP_ERR_NO_ERROR) {
    rc->failed = m->err;
  }
}

static int replay_one(const rd_kafka_message_t *m, dlt_reader *r, void *arg) {
  (void)r;
  replay_ctx *rc = arg;
  char otopic[256], id[80];
  header(m, EVENTS_DLT_ORIGINAL_TOPIC, otopic, sizeof otopic);
  if (rc->event_id != NULL && strcmp(header(m, "ce_id", id, sizeof id), rc->event_id) != 0) {
    return 0;
  }
  if (otopic[0] == '\0') {
    log_warn(NULL, "dlt: %s @%lld has no %s header; not replayed", rd_kafka_topic_name(m->rkt),
             (long long)m->offset, EVENTS_DLT_ORIGINAL_TOPIC);
    rc->skipped++;
    return 0;
  }
  /* The original headers, without the dead-letter ones. */
  rd_kafka_headers_t *orig = NULL;
  rd_kafka_message_headers((rd_kafka_message_t *)m, &orig);
  size_t n = orig != NULL ? rd_kafka_header_cnt(orig) : 0;
  rd_kafka_headers_t *h = rd_kafka_headers_new(n);
  for (size_t i = 0; i < n; i++) {
    const char *name;
    const void *v;
    size_t len;
    if (rd_kafka_header_get_all(orig, i, &name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR) break;
    if (strncmp(name, "dlt_", 4) == 0) continue;
    rd_kafka_header_add(h, name, -1, v, (ssize_t)len);
  }
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rc->producer, RD_KAFKA_V_TOPIC(otopic), RD_KAFKA_V_KEY(m->key, m->key_len),
      RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(h);
    rc->failed = e;
    return 1;
  }
  rc->produced++;
  rd_kafka_poll(rc->producer, 0);
  return 0;
}

status_code events_dlt_replay(const char *brokers, const char *topic, const char *group,
                              const events_dlt_replay_opts *opts, size_t *replayed, char *errbuf,
                              size_t errlen) {
  int timeout_ms = opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
  const char *only = opts != NULL ? opts->event_id : NULL;
  if (replayed != NULL) *replayed = 0;
  dlt_reader r;
  status_code st = reader_open(&r, brokers, topic, group, only == NULL, timeout_ms, errbuf, errlen);
  if (st != STATUS_OK) return st;

  replay_ctx rc = {.event_id = only};
  rd_kafka_conf_t *conf = events_kafka_conf_new(brokers, "shop-dlt-replay", errbuf, errlen);
  if (conf == NULL || !events_kafka_producer_conf(conf, timeout_ms, 5, errbuf, errlen)) {
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    reader_close(&r);
    return STATUS_INVALID_ARGUMENT;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, replay_dr_cb);
  rd_kafka_conf_set_opaque(conf, &rc);
  rc.producer = events_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen, "replay producer");
  if (rc.producer == NULL) {
    reader_close(&r);
    return STATUS_INTERNAL;
  }
  st = reader_each(&r, replay_one, &rc, timeout_ms, errbuf, errlen);
  rd_kafka_resp_err_t fe = rd_kafka_flush(rc.producer, timeout_ms);
  if (st == STATUS_OK &&
      (fe != RD_KAFKA_RESP_ERR_NO_ERROR || rc.failed != RD_KAFKA_RESP_ERR_NO_ERROR)) {
    status_seterr(errbuf, errlen, "replaying %s: %s", r.dlt,
                  rd_kafka_err2str(rc.failed != RD_KAFKA_RESP_ERR_NO_ERROR ? rc.failed : fe));
    st = STATUS_UNAVAILABLE;
  }
  if (st == STATUS_OK && only == NULL) {
    /* Everything up to the end is re-published: move the replay position. */
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(r.partitions);
    for (int p = 0; p < r.partitions; p++) {
      rd_kafka_topic_partition_list_add(list, r.dlt, p)->offset = r.end[p];
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(r.rk, list, 0);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      status_seterr(errbuf, errlen, "replayed, but saving the replay position of %s failed: %s",
                    r.dlt, rd_kafka_err2str(e));
      st = STATUS_UNAVAILABLE;
    }
  }
  if (replayed != NULL) *replayed = rc.produced;
  rd_kafka_destroy(rc.producer);
  reader_close(&r);
  return st;
}

/* --- Send ------------------------------------------------------------------------------ */

static void send_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  *(rd_kafka_resp_err_t *)opaque = m->err;
}

status_code events_dlt_send(const char *brokers, const events_envelope *ev, const char *group,
                            int32_t partition, int64_t offset, const char *error, int attempts,
                            int timeout_ms, char *errbuf, size_t errlen) {
  if (timeout_ms <= 0) timeout_ms = 30000;
  status_code st = events_envelope_validate(ev, errbuf, errlen);
  if (st != STATUS_OK) return st;
  char dlt[TOPOLOGY_TOPIC_NAME_MAX + 1];
  if (topology_dlt_name(dlt, sizeof dlt, ev->topic, group) < 0) {
    status_seterr(errbuf, errlen, "no dead-letter topic name for %s and %s", ev->topic, group);
    return STATUS_INVALID_ARGUMENT;
  }
  volatile rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR__IN_PROGRESS;
  rd_kafka_conf_t *conf = events_kafka_conf_new(brokers, "shop-dlt-send", errbuf, errlen);
  if (conf == NULL || !events_kafka_producer_conf(conf, timeout_ms, 0, errbuf, errlen)) {
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    return STATUS_INVALID_ARGUMENT;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, send_dr_cb);
  rd_kafka_conf_set_opaque(conf, (void *)&result);
  rd_kafka_t *rk =
      events_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen, "dead-letter producer");
  if (rk == NULL) return STATUS_INTERNAL;
  rd_kafka_headers_t *h = events_kafka_headers_from_envelope(ev);
  events_kafka_dlt_headers_add(h, ev->topic, partition, offset, group, error, attempts);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(dlt), RD_KAFKA_V_KEY(ev->key, strlen(ev->key)),
      RD_KAFKA_V_VALUE(ev->data.data, ev->data.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(h);
    result = e;
  } else {
    /* The message times out after timeout_ms: its report always comes. */
    while (result == RD_KAFKA_RESP_ERR__IN_PROGRESS) rd_kafka_poll(rk, 100);
  }
  rd_kafka_destroy(rk);
  if (result != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status_seterr(errbuf, errlen, "dead letter to %s: %s", dlt, rd_kafka_err2str(result));
    return events_kafka_err_permanent(result) ? STATUS_FAILED_PRECONDITION : STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}
