/* Readiness and the scrape-time metrics of a Shop program: what its
 * database, RPC server, consumer and outbox relay say when asked. See
 * app_internal.h. */
#include <stdio.h>
#include <string.h>

#include "app/app_internal.h"

/* librdkafka asks the group coordinator for committed offsets of idle
 * partitions; a scrape waits at most this long for it. */
#define LAG_COMMITTED_TIMEOUT_MS 2000

static bool db_ok(db_pool *pool, char *why, size_t len) {
  db_conn *c = NULL;
  char err[STATUS_ERRBUF_SIZE];
  if (db_pool_get(pool, &c, err, sizeof err) != STATUS_OK) {
    snprintf(why, len, "database: %s", err);
    return false;
  }
  int64_t one = 0;
  status_code st = db_query_i64(c, "SELECT 1", NULL, 0, &one, err, sizeof err);
  db_pool_put(pool, c);
  if (st != STATUS_OK) snprintf(why, len, "database: %s", err);
  return st == STATUS_OK;
}

bool app_ready_cb(void *arg, char *why, size_t len) {
  app_observed *o = arg;
  if (!atomic_load(&o->up)) {
    snprintf(why, len, "%s", atomic_load(&o->stopping) ? "stopping" : "starting");
    return false;
  }
  if (o->srv != NULL && rpc_server_draining(o->srv)) {
    snprintf(why, len, "rpc server: draining");
    return false;
  }
  if (o->cons != NULL) {
    consumer_stats cs;
    consumer_stats_get(o->cons, &cs);
    if (cs.assigned <= 0) {
      snprintf(why, len, "consumer %s: no partitions assigned", o->group);
      return false;
    }
  }
  if (o->db != NULL && !db_ok(o->db, why, len)) return false;
  if (o->ready != NULL && !o->ready(o->arg, why, len)) return false;
  return true;
}

/* One sample of a family made on first use (later calls find it). */
static void put(metrics_registry *reg, metrics_type type, const char *name, const char *help,
                const char *const *labels, const char *const *values, double v) {
  if (type == METRICS_COUNTER)
    metrics_counter_set(metrics_series_get(metrics_counter_family(reg, name, help, labels), values),
                        v);
  else
    metrics_gauge_set(metrics_series_get(metrics_gauge_family(reg, name, help, labels), values), v);
}

typedef struct lag_ctx {
  metrics_family *f;
  const char *group;
} lag_ctx;

static void lag_cb(const char *topic, int32_t partition, int64_t lag, void *arg) {
  lag_ctx *l = arg;
  char part[16];
  snprintf(part, sizeof part, "%d", (int)partition);
  const char *v[] = {l->group, topic, part};
  metrics_gauge_set(metrics_series_get(l->f, v), (double)lag);
}

/* A Kafka client's requests (librdkafka statistics), labelled by client
 * ("consumer", "producer"). */
static void collect_kafka(metrics_registry *reg, const char *client, const events_kafka_totals *k) {
  static const char *const c[] = {"client", NULL};
  const char *v[] = {client};
  put(reg, METRICS_COUNTER, "shop_kafka_requests_total",
      "Requests this program's Kafka client sent to the brokers (librdkafka statistics).", c, v,
      (double)k->requests);
  put(reg, METRICS_COUNTER, "shop_kafka_fetch_requests_total", "Fetch requests among them.", c, v,
      (double)k->fetches);
  put(reg, METRICS_COUNTER, "shop_kafka_produce_requests_total", "Produce requests among them.", c,
      v, (double)k->produces);
  put(reg, METRICS_COUNTER, "shop_kafka_sent_bytes_total", "Bytes sent to the brokers.", c, v,
      (double)k->bytes_sent);
  put(reg, METRICS_COUNTER, "shop_kafka_received_bytes_total", "Bytes received from the brokers.",
      c, v, (double)k->bytes_received);
}

static void collect_consumer(metrics_registry *reg, app_observed *o) {
  static const char *const g[] = {"group", NULL};
  static const char *const gtp[] = {"group", "topic", "partition", NULL};
  consumer_stats cs;
  consumer_stats_get(o->cons, &cs);
  const char *v[] = {o->group};
  put(reg, METRICS_COUNTER, "shop_events_consumed_total",
      "Events applied by the consumer group (committed with their inbox rows).", g, v,
      (double)cs.applied);
  put(reg, METRICS_COUNTER, "shop_events_duplicates_total", "Events skipped as already processed.",
      g, v, (double)cs.duplicates);
  put(reg, METRICS_COUNTER, "shop_events_dead_lettered_total",
      "Records sent to the dead-letter topic.", g, v, (double)cs.dead_lettered);
  put(reg, METRICS_GAUGE, "shop_consumer_assigned_partitions",
      "Partitions assigned to this consumer now.", g, v, (double)cs.assigned);
  lag_ctx l = {.f = metrics_gauge_family(reg, "shop_consumer_lag",
                                         "Records not yet consumed: high watermark minus the "
                                         "consumer's position, per assigned partition.",
                                         gtp),
               .group = o->group};
  consumer_lag_foreach(o->cons, LAG_COMMITTED_TIMEOUT_MS, lag_cb, &l);
  collect_kafka(reg, "consumer", &cs.kafka);
}

static void collect_relay(metrics_registry *reg, app_observed *o, db_conn *db) {
  static const char *const r[] = {"relay", NULL};
  const char *v[] = {o->name};
  outbox_relay_stats rs;
  outbox_relay_stats_get(o->relay, &rs);
  put(reg, METRICS_COUNTER, "shop_outbox_events_published_total",
      "Outbox rows published (acknowledged by the broker).", r, v, (double)rs.sent);
  put(reg, METRICS_GAUGE, "shop_outbox_relay_active", "1 when this relay holds its outbox's lock.",
      r, v, rs.active ? 1 : 0);
  collect_kafka(reg, "producer", &rs.kafka);
  if (db == NULL) return;
  char err[STATUS_ERRBUF_SIZE];
  int64_t unsent = 0, parked = 0, age_ms = 0;
  if (outbox_backlog(db, &unsent, &parked, err, sizeof err) == STATUS_OK) {
    put(reg, METRICS_GAUGE, "shop_outbox_unsent", "Outbox rows not yet published.", r, v,
        (double)unsent);
    put(reg, METRICS_GAUGE, "shop_outbox_parked", "Outbox rows parked after a permanent error.", r,
        v, (double)parked);
  }
  if (outbox_oldest_unsent_age_ms(db, &age_ms, err, sizeof err) == STATUS_OK)
    put(reg, METRICS_GAUGE, "shop_outbox_oldest_unsent_age_seconds",
        "Age of the oldest unpublished outbox row (0 when none).", r, v, (double)age_ms / 1000.0);
}

static void collect_server(metrics_registry *reg, app_observed *o) {
  rpc_server_stats ss;
  rpc_server_stats_get(o->srv, &ss);
  put(reg, METRICS_GAUGE, "shop_rpc_server_running", "Handlers running now.", NULL, NULL,
      (double)ss.running);
  put(reg, METRICS_GAUGE, "shop_rpc_server_queued", "Calls waiting for a worker now.", NULL, NULL,
      (double)ss.queued);
}

void app_collect_cb(metrics_registry *reg, void *arg) {
  app_observed *o = arg;
  char why[STATUS_ERRBUF_SIZE];
  put(reg, METRICS_GAUGE, "shop_ready", "1 when /readyz answers 200, else 0.", NULL, NULL,
      app_ready_cb(o, why, sizeof why) ? 1 : 0);
  if (!atomic_load(&o->up)) return;
  if (o->srv != NULL) collect_server(reg, o);
  if (o->cons != NULL) collect_consumer(reg, o);
  if (o->db_read != NULL)
    put(reg, METRICS_COUNTER, "shop_db_read_fallbacks_total",
        "Query connections taken from the primary because the replica did not answer.", NULL, NULL,
        (double)db_pool_fallbacks(o->db_read));
  db_conn *db = NULL;
  char err[STATUS_ERRBUF_SIZE];
  if (o->db != NULL && db_pool_get(o->db, &db, err, sizeof err) != STATUS_OK) db = NULL;
  if (o->relay != NULL) collect_relay(reg, o, db);
  if (db != NULL && o->metrics != NULL) o->metrics(db, reg, o->arg);
  if (db != NULL) db_pool_put(o->db, db);
}
