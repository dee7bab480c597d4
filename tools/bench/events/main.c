/*
 * bench-events: the event backbone against raw librdkafka on the same
 * broker, in one run (make bench-events).
 *
 *   eval "$(scripts/infra.sh env --profile test)"
 *   build-release/bin/bench-events [--events N] [--rate R] [--seconds S]
 *                                  [--batch B] [--writers W] [--keys K]
 *
 * Phases, each on fresh topics (6 partitions) and the shop_test database:
 *   1. raw librdkafka: an idempotent producer (the relay's settings) and a
 *      consumer group; throughput of N records, then lag (send -> poll) at
 *      R records/s for S seconds.
 *   2. database only: what the consumer's transactions cost without Kafka:
 *      inbox insert + one UPDATE per event, B events per transaction, one
 *      connection (the commit-bound ceiling of one consumer).
 *   3. full path: outbox -> relay -> Kafka -> consumer -> inbox transaction
 *      (handler: one UPDATE of a stock row per event). Throughput: N rows
 *      already in the outbox when the relay starts, until the consumer
 *      committed the last. Lag: W writers commit one event per transaction
 *      at R/s in total (then nudge the relay); lag = consumer commit - outbox
 *      commit.
 * Then the ratios, and CPU seconds per 1000 events of this process, MariaDB
 * and the broker during the throughput phases (who does the work).
 *
 * The environment gives the services: SHOP_MYSQL_PORT, SHOP_SECRETS_DIR,
 * SHOP_KAFKA_BROKERS, SHOP_RUN_DIR (for the server pids). Use the
 * optimized build.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "db/db.h"
#include "events/consumer.h"
#include "events/events.h"
#include "events/outbox.h"
#include "loadgen/loadgen.h"
#include "log/log.h"

typedef struct bench_cfg {
  int events, rate, seconds, batch, writers, keys;
  const char *brokers;
  db_params db, migrate;
  char password[256], migrate_password[256];
  char run_dir[1024];
} bench_cfg;

static bench_cfg B;
static char err[1024];

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
  }
}

static void die(const char *what) {
  fprintf(stderr, "bench-events: %s: %s\n", what, err);
  exit(1);
}

/* --- CPU accounting ------------------------------------------------------ */

/* utime + stime of a process in seconds, from /proc; -1 if unknown. */
static double cpu_of(long pid) { return loadgen_cpu_seconds(pid); }

static long pid_from(const char *file) {
  char path[1100];
  snprintf(path, sizeof path, "%s/%s", B.run_dir, file);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long pid = -1;
  if (fscanf(f, "%ld", &pid) != 1) pid = -1;
  fclose(f);
  return pid;
}

typedef struct cpu_snap {
  double self, mysql, kafka;
} cpu_snap;

static cpu_snap cpu_now(void) {
  return (cpu_snap){cpu_of((long)getpid()), cpu_of(pid_from("mysql/mysqld.pid")),
                    cpu_of(pid_from("kafka/kafka.pid"))};
}

static void cpu_report(const char *label, cpu_snap a, cpu_snap b, int events) {
  double k = events / 1000.0;
  printf("  cpu per 1000 events (%s): this process %.3f s, mariadb %.3f s, kafka %.3f s\n", label,
         (b.self - a.self) / k, a.mysql >= 0 ? (b.mysql - a.mysql) / k : -1,
         a.kafka >= 0 ? (b.kafka - a.kafka) / k : -1);
}

/* --- Percentiles ------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct lat {
  double p50, p99, max;
  size_t n;
} lat;

static lat lat_of(double *v, size_t n) {
  lat l = {0};
  if (n == 0) return l;
  qsort(v, n, sizeof *v, cmp_d);
  l.p50 = v[n / 2];
  l.p99 = v[(size_t)((double)(n - 1) * 0.99)];
  l.max = v[n - 1];
  l.n = n;
  return l;
}

/* --- Setup ---------------------------------------------------------------------- */

static void topic_new(char *name, size_t len, const char *what) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(name, len, "bench.events.%s.%ld.%ld", what, (long)getpid(), (long)ts.tv_nsec);
  if (events_topic_create(B.brokers, name, 6, 30000, err, sizeof err) != STATUS_OK) {
    die("create topic");
  }
}

static db_conn *connect_db(void) {
  db_conn *c = NULL;
  if (db_connect(&c, &B.db, err, sizeof err) != STATUS_OK) die("connect");
  return c;
}

static void exec_or_die(db_conn *c, const char *sql) {
  if (db_exec(c, sql, NULL, 0, NULL, NULL, err, sizeof err) != STATUS_OK) die(sql);
}

static void stock_table(db_conn *c) {
  exec_or_die(c, "DROP TABLE IF EXISTS bench_stock");
  exec_or_die(c, "CREATE TABLE bench_stock (id INT PRIMARY KEY, qty BIGINT NOT NULL)");
  exec_or_die(c, "DELETE FROM outbox WHERE topic LIKE 'bench.events.%'");
  exec_or_die(c, "DELETE FROM processed_events WHERE consumer_group LIKE 'bench-%'");
  db_begin(c, err, sizeof err);
  for (int i = 0; i < B.keys; i++) {
    db_value p[1] = {DB_I64(i)};
    if (db_exec(c, "INSERT INTO bench_stock (id, qty) VALUES (?, 0)", p, 1, NULL, NULL, err,
                sizeof err) != STATUS_OK) {
      die("fill bench_stock");
    }
  }
  if (db_commit(c, err, sizeof err) != STATUS_OK) die("commit");
}

/* --- Phase 1: raw librdkafka ---------------------------------------------------------- */

typedef struct raw_consumer {
  rd_kafka_t *rk;
  atomic_long count;
  atomic_bool stop;
  int64_t first_ns, last_ns;
  double *lags; /* ms, by index; only in the lag run */
  size_t lags_cap;
  atomic_long nlags;
} raw_consumer;

static void *raw_consume_main(void *arg) {
  raw_consumer *rc = arg;
  while (!atomic_load(&rc->stop)) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rc->rk, 100);
    if (m == NULL) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->len == 16) {
      int64_t t = now_ns();
      int64_t sent;
      memcpy(&sent, (const char *)m->payload + 8, 8);
      if (rc->first_ns == 0) rc->first_ns = t;
      rc->last_ns = t;
      if (rc->lags != NULL && sent > 0) {
        long i = atomic_fetch_add(&rc->nlags, 1);
        if ((size_t)i < rc->lags_cap) rc->lags[i] = (double)(t - sent) / 1e6;
      }
      atomic_fetch_add(&rc->count, 1);
    }
    rd_kafka_message_destroy(m);
  }
  return NULL;
}

static rd_kafka_t *raw_producer(void) {
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  char e[256];
  const char *kv[][2] = {{"bootstrap.servers", B.brokers},
                         {"enable.idempotence", "true"},
                         {"acks", "all"},
                         {"partitioner", "murmur2_random"},
                         {"max.in.flight.requests.per.connection", "5"},
                         {"message.timeout.ms", "0"},
                         {"linger.ms", "5"},
                         {"queue.buffering.max.messages", "200000"}};
  for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
    if (rd_kafka_conf_set(c, kv[i][0], kv[i][1], e, sizeof e) != RD_KAFKA_CONF_OK) {
      fprintf(stderr, "%s\n", e);
      exit(1);
    }
  }
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof e);
  if (p == NULL) exit(1);
  return p;
}

static rd_kafka_t *raw_consumer_new(const char *topic) {
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  char e[256], group[128];
  snprintf(group, sizeof group, "bench-raw-%ld-%ld", (long)getpid(), (long)now_ns());
  const char *kv[][2] = {{"bootstrap.servers", B.brokers},  {"group.id", group},
                         {"auto.offset.reset", "earliest"}, {"enable.auto.offset.store", "false"},
                         {"session.timeout.ms", "6000"},    {"heartbeat.interval.ms", "1000"}};
  for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
    rd_kafka_conf_set(c, kv[i][0], kv[i][1], e, sizeof e);
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, e, sizeof e);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  return rk;
}

static void raw_produce(rd_kafka_t *p, const char *topic, long i, int64_t sent) {
  char key[32], val[16];
  snprintf(key, sizeof key, "key-%ld", i % B.keys);
  memcpy(val, &i, 8);
  memcpy(val + 8, &sent, 8);
  while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                           RD_KAFKA_V_VALUE(val, 16), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                           RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
    rd_kafka_poll(p, 10);
  }
  rd_kafka_poll(p, 0);
}

/* Phase 1: raw librdkafka. The producer and consumer stay up for the lag
 * slices, which alternate with the full path's. */
typedef struct raw_bench {
  char topic[200];
  rd_kafka_t *p;
  raw_consumer rc;
  pthread_t th;
  long next_index;
} raw_bench;

static raw_bench R;

static double raw_setup_and_throughput(size_t lag_total) {
  topic_new(R.topic, sizeof R.topic, "raw");
  R.p = raw_producer();
  R.rc.rk = raw_consumer_new(R.topic);
  R.rc.lags = calloc(lag_total, sizeof *R.rc.lags);
  R.rc.lags_cap = lag_total;
  pthread_create(&R.th, NULL, raw_consume_main, &R.rc);
  /* Join the group first: one record seen means assigned and fetching. */
  raw_produce(R.p, R.topic, 0, 0);
  rd_kafka_flush(R.p, 10000);
  while (atomic_load(&R.rc.count) < 1) usleep(10000);

  cpu_snap c0 = cpu_now();
  long base = atomic_load(&R.rc.count);
  int64_t t0 = now_ns();
  for (long i = 1; i <= B.events; i++) raw_produce(R.p, R.topic, i, 0);
  while (atomic_load(&R.rc.count) < base + B.events) usleep(1000);
  int64_t t1 = R.rc.last_ns;
  cpu_snap c1 = cpu_now();
  double tput = B.events / ((double)(t1 - t0) / 1e9);
  printf(
      "raw librdkafka (idempotent producer, acks=all, linger 5 ms; consumer group)\n"
      "  throughput: %d records in %.2f s = %.0f records/s\n",
      B.events, (double)(t1 - t0) / 1e9, tput);
  cpu_report("raw", c0, c1, B.events);
  return tput;
}

/* count records at B.rate per second, send time in the record. */
static void raw_lag_slice(size_t count) {
  long base = atomic_load(&R.rc.count);
  int64_t start = now_ns() + 10 * 1000000;
  for (size_t i = 0; i < count; i++) {
    sleep_until(start + (int64_t)((double)i * (1e9 / B.rate)));
    raw_produce(R.p, R.topic, R.next_index++, now_ns());
  }
  while (atomic_load(&R.rc.count) < base + (long)count) usleep(1000);
}

static lat raw_teardown(void) {
  lat l = lat_of(R.rc.lags, (size_t)atomic_load(&R.rc.nlags));
  atomic_store(&R.rc.stop, true);
  pthread_join(R.th, NULL);
  rd_kafka_consumer_close(R.rc.rk);
  rd_kafka_destroy(R.rc.rk);
  rd_kafka_flush(R.p, 10000);
  rd_kafka_destroy(R.p);
  free(R.rc.lags);
  events_topic_delete(B.brokers, R.topic, 30000, NULL, 0);
  return l;
}

/* --- Phase 2: the database alone ---------------------------------------------------- */

static const char *stock_sql = "UPDATE bench_stock SET qty = qty + 1 WHERE id = ?";

static double phase_db(void) {
  db_conn *c = connect_db();
  char group[64];
  snprintf(group, sizeof group, "bench-db-%ld", (long)getpid());
  int n = B.events / 2;
  int64_t t0 = now_ns();
  for (int i = 0; i < n; i += B.batch) {
    int k = n - i < B.batch ? n - i : B.batch;
    char ids[64][EVENTS_ID_SIZE];
    if (db_begin(c, err, sizeof err) != STATUS_OK) die("begin");
    /* What the consumer does per batch: insert the ids (INSERT IGNORE, the
     * path taken when none was seen before), apply. */
    for (int base = 0; base < k; base += 32) {
      int m = k - base < 32 ? k - base : 32;
      char sql[2048];
      size_t o = (size_t)snprintf(
          sql, sizeof sql,
          "INSERT IGNORE INTO processed_events (consumer_group, event_id) VALUES ");
      db_value p[64];
      for (int j = 0; j < m; j++) {
        events_uuid_v7(ids[j]);
        o += (size_t)snprintf(sql + o, sizeof sql - o, "%s(?, ?)", j ? ", " : "");
        p[2 * j] = DB_STR(group);
        p[2 * j + 1] = DB_STR(ids[j]);
      }
      if (db_exec(c, sql, p, (size_t)(2 * m), NULL, NULL, err, sizeof err) != STATUS_OK) {
        die("insert");
      }
    }
    for (int j = 0; j < k; j++) {
      db_value p[1] = {DB_I64((i + j) % B.keys)};
      if (db_exec(c, stock_sql, p, 1, NULL, NULL, err, sizeof err) != STATUS_OK) die("update");
    }
    if (db_commit(c, err, sizeof err) != STATUS_OK) die("commit");
  }
  double tput = n / ((double)(now_ns() - t0) / 1e9);
  printf(
      "database only (inbox + 1 UPDATE per event, %d per transaction, 1 connection)\n"
      "  %.0f events/s\n",
      B.batch, tput);
  db_value g[1] = {DB_STR(group)};
  db_exec(c, "DELETE FROM processed_events WHERE consumer_group = ?", g, 1, NULL, NULL, NULL, 0);
  db_close(c);
  return tput;
}

/* --- Phase 3: the full path ------------------------------------------------------------- */

typedef struct full_state {
  const char *topic;
  int64_t *commit_ns; /* by event index: outbox transaction committed */
  int64_t *apply_ns;  /* by event index: consumer transaction committed */
  int64_t *commit_wall_ms, *produce_wall_ms, *apply_wall_ms; /* for the breakdown */
  size_t cap;
  atomic_long applied;
  int64_t first_apply_ns, last_apply_ns;
  outbox_relay *relay;
} full_state;

static full_state F;

static int64_t index_of(const consumer_msg *m) {
  int64_t i = -1;
  if (m->env->data.len == 8) memcpy(&i, m->env->data.data, 8);
  return i;
}

/* Consumer transaction times in the lag slices (handler start -> commit
 * returned), to show how much of the lag the database takes. */
static int64_t tx_start_ns;
static double *tx_ms;
static size_t tx_n, tx_cap;
static atomic_bool tx_measure;

static status_code apply_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                            char *errbuf, size_t errlen) {
  (void)arg;
  tx_start_ns = now_ns();
  for (size_t i = 0; i < n; i++) {
    db_value p[1] = {DB_I64(msgs[i].env->sequence % B.keys)};
    status_code st = db_exec(tx, stock_sql, p, 1, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  (void)arg;
  int64_t t = now_ns(), w = wall_ms();
  for (size_t i = 0; i < n; i++) {
    int64_t k = index_of(&msgs[i]);
    if (k >= 0 && (size_t)k < F.cap) {
      F.apply_ns[k] = t;
      F.apply_wall_ms[k] = w;
      /* The record's CreateTime: when the relay handed it to librdkafka. */
      F.produce_wall_ms[k] = msgs[i].timestamp_ms;
    }
  }
  if (F.first_apply_ns == 0) F.first_apply_ns = t;
  F.last_apply_ns = t;
  if (atomic_load(&tx_measure) && tx_n < tx_cap) tx_ms[tx_n++] = (double)(t - tx_start_ns) / 1e6;
  atomic_fetch_add(&F.applied, (long)n);
}

static void envelope_for(events_envelope *ev, events_timestamp *ts, int64_t index, char *key,
                         int64_t *data) {
  shop__events__v1__event_envelope__init(ev);
  shop__common__v1__timestamp__init(ts);
  events_now(ts);
  ev->source = "/shop/bench";
  ev->type = "shop.bench.v1.Thing";
  snprintf(key, 16, "key-%ld", (long)(index % B.keys));
  ev->key = ev->subject = key;
  ev->topic = (char *)F.topic;
  ev->sequence = index; /* the handler updates row sequence % keys */
  ev->time = ts;
  *data = index;
  ev->data.data = (uint8_t *)data;
  ev->data.len = 8;
}

typedef struct writer_arg {
  int id;
  int64_t start;
  size_t from, count, stride; /* events from, from+stride, ... */
  double interval_ns;
} writer_arg;

static void *writer_main(void *arg) {
  writer_arg *w = arg;
  db_conn *c = connect_db();
  for (size_t j = 0; j < w->count; j++) {
    size_t i = w->from + j * w->stride;
    sleep_until(w->start + (int64_t)((double)i * w->interval_ns));
    events_envelope ev;
    events_timestamp ts;
    char key[16];
    int64_t data;
    envelope_for(&ev, &ts, (int64_t)i, key, &data);
    char e[512];
    if (db_begin(c, e, sizeof e) != STATUS_OK ||
        outbox_append(c, &ev, NULL, e, sizeof e) != STATUS_OK ||
        db_commit(c, e, sizeof e) != STATUS_OK) {
      fprintf(stderr, "writer: %s\n", e);
      exit(1);
    }
    F.commit_ns[i] = now_ns();
    F.commit_wall_ms[i] = wall_ms();
    outbox_relay_nudge(F.relay);
  }
  db_close(c);
  return NULL;
}

static outbox_relay *relay_new(void) {
  outbox_relay_opts o;
  outbox_relay_opts_init(&o, NULL);
  o.brokers = B.brokers;
  o.db = &B.db;
  o.client_id = "bench-relay";
  outbox_relay *r = NULL;
  if (outbox_relay_create(&r, &o, err, sizeof err) != STATUS_OK) die("relay");
  return r;
}

static consumer *consumer_new(const char *topic) {
  static const char *topics[1];
  topics[0] = topic;
  char group[64];
  snprintf(group, sizeof group, "bench-%ld-%ld", (long)getpid(), (long)now_ns() % 100000);
  consumer_opts o;
  consumer_opts_init(&o, NULL, NULL);
  o.brokers = B.brokers;
  o.group = group;
  o.topics = topics;
  o.topic_count = 1;
  o.db = &B.db;
  o.handler = apply_cb;
  o.committed = committed_cb;
  o.batch_size = B.batch;
  o.session_timeout_ms = 6000;
  o.heartbeat_ms = 1000;
  consumer *c = NULL;
  if (consumer_create(&c, &o, err, sizeof err) != STATUS_OK) die("consumer");
  if (consumer_start(c, err, sizeof err) != STATUS_OK) die("consumer start");
  return c;
}

typedef struct full_bench {
  char topic[200];
  db_conn *c;
  consumer *cons;
  size_t next_index; /* of the lag events */
} full_bench;

static full_bench FB;

typedef struct full_tput {
  double tput, relay_tput, consumer_tput;
} full_tput;

static full_tput full_setup_and_throughput(size_t lag_total) {
  full_tput res = {0};
  topic_new(FB.topic, sizeof FB.topic, "full");
  F.topic = FB.topic;
  F.cap = (size_t)B.events + lag_total + 1;
  F.commit_ns = calloc(F.cap, sizeof *F.commit_ns);
  F.apply_ns = calloc(F.cap, sizeof *F.apply_ns);
  F.commit_wall_ms = calloc(F.cap, sizeof *F.commit_wall_ms);
  F.produce_wall_ms = calloc(F.cap, sizeof *F.produce_wall_ms);
  F.apply_wall_ms = calloc(F.cap, sizeof *F.apply_wall_ms);
  FB.c = connect_db();
  FB.next_index = (size_t)B.events;
  tx_cap = lag_total + 1;
  tx_ms = calloc(tx_cap, sizeof *tx_ms);

  /* The consumer joins first (a warm-up event through a short-lived relay
   * shows it is assigned). */
  FB.cons = consumer_new(FB.topic);
  {
    events_envelope ev;
    events_timestamp ts;
    char key[16];
    int64_t data;
    envelope_for(&ev, &ts, (int64_t)(F.cap - 1), key, &data);
    db_begin(FB.c, err, sizeof err);
    outbox_append(FB.c, &ev, NULL, err, sizeof err);
    db_commit(FB.c, err, sizeof err);
    outbox_relay *r = relay_new();
    outbox_relay_start(r, err, sizeof err);
    while (atomic_load(&F.applied) < 1) usleep(10000);
    outbox_relay_destroy(r);
  }

  /* Throughput: N rows wait in the outbox; the relay starts. */
  long base = atomic_load(&F.applied);
  for (int i = 0; i < B.events; i += 200) {
    db_begin(FB.c, err, sizeof err);
    for (int j = i; j < i + 200 && j < B.events; j++) {
      events_envelope ev;
      events_timestamp ts;
      char key[16];
      int64_t data;
      envelope_for(&ev, &ts, j, key, &data);
      if (outbox_append(FB.c, &ev, NULL, err, sizeof err) != STATUS_OK) die("append");
    }
    if (db_commit(FB.c, err, sizeof err) != STATUS_OK) die("commit");
  }
  F.first_apply_ns = 0;
  cpu_snap c0 = cpu_now();
  int64_t t0 = now_ns();
  F.relay = relay_new();
  outbox_relay_start(F.relay, err, sizeof err);
  int64_t relay_done = 0;
  while (atomic_load(&F.applied) < base + B.events) {
    if (relay_done == 0) {
      outbox_relay_stats st;
      outbox_relay_stats_get(F.relay, &st);
      if (st.sent >= B.events) relay_done = now_ns();
    }
    usleep(1000);
  }
  cpu_snap c1 = cpu_now();
  if (relay_done == 0) relay_done = now_ns();
  int64_t t1 = F.last_apply_ns;
  res.tput = B.events / ((double)(t1 - t0) / 1e9);
  res.relay_tput = B.events / ((double)(relay_done - t0) / 1e9);
  res.consumer_tput = B.events / ((double)(t1 - F.first_apply_ns) / 1e9);
  consumer_stats cs;
  consumer_stats_get(FB.cons, &cs);
  printf(
      "full path (outbox -> relay -> kafka -> consumer, %d events per transaction)\n"
      "  throughput: %d events in %.2f s = %.0f events/s (relay published at %.0f/s,"
      " consumer applied at %.0f/s in %lld transactions)\n",
      B.batch, B.events, (double)(t1 - t0) / 1e9, res.tput, res.relay_tput, res.consumer_tput,
      (long long)cs.batches - 1);
  cpu_report("full", c0, c1, B.events);
  return res;
}

/* count events, one per transaction, from B.writers writers at B.rate in
 * total. */
static void full_lag_slice(size_t count) {
  atomic_store(&tx_measure, true);
  long base = atomic_load(&F.applied);
  int nw = B.writers < 64 ? B.writers : 64;
  pthread_t th[64];
  writer_arg wa[64];
  int64_t start = now_ns() + 20 * 1000000;
  double interval = 1e9 / B.rate;
  for (int w = 0; w < nw; w++) {
    size_t from = FB.next_index + (size_t)w;
    wa[w] = (writer_arg){.id = w,
                         .start = start - (int64_t)((double)FB.next_index * interval),
                         .from = from,
                         .count = (count + (size_t)(nw - 1 - w)) / (size_t)nw,
                         .stride = (size_t)nw,
                         .interval_ns = interval};
    pthread_create(&th[w], NULL, writer_main, &wa[w]);
  }
  for (int w = 0; w < nw; w++) pthread_join(th[w], NULL);
  FB.next_index += count;
  while (atomic_load(&F.applied) < base + (long)count) usleep(1000);
}

static lat full_teardown(void) {
  size_t lag_total = FB.next_index - (size_t)B.events;
  double *lags = calloc(lag_total + 1, sizeof *lags);
  double *relay_part = calloc(lag_total + 1, sizeof *lags);
  double *rest_part = calloc(lag_total + 1, sizeof *lags);
  size_t nl = 0;
  for (size_t i = (size_t)B.events; i < FB.next_index; i++) {
    if (F.commit_ns[i] > 0 && F.apply_ns[i] > 0) {
      relay_part[nl] = (double)(F.produce_wall_ms[i] - F.commit_wall_ms[i]);
      rest_part[nl] = (double)(F.apply_wall_ms[i] - F.produce_wall_ms[i]);
      lags[nl++] = (double)(F.apply_ns[i] - F.commit_ns[i]) / 1e6;
    }
  }
  lat l = lat_of(lags, nl);
  lat lr = lat_of(relay_part, nl), lk = lat_of(rest_part, nl);
  lat lt = lat_of(tx_ms, tx_n);
  printf(
      "  lag (outbox commit -> consumer commit) at %d events/s, %d writers, one event per"
      " transaction:\n    p50 %.2f ms, p99 %.2f ms, max %.2f ms (%zu events)\n"
      "    of which commit -> produce (the relay; 1 ms clock): p50 %.0f ms, p99 %.0f ms;"
      " produce -> consumer commit: p50 %.0f ms, p99 %.0f ms\n",
      B.rate, B.writers, l.p50, l.p99, l.max, l.n, lr.p50, lr.p99, lk.p50, lk.p99);
  printf(
      "    the consumer's transactions (handler start -> commit returned): p50 %.2f ms,"
      " p99 %.2f ms, max %.2f ms (%zu transactions, %.1f events each)\n",
      lt.p50, lt.p99, lt.max, lt.n, lt.n > 0 ? (double)nl / (double)lt.n : 0.0);
  free(tx_ms);
  free(lags);
  free(relay_part);
  free(rest_part);
  consumer_destroy(FB.cons);
  outbox_relay_destroy(F.relay);
  exec_or_die(FB.c, "DELETE FROM outbox WHERE topic LIKE 'bench.events.%'");
  exec_or_die(FB.c, "DELETE FROM processed_events WHERE consumer_group LIKE 'bench-%'");
  db_close(FB.c);
  free(F.commit_ns);
  free(F.apply_ns);
  free(F.commit_wall_ms);
  free(F.produce_wall_ms);
  free(F.apply_wall_ms);
  events_topic_delete(B.brokers, FB.topic, 30000, NULL, 0);
  return l;
}

static void print_load(const char *when) {
  FILE *f = fopen("/proc/loadavg", "r");
  char buf[128] = "?";
  if (f != NULL) {
    if (fgets(buf, sizeof buf, f) == NULL) buf[0] = '\0';
    fclose(f);
  }
  buf[strcspn(buf, "\n")] = '\0';
  printf("load average %s: %s (%ld cpus)\n", when, buf, sysconf(_SC_NPROCESSORS_ONLN));
}

/* --- main ----------------------------------------------------------------------------------- */

static bool db_params_for(db_params *p, char *password, size_t len, const char *account) {
  const char *port = getenv("SHOP_MYSQL_PORT"), *secrets = getenv("SHOP_SECRETS_DIR");
  if (port == NULL || secrets == NULL) return false;
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/mysql", secrets);
  if (!db_password_from_dir(dir, account, password, len, err, sizeof err)) die("password");
  *p = (db_params){.host = "127.0.0.1",
                   .port = atoi(port),
                   .user = account,
                   .password = password,
                   .database = "shop_test",
                   .connect_timeout_ms = 5000,
                   .connect_retry_ms = 5000};
  return true;
}

int main(int argc, char **argv) {
  B = (bench_cfg){
      .events = 20000, .rate = 1000, .seconds = 10, .batch = 10, .writers = 4, .keys = 1000};
  const char *json_path = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    int v = atoi(argv[i + 1]);
    if (strcmp(argv[i], "--json") == 0)
      json_path = argv[i + 1];
    else if (strcmp(argv[i], "--events") == 0)
      B.events = v;
    else if (strcmp(argv[i], "--rate") == 0)
      B.rate = v;
    else if (strcmp(argv[i], "--seconds") == 0)
      B.seconds = v;
    else if (strcmp(argv[i], "--batch") == 0)
      B.batch = v;
    else if (strcmp(argv[i], "--writers") == 0)
      B.writers = v;
    else if (strcmp(argv[i], "--keys") == 0)
      B.keys = v;
    else {
      fprintf(stderr,
              "usage: bench-events [--events N] [--rate R] [--seconds S] [--batch B]"
              " [--writers W] [--keys K] [--json FILE]\n");
      return 2;
    }
  }
  if (B.batch < 1 || B.batch > 64 || B.events < 1 || B.rate < 1 || B.seconds < 1 || B.writers < 1 ||
      B.keys < 1) {
    fprintf(stderr, "bench-events: bad arguments (batch 1..64)\n");
    return 2;
  }
  B.brokers = getenv("SHOP_KAFKA_BROKERS");
  const char *run = getenv("SHOP_RUN_DIR");
  snprintf(B.run_dir, sizeof B.run_dir, "%s", run != NULL ? run : ".shop/test");
  if (B.brokers == NULL || !db_params_for(&B.db, B.password, sizeof B.password, "shop_test") ||
      !db_params_for(&B.migrate, B.migrate_password, sizeof B.migrate_password, "shop_migrate")) {
    fprintf(stderr,
            "bench-events: set the environment first:"
            " eval \"$(scripts/infra.sh env --profile test)\"\n");
    return 1;
  }
  log_setup("bench-events", LOG_LEVEL_WARN, NULL);
  db_conn *m = NULL;
  if (db_connect(&m, &B.migrate, err, sizeof err) != STATUS_OK) die("connect");
  if (events_migrate(m, NULL, err, sizeof err) != STATUS_OK) die("migrate");
  db_close(m);
  db_conn *c = connect_db();
  stock_table(c);
  db_close(c);

  printf(
      "bench-events: %d events, lag at %d/s for %d s, batch %d, %d writers, %d keys,"
      " brokers %s\n\n",
      B.events, B.rate, B.seconds, B.batch, B.writers, B.keys, B.brokers);
  print_load("before");
  size_t lag_total = (size_t)B.rate * (size_t)B.seconds;
  double raw_tput = raw_setup_and_throughput(lag_total);
  double dbonly = phase_db();
  full_tput full = full_setup_and_throughput(lag_total);
  /* Lag: raw and full path in alternating slices, so both see the same
   * machine (it is shared and noisy). */
  const int slices = 4;
  for (int i = 0; i < slices; i++) {
    size_t n = lag_total / slices + (i < (int)(lag_total % slices) ? 1 : 0);
    raw_lag_slice(n);
    full_lag_slice(n);
  }
  printf("lag, %d alternating slices of %.1f s each per path\n", slices,
         (double)B.seconds / slices);
  lat raw_lag = raw_teardown();
  printf("  raw librdkafka (send -> poll): p50 %.2f ms, p99 %.2f ms, max %.2f ms (%zu records)\n",
         raw_lag.p50, raw_lag.p99, raw_lag.max, raw_lag.n);
  lat full_lag = full_teardown();
  print_load("after");

  printf("\nratios\n");
  printf("  full-path / raw throughput:      %.3f\n", full.tput / raw_tput);
  printf(
      "  consumer apply / database only:  %.3f  (1.0: the consumer runs at the speed of its"
      " transactions)\n",
      full.consumer_tput / dbonly);
  printf("  lag p50, full vs raw:            %.2f ms vs %.2f ms (+%.2f ms)\n", full_lag.p50,
         raw_lag.p50, full_lag.p50 - raw_lag.p50);
  printf("  lag p99, full vs raw:            %.2f ms vs %.2f ms (+%.2f ms; aim <= +20 ms: %s)\n",
         full_lag.p99, raw_lag.p99, full_lag.p99 - raw_lag.p99,
         full_lag.p99 - raw_lag.p99 <= 20.0 ? "met" : "NOT met");
  if (json_path != NULL) {
    FILE *js = fopen(json_path, "w");
    if (js == NULL) die(json_path);
    fprintf(js,
            "{\"raw_throughput_per_s\": %.1f, \"full_throughput_per_s\": %.1f,"
            " \"throughput_ratio\": %.4f, \"consumer_vs_db_only\": %.4f,"
            " \"raw_lag_ms\": {\"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f, \"n\": %zu},"
            " \"full_lag_ms\": {\"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f, \"n\": %zu},"
            " \"lag_p99_over_raw_ms\": %.3f}\n",
            raw_tput, full.tput, full.tput / raw_tput, full.consumer_tput / dbonly, raw_lag.p50,
            raw_lag.p99, raw_lag.max, raw_lag.n, full_lag.p50, full_lag.p99, full_lag.max,
            full_lag.n, full_lag.p99 - raw_lag.p99);
    fclose(js);
  }
  c = connect_db();
  exec_or_die(c, "DROP TABLE IF EXISTS bench_stock");
  db_close(c);
  events_shutdown_wait(10000);
  return 0;
}
