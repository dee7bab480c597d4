/* The Kafka side of the stack: the run's start offsets, consumer groups,
 * reading a topic. See stack.h. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/consumers.h"
#include "stack_internal.h"
#include "support/stack.h"
#include "support/wait.h"
#include "topology/topology.h"

#define KAFKA_TIMEOUT_MS 10000
#define LEADERS_MS 30000

static rd_kafka_t *kafka_consumer(const char *group, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  const char *brokers = getenv("SHOP_KAFKA_BROKERS");
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers != NULL ? brokers : "127.0.0.1:29092",
                        err, errlen) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", group, err, errlen) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, errlen) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
  if (rk == NULL) rd_kafka_conf_destroy(conf);
  return rk;
}

/* The watermarks of topic/partition. Right after a broker (re)start the
 * leaders may not be elected yet: "not leader" passes within seconds. */
static rd_kafka_resp_err_t watermarks(rd_kafka_t *rk, const char *topic, int p, int64_t *lo,
                                      int64_t *hi) {
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  bool ok;
  WAIT_FOR(ok,
           (e = rd_kafka_query_watermark_offsets(rk, topic, p, lo, hi, KAFKA_TIMEOUT_MS)) ==
               RD_KAFKA_RESP_ERR_NO_ERROR,
           LEADERS_MS);
  (void)ok;
  return e;
}

bool stack_offsets_snapshot(char *err, size_t errlen) {
  rd_kafka_t *rk = kafka_consumer("stack-offsets", err, errlen);
  if (rk == NULL) return false;
  char out[4096];
  size_t o = 0;
  out[0] = '\0';
  bool ok = true;
  /* Every domain topic: the replay tests rewind groups to these. */
  for (size_t t = 0; ok && t < topology_topic_count(); t++) {
    const char *topic = topology_topic(t);
    for (int p = 0; ok && p < TOPOLOGY_DOMAIN_PARTITIONS; p++) {
      int64_t lo = 0, hi = 0;
      rd_kafka_resp_err_t e = watermarks(rk, topic, p, &lo, &hi);
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "watermarks of %s/%d: %s", topic, p, rd_kafka_err2str(e));
        ok = false;
      } else {
        o += (size_t)snprintf(out + o, sizeof out - o, "%s/%d=%lld;", topic, p, (long long)hi);
      }
    }
  }
  rd_kafka_destroy(rk);
  if (ok) setenv("SHOP_E2E_REPLAY_FROM", out, 1);
  return ok;
}

int64_t stack_start_offset(const char *topic, int partition) {
  const char *s = getenv("SHOP_E2E_REPLAY_FROM");
  cr_assert_not_null(s, "SHOP_E2E_REPLAY_FROM is not set");
  char key[300];
  snprintf(key, sizeof key, "%s/%d=", topic, partition);
  const char *at = strstr(s, key);
  cr_assert_not_null(at, "no start offset for %s/%d", topic, partition);
  return strtoll(at + strlen(key), NULL, 10);
}

bool stack_group_caught_up(const char *group, const char *const *topics, size_t n) {
  char err[512];
  rd_kafka_t *rk = kafka_consumer(group, err, sizeof err);
  cr_assert_not_null(rk, "kafka: %s", err);
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)n * TOPOLOGY_DOMAIN_PARTITIONS);
  for (size_t t = 0; t < n; t++)
    for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++)
      rd_kafka_topic_partition_list_add(l, topics[t], p);
  bool caught = rd_kafka_committed(rk, l, KAFKA_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int i = 0; caught && i < l->cnt; i++) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(rk, l->elems[i].topic, l->elems[i].partition, &lo, &hi,
                                         KAFKA_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      caught = false;
      break;
    }
    int64_t committed = l->elems[i].offset;
    if (hi > lo && (committed < 0 || committed < hi)) caught = false;
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return caught;
}

size_t stack_group_topics(const char *group, const char **out, size_t max) {
  const consumer_spec *g = consumers_find(group);
  cr_assert_not_null(g, "no consumer group %s in consumers.h", group);
  size_t n = consumer_spec_topics(g, out, max);
  cr_assert_leq(n, max, "group %s reads more than %zu topics", group, max);
  return n;
}

bool stack_group_quiet(const char *group) {
  const char *topics[STACK_GROUP_TOPICS_MAX];
  size_t n = stack_group_topics(group, topics, STACK_GROUP_TOPICS_MAX);
  return stack_group_caught_up(group, topics, n);
}

/* Commits, for group, the run's start offsets or (earliest) each
 * partition's low watermark. */
static bool group_rewind(const char *group, const char *const *topics, size_t n, bool earliest) {
  char err[512];
  rd_kafka_t *rk = kafka_consumer(group, err, sizeof err);
  cr_assert_not_null(rk, "kafka: %s", err);
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)n * TOPOLOGY_DOMAIN_PARTITIONS);
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (size_t t = 0; t < n; t++) {
    for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++) {
      int64_t lo = 0, hi = 0;
      if (earliest && e == RD_KAFKA_RESP_ERR_NO_ERROR)
        e = rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, KAFKA_TIMEOUT_MS);
      rd_kafka_topic_partition_list_add(l, topics[t], p)->offset =
          earliest ? lo : stack_start_offset(topics[t], p);
    }
  }
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR) e = rd_kafka_commit(rk, l, 0);
  for (int i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && i < l->cnt; i++) e = l->elems[i].err;
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return e == RD_KAFKA_RESP_ERR_NO_ERROR;
}

bool stack_group_rewind(const char *group, const char *const *topics, size_t n) {
  return group_rewind(group, topics, n, false);
}

bool stack_group_rewind_earliest(const char *group, const char *const *topics, size_t n) {
  return group_rewind(group, topics, n, true);
}

/* A topic being read from the run's start to its end. */
typedef struct reader {
  rd_kafka_t *rk;
  int64_t end[TOPOLOGY_DOMAIN_PARTITIONS];
  bool open[TOPOLOGY_DOMAIN_PARTITIONS];
  int left; /* partitions not read to their end yet */
  stack_record_cb fn;
  void *arg;
} reader;

/* Hands on every record that comes within 100 ms of the one before; true
 * once every partition is read to its end. */
static bool read_some(reader *r) {
  rd_kafka_message_t *m;
  while (r->left > 0 && (m = rd_kafka_consumer_poll(r->rk, 100)) != NULL) {
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->partition >= 0 &&
        m->partition < TOPOLOGY_DOMAIN_PARTITIONS && r->open[m->partition]) {
      r->fn(m, r->arg);
      if (m->offset + 1 >= r->end[m->partition]) {
        r->open[m->partition] = false;
        r->left--;
      }
    }
    rd_kafka_message_destroy(m);
  }
  return r->left == 0;
}

void stack_topic_read(const char *topic, stack_record_cb fn, void *arg, int timeout_ms) {
  char err[512] = "";
  reader r = {.fn = fn, .arg = arg};
  r.rk = kafka_consumer("stack-records", err, sizeof err);
  cr_assert_not_null(r.rk, "kafka: %s", err);
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new(TOPOLOGY_DOMAIN_PARTITIONS);
  for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++) {
    int64_t lo = 0;
    rd_kafka_resp_err_t e = watermarks(r.rk, topic, p, &lo, &r.end[p]);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks of %s/%d: %s", topic, p,
                 rd_kafka_err2str(e));
    int64_t from = stack_start_offset(topic, p);
    if (from < lo) from = lo;
    if (from < r.end[p]) {
      rd_kafka_topic_partition_list_add(l, topic, p)->offset = from;
      r.open[p] = true;
      r.left++;
    }
  }
  cr_assert_eq(rd_kafka_assign(r.rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(l);
  bool done;
  WAIT_FOR(done, read_some(&r), timeout_ms);
  rd_kafka_consumer_close(r.rk);
  rd_kafka_destroy(r.rk);
  cr_assert(done, "%s was not read to its end within %d ms (%d partition(s) left)", topic,
            timeout_ms, r.left);
}

static void header_copy(rd_kafka_headers_t *h, const char *name, char *out, size_t len) {
  const void *v = NULL;
  size_t n = 0;
  out[0] = '\0';
  if (h != NULL && rd_kafka_header_get_last(h, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
    snprintf(out, len, "%.*s", (int)n, (const char *)v);
}

typedef struct records {
  const char *key;
  stack_record *out;
  size_t max, n;
} records;

static void record_cb(const void *msg, void *arg) {
  const rd_kafka_message_t *m = msg;
  records *rs = arg;
  if (m->key_len != strlen(rs->key) || memcmp(m->key, rs->key, m->key_len) != 0) return;
  if (rs->n < rs->max) {
    rd_kafka_headers_t *h = NULL;
    rd_kafka_message_headers(m, &h);
    stack_record *r = &rs->out[rs->n];
    header_copy(h, "ce_type", r->type, sizeof r->type);
    header_copy(h, "ce_id", r->id, sizeof r->id);
    header_copy(h, "traceparent", r->traceparent, sizeof r->traceparent);
  }
  rs->n++;
}

size_t stack_records(const char *topic, const char *key, stack_record *out, size_t max) {
  records rs = {.key = key, .out = out, .max = max};
  stack_topic_read(topic, record_cb, &rs, KAFKA_TIMEOUT_MS);
  return rs.n;
}
