/* shopctl events tail and dlt: records of a topic and dead letters. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "config/config.h"
#include "events/events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "reconcile/reconcile.h"
#include "rpc/rpc.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

/* ---- events ------------------------------------------------------------ */

/* The one signal flag: set by SIGINT/SIGTERM so that tail stops cleanly
 * and frees its consumer. A signal handler can reach nothing else. */
static volatile sig_atomic_t stop_requested;

static void stop_cb(int sig) { stop_requested = sig; }

static const char *brokers_of(const cli_opts *o) {
  if (o->brokers != NULL) return o->brokers;
  return o->cfg != NULL ? o->cfg->kafka.brokers : NULL;
}

static json_t *event_json(const char *type, const void *value, size_t len) {
  const ProtobufCMessageDescriptor *d = type ? pbjson_message_find(type) : NULL;
  char err[STATUS_ERRBUF_SIZE];
  json_t *j = NULL;
  if (d != NULL && pbjson_from_bytes(&j, d, value, len, err, sizeof err) == STATUS_OK) return j;
  char *b = pbjson_base64_encode(value, len);
  j = json_pack("{s:s}", "valueBase64", b ? b : "");
  free(b);
  return j;
}

static json_t *bytes_json(const void *p, size_t n) {
  if (p == NULL) return json_null();
  json_t *s = json_stringn_nocheck(p, n);
  return json_string_value(s) != NULL && memchr(p, '\0', n) == NULL ? s : json_null();
}

static void print_record(const rd_kafka_message_t *msg) {
  json_t *j = json_object();
  json_object_set_new(j, "topic", json_string(rd_kafka_topic_name(msg->rkt)));
  json_object_set_new(j, "partition", json_integer(msg->partition));
  json_object_set_new(j, "offset", json_integer(msg->offset));
  rd_kafka_timestamp_type_t tt;
  json_object_set_new(j, "timestampMs", json_integer(rd_kafka_message_timestamp(msg, &tt)));
  json_object_set_new(j, "key", bytes_json(msg->key, msg->key_len));
  json_t *hj = json_object();
  const char *type = NULL;
  char type_buf[256];
  rd_kafka_headers_t *hdrs = NULL;
  if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
      json_object_set_new(hj, name, bytes_json(val, size));
      if (strcmp(name, "ce_type") == 0 && val != NULL && size < sizeof type_buf) {
        memcpy(type_buf, val, size);
        type_buf[size] = '\0';
        type = type_buf;
      }
    }
  }
  json_object_set_new(j, "headers", hj);
  if (type != NULL) json_object_set_new(j, "type", json_string(type));
  json_object_set_new(j, "event", event_json(type, msg->payload, msg->len));
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  fflush(stdout);
  free(s);
  json_decref(j);
}

int cli_cmd_events_tail(cli_opts *o) {
  if (o->n_args != 3 || strcmp(o->args[1], "tail") != 0) return cli_usage(stderr), 2;
  const char *brokers = brokers_of(o);
  if (brokers == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "no brokers: give --brokers or --config%s%s", "",
                         "");
  const char *topic = o->args[2];
  char err[STATUS_ERRBUF_SIZE];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  /* No group: tail reads without committing anything, by assignment. */
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", "shopctl-tail", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "%s%s", err, "");
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk == NULL) {
    rd_kafka_conf_destroy(conf);
    return cli_fail_code(STATUS_INTERNAL, "%s%s", err, "");
  }
  int code = 0;
  rd_kafka_topic_partition_list_t *parts = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
  rd_kafka_topic_destroy(rkt);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err ||
      md->topics[0].partition_cnt == 0) {
    code =
        cli_fail_code(STATUS_NOT_FOUND, "topic %s: %s", topic,
                      e ? rd_kafka_err2str(e)
                        : rd_kafka_err2str(md->topics[0].err ? md->topics[0].err
                                                             : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    goto out;
  }
  parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
  for (int i = 0; i < md->topics[0].partition_cnt; i++)
    rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
        o->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
  if ((e = rd_kafka_assign(rk, parts)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    code = cli_fail_code(STATUS_UNAVAILABLE, "assign %s: %s", topic, rd_kafka_err2str(e));
    goto out;
  }
  struct sigaction sa = {.sa_handler = stop_cb};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  long seen = 0;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (!stop_requested && (o->max <= 0 || seen < o->max)) {
    if (o->timeout_ms > 0) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
      if (ms >= o->timeout_ms) {
        code = status_exit_code(STATUS_DEADLINE_EXCEEDED);
        break;
      }
    }
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
    if (msg == NULL) continue;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      /* nothing */
    } else if (msg->err) {
      fprintf(stderr, "warning: %s\n", rd_kafka_message_errstr(msg));
    } else {
      print_record(msg);
      seen++;
    }
    rd_kafka_message_destroy(msg);
  }
out:
  if (md) rd_kafka_metadata_destroy(md);
  if (parts) rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  events_shutdown_wait(5000);
  return code;
}

static int dlt_entry_cb(const events_dlt_entry *e, void *arg) {
  json_t *j = json_object();
  json_object_set_new(j, "dltTopic", json_string(e->dlt_topic));
  json_object_set_new(j, "dltPartition", json_integer(e->dlt_partition));
  json_object_set_new(j, "dltOffset", json_integer(e->dlt_offset));
  json_object_set_new(j, "timestampMs", json_integer(e->timestamp_ms));
  json_object_set_new(j, "originalTopic", json_string(e->original_topic));
  json_object_set_new(j, "originalPartition", json_integer(e->original_partition));
  json_object_set_new(j, "originalOffset", json_integer(e->original_offset));
  json_object_set_new(j, "group", json_string(e->group));
  json_object_set_new(j, "error", json_string(e->error));
  json_object_set_new(j, "attempts", json_integer(e->attempts));
  json_object_set_new(j, "eventId", json_string(e->event_id));
  json_object_set_new(j, "type", json_string(e->event_type));
  json_object_set_new(j, "key", bytes_json(e->key, e->key_len));
  json_object_set_new(j, "replayed", json_boolean(e->replayed));
  json_object_set_new(j, "event",
                      event_json(e->event_type[0] ? e->event_type : NULL, e->value, e->value_len));
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  free(s);
  json_decref(j);
  (*(long *)arg)++;
  return 0;
}

int cli_cmd_dlt(cli_opts *o) {
  if (o->n_args != 4) return cli_usage(stderr), 2;
  const char *brokers = brokers_of(o);
  if (brokers == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "no brokers: give --brokers or --config%s%s", "",
                         "");
  char err[STATUS_ERRBUF_SIZE] = "";
  status_code rc;
  int timeout = o->timeout_ms > 0 ? (int)o->timeout_ms : 30000;
  if (strcmp(o->args[1], "list") == 0) {
    long n = 0;
    rc = events_dlt_list(brokers, o->args[2], o->args[3], dlt_entry_cb, &n, timeout, err,
                         sizeof err);
  } else if (strcmp(o->args[1], "replay") == 0) {
    events_dlt_replay_opts ro = {.event_id = o->event_id, .timeout_ms = timeout};
    size_t n = 0;
    rc = events_dlt_replay(brokers, o->args[2], o->args[3], &ro, &n, err, sizeof err);
    if (rc == STATUS_OK) printf("{\"replayed\":%zu}\n", n);
  } else {
    return cli_usage(stderr), 2;
  }
  events_shutdown_wait(5000);
  if (rc != STATUS_OK) return cli_fail_code(rc, "%s%s", err, "");
  return 0;
}
