/* A consumer's dead letters. See consumer.h for the contract. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/consumer_internal.h"
#include "events/events_internal.h"
#include "log/log.h"
#include "topology/topology.h"

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
  c->dlt = events_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err,
                            "consumer %s: dead-letter producer", c->group);
  if (c->dlt == NULL) {
    log_error(NULL, "%s", err);
    return false;
  }
  return true;
}

bool consumer_dlt_send(consumer *c, item *it, const char *error, int attempts) {
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
  events_kafka_dlt_headers_add(h, topic, m->partition, m->offset, c->group, error, attempts);
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
    if (consumer_stopping(c) && result == RD_KAFKA_RESP_ERR__IN_PROGRESS) {
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

status_code consumer_dlt_topics_create(consumer *c, char *errbuf, size_t errlen) {
  char names[64][TOPOLOGY_TOPIC_NAME_MAX + 1];
  events_topic_spec specs[64];
  size_t n = 0;
  for (size_t i = 0; i < c->ntopics && n < 64; i++) {
    if (topology_dlt_name(names[n], sizeof names[n], c->topics[i], c->group) < 0) continue;
    specs[n] = (events_topic_spec){.name = names[n], .partitions = TOPOLOGY_DLT_PARTITIONS};
    n++;
  }
  return events_topics_create(c->brokers, specs, n, 10000, errbuf, errlen);
}

void consumer_dlt_close(consumer *c) {
  if (c->dlt == NULL) return;
  rd_kafka_flush(c->dlt, 5000);
  rd_kafka_destroy(c->dlt);
  c->dlt = NULL;
}
