/*
 * bench-mariadb: the raw MariaDB baseline of CreateOrder (make bench).
 *
 *   eval "$(scripts/infra.sh env --profile test)"   # or the bench's stack
 *   build-release/bin/bench-mariadb [--threads T] [--seconds S] [--lines L]
 *                                   [--price-reads] [--json]
 *
 * T threads, each with its own connection to shop_test, run for S seconds
 * the transaction order-command runs for one CreateOrder
 * (internal/order/command.c through command_run), with the same
 * tables (the rpc, events and order migrations) and prepared statements:
 *
 *   (--price-reads: SELECT one product row per line, before BEGIN: a
 *    catalog cache miss, prices fetched before the transaction; by default
 *    order-command prices from its catalog cache, internal/order/catalog.c)
 *   BEGIN                                           (chained by the last COMMIT)
 *   INSERT orders                                   (order_place)
 *   INSERT rpc_idempotency with the reply           (command_idem_insert)
 *   INSERT order_lines, every line in one statement (db_insert_later)
 *   INSERT outbox (an envelope of OrderCreated's size)
 *   COMMIT                                          (durable: the server's
 *                                                    innodb_flush_log_at_trx_commit=1)
 *
 * and prints transactions per second. What it leaves out is what the
 * service adds: the RPC hop (client -> order-command), envelope and token
 * checks, protobuf, the catalog cache, the relay publishing the outbox row.
 *
 * The environment gives the server: SHOP_MYSQL_PORT, SHOP_SECRETS_DIR,
 * and SHOP_MYSQL_SOCKET: when set, the connections go through that Unix
 * socket, as the services' do (config/shop.yaml's mysql.socket), so that
 * the baseline and the service pay the same per round trip.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "command/command.h"
#include "db/db.h"
#include "events/events.h"
#include "order/order.h"
#include "rpc/rpc.h"

#define BENCH_PRODUCTS 20

static struct {
  int threads, seconds, lines;
  bool json, price_reads;
  db_params db, migrate;
  char password[256], migrate_password[256];
  atomic_bool stop;
  atomic_llong done, failed;
} B;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, const char *err) {
  fprintf(stderr, "bench-mariadb: %s: %s\n", what, err);
  exit(1);
}

static bool params_for(db_params *p, char *password, size_t len, const char *account) {
  const char *port = getenv("SHOP_MYSQL_PORT"), *secrets = getenv("SHOP_SECRETS_DIR");
  if (port == NULL || secrets == NULL) return false;
  char dir[1024], err[512];
  snprintf(dir, sizeof dir, "%s/mysql", secrets);
  if (!db_password_from_dir(dir, account, password, len, err, sizeof err)) die("password", err);
  const char *sock = getenv("SHOP_MYSQL_SOCKET");
  *p = (db_params){.host = "127.0.0.1",
                   .port = atoi(port),
                   .socket = sock != NULL && sock[0] != '\0' ? sock : NULL,
                   .user = account,
                   .password = password,
                   .database = "shop_test",
                   .connect_timeout_ms = 5000,
                   .connect_retry_ms = 5000};
  return true;
}

static void setup(void) {
  char err[512];
  db_conn *m = NULL;
  if (db_connect(&m, &B.migrate, err, sizeof err) != STATUS_OK) die("connect", err);
  if (db_migrate(m, "command", command_migrations, command_migrations_count, NULL, err,
                 sizeof err) != STATUS_OK ||
      db_migrate(m, "events", events_migrations, events_migrations_count, NULL, err, sizeof err) !=
          STATUS_OK ||
      db_migrate(m, "order", order_migrations, order_migrations_count, NULL, err, sizeof err) !=
          STATUS_OK)
    die("migrate", err);
  db_close(m);
  db_conn *c = NULL;
  if (db_connect(&c, &B.db, err, sizeof err) != STATUS_OK) die("connect", err);
  const char *ddl[] = {
      "DROP TABLE IF EXISTS bench_products",
      "CREATE TABLE bench_products (product_id CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY "
      "KEY, sku VARCHAR(64) NOT NULL, name VARCHAR(200) NOT NULL, price_units BIGINT NOT NULL, "
      "currency CHAR(3) NOT NULL, archived TINYINT NOT NULL, max_quantity_per_order INT NOT "
      "NULL, version BIGINT NOT NULL) ENGINE=InnoDB",
  };
  for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++)
    if (db_exec(c, ddl[i], NULL, 0, NULL, NULL, err, sizeof err) != STATUS_OK) die(ddl[i], err);
  for (int i = 0; i < BENCH_PRODUCTS; i++) {
    char id[32], sku[32];
    snprintf(id, sizeof id, "bench-product-%d", i);
    snprintf(sku, sizeof sku, "BENCH-%d", i);
    db_value v[3] = {DB_STR(id), DB_STR(sku), DB_I64(100 + i)};
    if (db_exec(c, "INSERT INTO bench_products VALUES (?, ?, 'Bench item', ?, 'EUR', 0, 0, 1)", v,
                3, NULL, NULL, err, sizeof err) != STATUS_OK)
      die("products", err);
  }
  db_close(c);
}

typedef struct worker {
  int index;
  pthread_t thread;
} worker;

static status_code one_order(db_conn *c, int w, int64_t n, char *err, size_t len) {
  char scope[48], key[64], order_id[EVENTS_ID_SIZE], event_id[EVENTS_ID_SIZE];
  snprintf(scope, sizeof scope, "bench-customer-%d", w);
  events_uuid_v7(order_id);
  events_uuid_v7(event_id);
  snprintf(key, sizeof key, "bench-%s", order_id);
  unsigned char hash[32] = {0}, envelope[700], reply[300], shipping[60];
  memset(envelope, 0x5a, sizeof envelope);
  memset(reply, 0x3c, sizeof reply);
  memset(shipping, 0x21, sizeof shipping);
  const char *method = "/shop.order.v1.OrderCommandService/CreateOrder";
  status_code st = STATUS_OK;
  int64_t total = B.price_reads ? 0 : 100 * (int64_t)B.lines; /* the lines' prices */
  for (int i = 0; B.price_reads && st == STATUS_OK && i < B.lines; i++) {
    char pid[32];
    snprintf(pid, sizeof pid, "bench-product-%d", (int)((n + i) % BENCH_PRODUCTS));
    db_value v[1] = {DB_STR(pid)};
    db_rows *r = NULL;
    st = db_query(c,
                  "SELECT sku, name, price_units, currency, archived, max_quantity_per_order, "
                  "version FROM bench_products WHERE product_id = ?",
                  v, 1, &r, err, len);
    if (st == STATUS_OK && db_rows_next(r)) total += db_rows_i64(r, 2);
    db_rows_free(r);
  }
  if (st == STATUS_OK) st = db_begin(c, err, len);
  int64_t now = (int64_t)time(NULL) * 1000;
  db_value ov[11] = {DB_STR(order_id),
                     DB_STR(scope),
                     DB_I64(1),
                     DB_I64(total),
                     DB_STR("EUR"),
                     DB_STR("tok_visa"),
                     DB_BLOB(shipping, sizeof shipping),
                     DB_STR(key),
                     DB_I64(now + 900000),
                     DB_I64(now),
                     DB_I64(now)};
  if (st == STATUS_OK)
    st = db_exec(c,
                 "INSERT INTO orders (order_id, customer_id, status, version, total_units, "
                 "currency, payment_token, shipping, idempotency_key, deadline_ms, created_ms, "
                 "updated_ms) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                 ov, 11, NULL, NULL, err, len);
  db_value idem[7] = {DB_STR(scope),
                      DB_STR(method),
                      DB_STR(key),
                      DB_BLOB(hash, sizeof hash),
                      DB_I64(0),
                      DB_STR(""),
                      DB_BLOB(reply, sizeof reply)};
  if (st == STATUS_OK)
    st = db_exec(c,
                 "INSERT INTO rpc_idempotency (scope, method, idem_key, request_hash,"
                 " status_code, status_message, reply) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 idem, 7, NULL, NULL, err, len);
  for (int i = 0; st == STATUS_OK && i < B.lines; i++) {
    char pid[32];
    snprintf(pid, sizeof pid, "bench-product-%d", (int)((n + i) % BENCH_PRODUCTS));
    db_value lv[8] = {DB_STR(order_id), DB_I64(i),   DB_STR(pid),     DB_I64(1),
                      DB_I64(100),      DB_I64(100), DB_STR("BENCH"), DB_STR("Bench item")};
    st = db_insert_later(c,
                         "INSERT INTO order_lines (order_id, line_no, product_id, quantity,"
                         " unit_price, line_total, sku, product_name)",
                         lv, 8, err, len);
  }
  db_value ev[3] = {DB_STR(event_id), DB_STR("shop.order.events.v1"),
                    DB_BLOB(envelope, sizeof envelope)};
  if (st == STATUS_OK)
    st = db_insert_later(c, "INSERT INTO outbox (event_id, topic, envelope)", ev, 3, err, len);
  if (st == STATUS_OK) st = db_commit(c, err, len);
  if (st != STATUS_OK) db_rollback(c);
  return st;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  char err[512];
  db_conn *c = NULL;
  if (db_connect(&c, &B.db, err, sizeof err) != STATUS_OK) die("connect", err);
  for (int64_t n = 0; !atomic_load(&B.stop); n++) {
    if (one_order(c, w->index, n, err, sizeof err) == STATUS_OK)
      atomic_fetch_add(&B.done, 1);
    else
      atomic_fetch_add(&B.failed, 1);
  }
  db_close(c);
  return NULL;
}

int main(int argc, char **argv) {
  B.threads = 16;
  B.seconds = 10;
  B.lines = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      B.json = true;
    } else if (strcmp(argv[i], "--price-reads") == 0) {
      B.price_reads = true;
    } else if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
      B.threads = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0) {
      B.seconds = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--lines") == 0) {
      B.lines = atoi(argv[++i]);
    } else {
      fprintf(stderr,
              "usage: bench-mariadb [--threads T] [--seconds S] [--lines L] "
              "[--price-reads] [--json]\n");
      return 2;
    }
  }
  if (B.threads < 1 || B.threads > 1024 || B.seconds < 1 || B.lines < 1 ||
      B.lines > BENCH_PRODUCTS) {
    fprintf(stderr, "bench-mariadb: bad arguments (threads 1..1024, lines 1..%d)\n",
            BENCH_PRODUCTS);
    return 2;
  }
  if (!params_for(&B.db, B.password, sizeof B.password, "shop_test") ||
      !params_for(&B.migrate, B.migrate_password, sizeof B.migrate_password, "shop_migrate")) {
    fprintf(stderr,
            "bench-mariadb: set the environment first:"
            " eval \"$(scripts/infra.sh env --profile test)\"\n");
    return 1;
  }
  setup();
  worker *ws = calloc((size_t)B.threads, sizeof *ws);
  if (ws == NULL) die("threads", "out of memory");
  int64_t t0 = now_ns();
  for (int i = 0; i < B.threads; i++) {
    ws[i].index = i;
    if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) die("threads", "create");
  }
  struct timespec ts = {B.seconds, 0};
  nanosleep(&ts, NULL);
  atomic_store(&B.stop, true);
  for (int i = 0; i < B.threads; i++) pthread_join(ws[i].thread, NULL);
  double secs = (double)(now_ns() - t0) / 1e9;
  free(ws);
  long long done = atomic_load(&B.done), failed = atomic_load(&B.failed);
  double rate = (double)done / secs;
  if (B.json)
    printf(
        "{\"threads\":%d,\"lines\":%d,\"price_reads\":%s,\"transport\":\"%s\",\"seconds\":%.2f,"
        "\"tx\":%lld,\"failed\":%lld,\"tx_per_s\":%.1f}\n",
        B.threads, B.lines, B.price_reads ? "true" : "false", B.db.socket != NULL ? "unix" : "tcp",
        secs, done, failed, rate);
  else
    printf(
        "bench-mariadb: %lld CreateOrder-shaped transactions in %.1f s: %.1f tx/s"
        " (%d threads, %d lines, %s, %lld failed)\n",
        done, secs, rate, B.threads, B.lines, B.db.socket != NULL ? "Unix socket" : "TCP", failed);
  return failed > 0 && done == 0 ? 1 : 0;
}
