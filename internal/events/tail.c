/* Following one topic from now on. See tail.h. */
#include "events/tail.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events/kafka_internal.h"
#include "log/log.h"

#define TAIL_META_TIMEOUT_MS 5000

struct events_tail {
  char *brokers, *client_id, *topic;
  events_tail_cb cb;
  void (*ready_cb)(void *arg);
  void *arg;
  int retry_ms;
  rd_kafka_t *rk;
  pthread_t thread;
  atomic_bool stop;
};

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Every partition assigned from its high watermark now; false (logged
 * once per kind of failure by the caller) while the brokers do not say. */
static bool tail_assign(events_tail *t, char *errbuf, size_t errlen) {
  status_code st;
  int64_t *lo, *hi;
  int n =
      events_kafka_watermarks(t->rk, t->topic, TAIL_META_TIMEOUT_MS, &lo, &hi, &st, errbuf, errlen);
  if (n < 0) return false;
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
  for (int p = 0; p < n; p++) rd_kafka_topic_partition_list_add(list, t->topic, p)->offset = hi[p];
  free(lo);
  free(hi);
  rd_kafka_resp_err_t e = rd_kafka_assign(t->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status_seterr(errbuf, errlen, "assigning %s: %s", t->topic, rd_kafka_err2str(e));
    return false;
  }
  return true;
}

static void *tail_main(void *arg) {
  events_tail *t = arg;
  char err[512] = "", last[512] = "";
  while (!atomic_load(&t->stop) && !tail_assign(t, err, sizeof err)) {
    if (strcmp(err, last) != 0) log_warn(NULL, "tail of %s: %s; trying again", t->topic, err);
    snprintf(last, sizeof last, "%s", err);
    sleep_ms(t->retry_ms);
  }
  if (!atomic_load(&t->stop)) {
    log_debug(NULL, "tail of %s: following every partition", t->topic);
    if (t->ready_cb != NULL) t->ready_cb(t->arg);
  }
  while (!atomic_load(&t->stop)) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, 200);
    if (m == NULL) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      events_record rec;
      events_header *hdrs = NULL;
      if (events_kafka_record_view(m, &rec, &hdrs)) t->cb(&rec, t->arg);
      free(hdrs);
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      log_debug(NULL, "tail of %s: %s", t->topic, rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
  }
  return NULL;
}

static void tail_free(events_tail *t) {
  if (t->rk != NULL) {
    rd_kafka_consumer_close(t->rk);
    rd_kafka_destroy(t->rk);
  }
  free(t->brokers);
  free(t->client_id);
  free(t->topic);
  free(t);
}

status_code events_tail_start(events_tail **out, const events_tail_opts *o, char *errbuf,
                              size_t errlen) {
  *out = NULL;
  if (o->brokers == NULL || o->topic == NULL || o->cb == NULL) {
    status_seterr(errbuf, errlen, "events_tail_start: brokers, topic and cb are required");
    return STATUS_INVALID_ARGUMENT;
  }
  events_tail *t = calloc(1, sizeof *t);
  if (t == NULL || (t->brokers = strdup(o->brokers)) == NULL ||
      (t->topic = strdup(o->topic)) == NULL ||
      (o->client_id != NULL && (t->client_id = strdup(o->client_id)) == NULL)) {
    if (t != NULL) tail_free(t);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  t->cb = o->cb;
  t->ready_cb = o->ready_cb;
  t->arg = o->arg;
  t->retry_ms = o->retry_ms > 0 ? o->retry_ms : 1000;
  /* group.id only because librdkafka's consumer wants one: the tail
   * assigns its partitions itself and never joins nor commits. */
  char group[256];
  snprintf(group, sizeof group, "%s.tail", t->client_id != NULL ? t->client_id : "shop");
  rd_kafka_conf_t *conf = events_kafka_conf_new(t->brokers, t->client_id, errbuf, errlen);
  if (conf == NULL || !events_kafka_set(conf, "group.id", group, errbuf, errlen) ||
      !events_kafka_set(conf, "enable.auto.commit", "false", errbuf, errlen) ||
      !events_kafka_set(conf, "enable.auto.offset.store", "false", errbuf, errlen) ||
      !events_kafka_set(conf, "auto.offset.reset", "earliest", errbuf, errlen)) {
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    tail_free(t);
    return STATUS_INTERNAL;
  }
  t->rk = events_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen, "tail of %s", o->topic);
  if (t->rk == NULL) {
    tail_free(t);
    return STATUS_INTERNAL;
  }
  rd_kafka_poll_set_consumer(t->rk);
  if (pthread_create(&t->thread, NULL, tail_main, t) != 0) {
    tail_free(t);
    status_seterr(errbuf, errlen, "tail of %s: no thread", o->topic);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *out = t;
  return STATUS_OK;
}

void events_tail_stop(events_tail *t) {
  if (t == NULL) return;
  atomic_store(&t->stop, true);
  pthread_join(t->thread, NULL);
  tail_free(t);
}
