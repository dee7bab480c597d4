/*
 * events-testproc: a small process for the event backbone's kill tests
 * (tests/events). It runs a relay or a consumer against the test database
 * until it is stopped, killed, or reaches a crash point armed through
 * SHOP_CRASH_AT (see internal/crash/crash.h).
 *
 *   events-testproc relay   [--seconds N]
 *   events-testproc consume --topic T --group G --table TBL [--batch N] [--seconds N]
 *
 * consume counts applications per event id in TBL (event_id, n), in the
 * consumer's transaction. The environment gives the test profile's
 * services, as scripts/test.sh exports them: SHOP_MYSQL_PORT,
 * SHOP_SECRETS_DIR, SHOP_KAFKA_BROKERS; database and account shop_test.
 *
 * Exit status: 0 after N seconds or SIGTERM, 1 on error, 2 on bad usage.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "log/log.h"

static volatile sig_atomic_t stop_requested;
static void on_term(int sig) {
  (void)sig;
  stop_requested = 1;
}

typedef struct proc_args {
  const char *mode, *topic, *group, *table;
  int batch, seconds;
} proc_args;

static int usage(void) {
  fputs(
      "usage: events-testproc relay [--seconds N]\n"
      "       events-testproc consume --topic T --group G --table TBL [--batch N] [--seconds N]\n",
      stderr);
  return 2;
}

static bool table_name_ok(const char *t) {
  if (t == NULL || t[0] == '\0' || strlen(t) > 64) return false;
  for (const char *p = t; *p; p++) {
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
  }
  return true;
}

/* Counts each application of an event in the test's table. */
static status_code count_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                            char *errbuf, size_t errlen) {
  const char *table = arg;
  char sql[256];
  snprintf(sql, sizeof sql,
           "INSERT INTO %s (event_id, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1", table);
  for (size_t i = 0; i < n; i++) {
    db_value p[1] = {DB_STR(msgs[i].env->id)};
    status_code st = db_exec(tx, sql, p, 1, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

static bool wait_until_stopped(int seconds) {
  time_t end = time(NULL) + (seconds > 0 ? seconds : 3600);
  while (!stop_requested && time(NULL) < end) usleep(50 * 1000);
  return true;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage();
  proc_args a = {.mode = argv[1], .batch = 10, .seconds = 120};
  for (int i = 2; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL) return usage();
    if (strcmp(argv[i], "--topic") == 0)
      a.topic = v;
    else if (strcmp(argv[i], "--group") == 0)
      a.group = v;
    else if (strcmp(argv[i], "--table") == 0)
      a.table = v;
    else if (strcmp(argv[i], "--batch") == 0)
      a.batch = atoi(v);
    else if (strcmp(argv[i], "--seconds") == 0)
      a.seconds = atoi(v);
    else
      return usage();
    i++;
  }
  log_setup("events-testproc", LOG_LEVEL_INFO, NULL);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);

  const char *port = getenv("SHOP_MYSQL_PORT"), *secrets = getenv("SHOP_SECRETS_DIR");
  const char *brokers = getenv("SHOP_KAFKA_BROKERS");
  if (port == NULL || secrets == NULL || brokers == NULL) {
    fprintf(stderr,
            "events-testproc: SHOP_MYSQL_PORT, SHOP_SECRETS_DIR, SHOP_KAFKA_BROKERS needed\n");
    return 1;
  }
  char dir[1024], password[256], err[1024];
  snprintf(dir, sizeof dir, "%s/mysql", secrets);
  if (!db_password_from_dir(dir, "shop_test", password, sizeof password, err, sizeof err)) {
    fprintf(stderr, "events-testproc: %s\n", err);
    return 1;
  }
  db_params db = {.host = "127.0.0.1",
                  .port = atoi(port),
                  .user = "shop_test",
                  .password = password,
                  .database = "shop_test",
                  .connect_timeout_ms = 5000,
                  .connect_retry_ms = 10000};
  int rc = 0;
  if (strcmp(a.mode, "relay") == 0) {
    outbox_relay_opts o;
    outbox_relay_opts_init(&o, NULL);
    o.brokers = brokers;
    o.db = &db;
    o.client_id = "events-testproc-relay";
    outbox_relay *r = NULL;
    if (outbox_relay_create(&r, &o, err, sizeof err) != STATUS_OK ||
        outbox_relay_start(r, err, sizeof err) != STATUS_OK) {
      fprintf(stderr, "events-testproc: relay: %s\n", err);
      rc = 1;
    } else {
      wait_until_stopped(a.seconds);
    }
    outbox_relay_destroy(r);
  } else if (strcmp(a.mode, "consume") == 0) {
    if (a.topic == NULL || a.group == NULL || !table_name_ok(a.table)) return usage();
    consumer_opts o;
    consumer_opts_init(&o, NULL);
    const char *topics[1] = {a.topic};
    o.brokers = brokers;
    o.group = a.group;
    o.topics = topics;
    o.topic_count = 1;
    o.db = &db;
    o.handler = count_cb;
    o.handler_arg = (void *)a.table;
    o.batch_size = a.batch;
    o.session_timeout_ms = 6000;
    o.heartbeat_ms = 1000;
    o.max_retries = 3;
    o.retry_backoff_ms = 20;
    consumer *c = NULL;
    if (consumer_create(&c, &o, err, sizeof err) != STATUS_OK ||
        consumer_start(c, err, sizeof err) != STATUS_OK) {
      fprintf(stderr, "events-testproc: consumer: %s\n", err);
      rc = 1;
    } else {
      wait_until_stopped(a.seconds);
    }
    consumer_destroy(c);
  } else {
    return usage();
  }
  events_shutdown_wait(10000);
  return rc;
}
