/* Integration tests of the MariaDB layer against the real test server. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "db/db.h"
#include "testenv.h"

static char err[1024];

static void exec_ok(db_conn *c, const char *sql, const db_value *p, size_t n) {
  status_code st = db_exec(c, sql, p, n, NULL, NULL, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s: %s", status_name(st), err);
}

/* The server's id of c's link. */
static int64_t link_id(db_conn *c) {
  int64_t id = 0;
  cr_assert_eq(db_query_i64(c, "SELECT CONNECTION_ID()", NULL, 0, &id, err, sizeof err), STATUS_OK,
               "%s", err);
  return id;
}

/* Kills link id from killer (the server side of a lost link); returns id. */
static int64_t kill_link(db_conn *killer, int64_t id) {
  char sql[64];
  snprintf(sql, sizeof sql, "KILL CONNECTION %lld", (long long)id);
  exec_ok(killer, sql, NULL, 0);
  return id;
}

/* A table of our own per test, dropped at the end. */
static void make_table(db_conn *c, char *name, size_t len) {
  testenv_unique(name, len, "t_");
  char sql[512];
  snprintf(sql, sizeof sql,
           "CREATE TABLE %s (id BIGINT PRIMARY KEY, sku VARCHAR(64) NOT NULL UNIQUE,"
           " note TEXT NULL, data BLOB NULL) ENGINE=InnoDB",
           name);
  exec_ok(c, sql, NULL, 0);
}

static void drop_table(db_conn *c, const char *name) {
  char sql[256];
  snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", name);
  exec_ok(c, sql, NULL, 0);
}

Test(db, prepared_statements_round_trip_text_blobs_integers_and_nulls) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64], sql[256];
  make_table(c, t, sizeof t);
  const unsigned char blob[] = {0x00, 0xff, 0x10, 0x00, 0x7f};
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku, note, data) VALUES (?, ?, ?, ?)", t);
  db_value p[4] = {DB_I64(-9007199254740993LL), DB_STR("SKU-1"), DB_NULLV,
                   DB_BLOB(blob, sizeof blob)};
  exec_ok(c, sql, p, 4);

  snprintf(sql, sizeof sql, "SELECT id, sku, note, data FROM %s WHERE sku = ?", t);
  db_value k[1] = {DB_STR("SKU-1")};
  db_rows *r;
  cr_assert_eq(db_query(c, sql, k, 1, &r, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_rows_count(r), 1);
  cr_assert(db_rows_next(r));
  cr_assert_eq(db_rows_i64(r, 0), -9007199254740993LL);
  cr_assert_str_eq(db_rows_str(r, 1, NULL), "SKU-1");
  cr_assert(db_rows_is_null(r, 2));
  size_t n;
  const char *data = db_rows_str(r, 3, &n);
  cr_assert_eq(n, sizeof blob);
  cr_assert_arr_eq(data, blob, sizeof blob);
  cr_assert_not(db_rows_next(r));
  db_rows_free(r);
  drop_table(c, t);
  db_close(c);
}

Test(db, text_that_looks_like_sql_is_stored_verbatim) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64], sql[256];
  make_table(c, t, sizeof t);
  const char *evil = "x'); DROP TABLE users; -- \" \\ \xe2\x82\xac";
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku, note) VALUES (1, 'a', ?)", t);
  db_value p[1] = {DB_STR(evil)};
  exec_ok(c, sql, p, 1);
  snprintf(sql, sizeof sql, "SELECT note FROM %s WHERE id = 1", t);
  db_rows *r;
  cr_assert_eq(db_query(c, sql, NULL, 0, &r, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(db_rows_next(r));
  cr_assert_str_eq(db_rows_str(r, 0, NULL), evil);
  db_rows_free(r);
  drop_table(c, t);
  db_close(c);
}

Test(db, a_duplicate_key_is_already_exists_and_the_transaction_rolls_back) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64], sql[256];
  make_table(c, t, sizeof t);
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES (?, ?)", t);
  db_value first[2] = {DB_I64(1), DB_STR("dup")};
  exec_ok(c, sql, first, 2);

  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  db_value second[2] = {DB_I64(2), DB_STR("fresh")};
  exec_ok(c, sql, second, 2);
  db_value third[2] = {DB_I64(3), DB_STR("dup")};
  status_code st = db_exec(c, sql, third, 2, NULL, NULL, err, sizeof err);
  cr_assert_eq(st, STATUS_ALREADY_EXISTS, "%s: %s", status_name(st), err);
  db_rollback(c);
  cr_assert_not(db_in_tx(c));

  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", t);
  int64_t count = -1;
  cr_assert_eq(db_query_i64(c, sql, NULL, 0, &count, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(count, 1, "the row of the rolled-back transaction is gone");
  drop_table(c, t);
  db_close(c);
}

typedef struct {
  const char *table;
  int calls;
} tx_arg;

static status_code insert_two_then_fail(db_conn *c, void *varg, char *eb, size_t el) {
  tx_arg *a = varg;
  a->calls++;
  char sql[256];
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES (?, ?)", a->table);
  db_value p1[2] = {DB_I64(10), DB_STR("ten")};
  status_code st = db_exec(c, sql, p1, 2, NULL, NULL, eb, el);
  if (st != STATUS_OK) return st;
  db_value p2[2] = {DB_I64(11), DB_STR("ten")}; /* same sku: duplicate */
  return db_exec(c, sql, p2, 2, NULL, NULL, eb, el);
}

Test(db, tx_run_rolls_back_on_error_and_does_not_retry_a_duplicate) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64], sql[256];
  make_table(c, t, sizeof t);
  tx_arg a = {.table = t};
  status_code st = db_tx_run(c, insert_two_then_fail, &a, 3, err, sizeof err);
  cr_assert_eq(st, STATUS_ALREADY_EXISTS);
  cr_assert_eq(a.calls, 1);
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", t);
  int64_t count = -1;
  cr_assert_eq(db_query_i64(c, sql, NULL, 0, &count, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(count, 0);
  drop_table(c, t);
  db_close(c);
}

Test(db, a_killed_connection_is_reopened_and_statements_prepared_again) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  db_conn *killer = testenv_db_connect("shop_test", "shop_test");
  int64_t id = kill_link(killer, link_id(c));
  /* The cached statement died with the link; the layer reopens and re-prepares. */
  int64_t id2 = 0;
  status_code st = db_query_i64(c, "SELECT CONNECTION_ID()", NULL, 0, &id2, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s: %s", status_name(st), err);
  cr_assert_neq(id2, id);
  cr_assert_eq(db_reconnects(c), 1);
  db_close(killer);
  db_close(c);
}

Test(db, a_link_lost_inside_a_transaction_is_unavailable_not_silently_retried) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  db_conn *killer = testenv_db_connect("shop_test", "shop_test");
  int64_t id = link_id(c);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK);
  kill_link(killer, id);
  int64_t v = 0;
  status_code st = db_query_i64(c, "SELECT 1", NULL, 0, &v, err, sizeof err);
  cr_assert_eq(st, STATUS_UNAVAILABLE, "%s: %s", status_name(st), err);
  cr_assert_not(db_in_tx(c));
  /* Outside the transaction the next call reconnects. */
  cr_assert_eq(db_query_i64(c, "SELECT 1", NULL, 0, &v, err, sizeof err), STATUS_OK, "%s", err);
  db_close(killer);
  db_close(c);
}

Test(db, migrations_apply_once_in_order_and_a_changed_one_is_refused) {
  db_conn *c = testenv_db_connect("shop_migrate", "shop_test");
  char t[64];
  testenv_unique(t, sizeof t, "m_");
  /* The unique name serves as the component and the table prefix. */
  char m1[256], m2[256];
  snprintf(m1, sizeof m1, "CREATE TABLE %s_a (id INT PRIMARY KEY);\nINSERT INTO %s_a VALUES (1);\n",
           t, t);
  snprintf(m2, sizeof m2, "CREATE TABLE %s_b (id INT PRIMARY KEY);\n", t);
  db_migration migs[2] = {{1, "001_a.sql", m1}, {2, "002_b.sql", m2}};
  int applied = -1;
  status_code st = db_migrate(c, t, migs, 2, &applied, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s: %s", status_name(st), err);
  cr_assert_eq(applied, 2);
  st = db_migrate(c, t, migs, 2, &applied, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s", err);
  cr_assert_eq(applied, 0, "a second start applies nothing");

  char sql[256];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s_a", t);
  int64_t rows = 0;
  cr_assert_eq(db_query_i64(c, sql, NULL, 0, &rows, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(rows, 1);

  char changed[300];
  snprintf(changed, sizeof changed, "%s-- edited\n", m2);
  db_migration edited[2] = {migs[0], {2, "002_b.sql", changed}};
  st = db_migrate(c, t, edited, 2, &applied, err, sizeof err);
  cr_assert_eq(st, STATUS_FAILED_PRECONDITION);
  cr_assert_not_null(strstr(err, "/002_b.sql was changed"), "%s", err);

  snprintf(sql, sizeof sql, "DROP TABLE %s_a, %s_b", t, t);
  exec_ok(c, sql, NULL, 0);
  db_value v[1] = {DB_STR(t)};
  exec_ok(c, "DELETE FROM schema_migrations WHERE component = ?", v, 1);
  db_close(c);
}

Test(db, a_named_lock_is_held_by_one_connection_at_a_time) {
  db_conn *a = testenv_db_connect("shop_test", "shop_test");
  db_conn *b = testenv_db_connect("shop_test", "shop_test");
  char name[64];
  testenv_unique(name, sizeof name, "lock_");
  bool got = false;
  cr_assert_eq(db_lock_try(a, name, 0, &got, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(got);
  cr_assert_eq(db_lock_try(b, name, 0, &got, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_not(got, "the second holder must wait");
  db_close(a); /* a dying holder releases the lock */
  cr_assert_eq(db_lock_try(b, name, 5, &got, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(got);
  cr_assert_eq(db_lock_release(b, name, err, sizeof err), STATUS_OK);
  db_close(b);
}

Test(db, a_wrong_password_is_refused_without_retrying_forever) {
  db_params p = {.host = "127.0.0.1",
                 .port = atoi(getenv("SHOP_MYSQL_PORT") ? getenv("SHOP_MYSQL_PORT") : "0"),
                 .user = "shop_test",
                 .password = "wrong",
                 .database = "shop_test",
                 .connect_timeout_ms = 2000,
                 .connect_retry_ms = 60000};
  cr_assert_not_null(getenv("SHOP_MYSQL_PORT"), "run through make test");
  db_conn *c = NULL;
  status_code st = db_connect(&c, &p, err, sizeof err);
  cr_assert_eq(st, STATUS_PERMISSION_DENIED, "%s: %s", status_name(st), err);
  cr_assert_null(c);
}

/* The test server's parameters for the shop_test account (pw holds its
 * password). */
static db_params test_params(char pw[256]) {
  const char *port = getenv("SHOP_MYSQL_PORT");
  cr_assert_not_null(port, "run through make test");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/mysql", getenv("SHOP_SECRETS_DIR"));
  cr_assert(db_password_from_dir(dir, "shop_test", pw, 256, err, sizeof err), "%s", err);
  return (db_params){.host = "127.0.0.1",
                     .port = atoi(port),
                     .user = "shop_test",
                     .password = pw,
                     .database = "shop_test",
                     .connect_timeout_ms = 2000};
}

Test(db, a_pool_hands_each_thread_its_own_connection) {
  char pw[256];
  db_params p = test_params(pw);
  db_pool *pool;
  cr_assert_eq(db_pool_create(&pool, &p, 2, err, sizeof err), STATUS_OK, "%s", err);
  db_conn *a, *b;
  cr_assert_eq(db_pool_get(pool, &a, err, sizeof err), STATUS_OK);
  cr_assert_eq(db_pool_get(pool, &b, err, sizeof err), STATUS_OK);
  cr_assert_neq(a, b);
  int64_t ida, idb;
  cr_assert_eq(db_query_i64(a, "SELECT CONNECTION_ID()", NULL, 0, &ida, err, sizeof err),
               STATUS_OK);
  cr_assert_eq(db_query_i64(b, "SELECT CONNECTION_ID()", NULL, 0, &idb, err, sizeof err),
               STATUS_OK);
  cr_assert_neq(ida, idb);
  db_pool_put(pool, a);
  db_conn *again;
  cr_assert_eq(db_pool_get(pool, &again, err, sizeof err), STATUS_OK);
  cr_assert_eq(again, a, "a returned connection is reused");
  db_pool_put(pool, again);
  db_pool_put(pool, b);
  db_pool_destroy(pool);
}

/* How the server sees c's link: "localhost" through the Unix socket,
 * "127.0.0.1:<port>" over TCP. */
static void link_host(db_conn *c, char *out, size_t len) {
  db_rows *r = NULL;
  cr_assert_eq(
      db_query(c, "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
               NULL, 0, &r, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert(db_rows_next(r));
  snprintf(out, len, "%s", db_rows_str(r, 0, NULL));
  db_rows_free(r);
}

Test(db, a_socket_path_connects_through_the_unix_socket_and_keeps_it_on_reconnect) {
  char pw[256], host[128];
  const char *sock = getenv("SHOP_MYSQL_SOCKET");
  cr_assert_not_null(sock, "SHOP_MYSQL_SOCKET is not set: run through make test");
  db_params p = test_params(pw);
  db_conn *tcp = NULL;
  cr_assert_eq(db_connect(&tcp, &p, err, sizeof err), STATUS_OK, "%s", err);
  link_host(tcp, host, sizeof host);
  cr_assert(strncmp(host, "127.0.0.1:", 10) == 0, "over TCP: %s", host);
  /* Through a pool, which keeps its own copy of the params. */
  char path[512];
  snprintf(path, sizeof path, "%s", sock);
  p.socket = path;
  db_pool *pool = NULL;
  cr_assert_eq(db_pool_create(&pool, &p, 2, err, sizeof err), STATUS_OK, "%s", err);
  db_conn *c = NULL;
  cr_assert_eq(db_pool_get(pool, &c, err, sizeof err), STATUS_OK, "%s", err);
  link_host(c, host, sizeof host);
  cr_assert_str_eq(host, "localhost", "through the socket");
  /* A lost link is reopened the same way. (The killer comes through the
   * socket too: the server takes shop_test@localhost for another account
   * than shop_test@127.0.0.1, which may not kill its links.) */
  db_conn *killer = NULL;
  cr_assert_eq(db_connect(&killer, &p, err, sizeof err), STATUS_OK, "%s", err);
  int64_t old = kill_link(killer, link_id(c));
  db_close(killer);
  int64_t now = 0;
  for (int i = 0; i < 3 && db_query_i64(c, "SELECT CONNECTION_ID()", NULL, 0, &now, err,
                                        sizeof err) != STATUS_OK;
       i++) {
  }
  cr_assert_neq(now, 0, "not reopened: %s", err);
  cr_assert_neq(now, old);
  link_host(c, host, sizeof host);
  cr_assert_str_eq(host, "localhost", "reopened through the socket");
  db_pool_put(pool, c);
  /* The pool's copy serves after the caller's string is gone. */
  memset(path, 0, sizeof path);
  cr_assert_eq(db_pool_get(pool, &c, err, sizeof err), STATUS_OK, "%s", err);
  db_conn *second = NULL;
  cr_assert_eq(db_pool_get(pool, &second, err, sizeof err), STATUS_OK, "%s", err);
  link_host(second, host, sizeof host);
  cr_assert_str_eq(host, "localhost", "a new link of the pool");
  db_pool_put(pool, second);
  db_pool_put(pool, c);
  db_pool_destroy(pool);
  /* A socket where no server listens: unavailable, and the error names it. */
  db_params none = test_params(pw);
  none.socket = "/nonexistent/mysqld.sock";
  none.connect_retry_ms = 0;
  db_conn *x = NULL;
  cr_assert_eq(db_connect(&x, &none, err, sizeof err), STATUS_UNAVAILABLE, "%s", err);
  cr_assert(strstr(err, "/nonexistent/mysqld.sock") != NULL, "%s", err);
  db_close(tcp);
}

/* A port on loopback where nothing listens: a replica that is down. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd); /* bound, never listening, closed: connections are refused */
  return ntohs(a.sin_port);
}

Test(db, a_read_pool_whose_replica_is_down_reads_from_its_fallback_and_gives_it_back) {
  char pw[256];
  db_params p = test_params(pw);
  db_pool *primary, *reads;
  cr_assert_eq(db_pool_create(&primary, &p, 2, err, sizeof err), STATUS_OK, "%s", err);
  db_params down = p;
  down.port = closed_port();
  /* A replica that is down at creation is no error. */
  cr_assert_eq(db_pool_create_read(&reads, &down, 2, primary, err, sizeof err), STATUS_OK, "%s",
               err);
  db_conn *c = NULL;
  cr_assert_eq(db_pool_get(reads, &c, err, sizeof err), STATUS_OK, "%s", err);
  int64_t one = 0;
  cr_assert_eq(db_query_i64(c, "SELECT 1", NULL, 0, &one, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(one, 1);
  cr_assert_eq(db_pool_fallbacks(reads), 1);
  /* Given back to the read pool, it goes home to the primary's. */
  db_pool_put(reads, c);
  db_conn *again = NULL;
  cr_assert_eq(db_pool_get(primary, &again, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(again, c, "the fallback's connection went back to the fallback");
  db_pool_put(primary, again);
  /* While the replica is taken as down, no connection to it is tried. */
  cr_assert_eq(db_pool_get(reads, &c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_pool_fallbacks(reads), 2);
  db_pool_put(reads, c);
  db_pool_destroy(reads);
  db_pool_destroy(primary);
}

Test(db, a_read_pool_whose_replica_answers_reads_from_the_replica) {
  char pw[256];
  db_params p = test_params(pw);
  db_pool *primary, *reads;
  cr_assert_eq(db_pool_create(&primary, &p, 1, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_pool_create_read(&reads, &p, 2, primary, err, sizeof err), STATUS_OK, "%s", err);
  db_conn *held = NULL, *c = NULL;
  /* The primary's one connection is taken: a read cannot be served by it. */
  cr_assert_eq(db_pool_get(primary, &held, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_pool_get(reads, &c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_neq(c, held);
  cr_assert_eq(db_pool_fallbacks(reads), 0);
  /* Its link killed under it: the read that meets it is retried on a
   * reopened link (the replica is up), and the pool keeps reading there. */
  int64_t id = kill_link(held, link_id(c));
  cr_assert_eq(db_query_i64(c, "SELECT CONNECTION_ID()", NULL, 0, &id, err, sizeof err), STATUS_OK,
               "%s", err);
  db_pool_put(reads, c);
  cr_assert_eq(db_pool_get(reads, &c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_pool_fallbacks(reads), 0);
  db_pool_put(reads, c);
  db_pool_put(primary, held);
  db_pool_destroy(reads);
  db_pool_destroy(primary);
}

static int64_t count_rows(db_conn *c, const char *table) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
  int64_t n = -1;
  cr_assert_eq(db_query_i64(c, sql, NULL, 0, &n, err, sizeof err), STATUS_OK, "%s", err);
  return n;
}

Test(db, rows_inserted_later_arrive_at_the_commit_in_order_in_few_statements) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  db_conn *other = testenv_db_connect("shop_test", "shop_test");
  char t[64], head[128], sql[256];
  make_table(c, t, sizeof t);
  snprintf(head, sizeof head, "INSERT INTO %s (id, sku, note, data)", t);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  /* 300 rows: more than one statement holds (128), with text and bytes
   * that must survive the queue's growth. */
  for (int i = 0; i < 300; i++) {
    char sku[32], note[64];
    unsigned char blob[3] = {(unsigned char)i, 0x00, 0xfe};
    snprintf(sku, sizeof sku, "S-%03d", i);
    snprintf(note, sizeof note, "note %d", i);
    db_value row[4] = {DB_I64(i), DB_STR(sku), i % 7 == 0 ? DB_NULLV : DB_STR(note),
                       DB_BLOB(blob, sizeof blob)};
    cr_assert_eq(db_insert_later(c, head, row, 4, err, sizeof err), STATUS_OK, "%s", err);
  }
  /* Nothing has been sent yet: the transaction itself does not see them. */
  cr_assert_eq(count_rows(c, t), 0);
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(count_rows(other, t), 300);
  snprintf(sql, sizeof sql, "SELECT id, sku, note, data FROM %s ORDER BY id", t);
  db_rows *r;
  cr_assert_eq(db_query(other, sql, NULL, 0, &r, err, sizeof err), STATUS_OK, "%s", err);
  for (int i = 0; i < 300; i++) {
    cr_assert(db_rows_next(r));
    char sku[32];
    snprintf(sku, sizeof sku, "S-%03d", i);
    cr_assert_eq(db_rows_i64(r, 0), i);
    cr_assert_str_eq(db_rows_str(r, 1, NULL), sku);
    cr_assert_eq(db_rows_is_null(r, 2), i % 7 == 0);
    size_t n;
    const unsigned char *b = (const unsigned char *)db_rows_str(r, 3, &n);
    cr_assert_eq(n, 3);
    cr_assert(b[0] == (unsigned char)i && b[1] == 0x00 && b[2] == 0xfe);
  }
  db_rows_free(r);
  drop_table(c, t);
  db_close(other);
  db_close(c);
}

Test(db, rows_inserted_later_are_dropped_by_a_rollback_and_need_a_transaction) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64], head[128];
  make_table(c, t, sizeof t);
  snprintf(head, sizeof head, "INSERT INTO %s (id, sku)", t);
  db_value row[2] = {DB_I64(1), DB_STR("one")};
  cr_assert_eq(db_insert_later(c, head, row, 2, err, sizeof err), STATUS_FAILED_PRECONDITION);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_insert_later(c, head, row, 2, err, sizeof err), STATUS_OK, "%s", err);
  db_rollback(c);
  /* The next transaction starts with an empty queue. */
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  db_value row2[2] = {DB_I64(2), DB_STR("two")};
  cr_assert_eq(db_insert_later(c, head, row2, 2, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(count_rows(c, t), 1);
  drop_table(c, t);
  db_close(c);
}

Test(db, a_duplicate_among_rows_inserted_later_fails_the_commit_and_rolls_everything_back) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64], head[128], sql[256];
  make_table(c, t, sizeof t);
  snprintf(head, sizeof head, "INSERT INTO %s (id, sku)", t);
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES (?, ?)", t);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  db_value now[2] = {DB_I64(1), DB_STR("direct")};
  exec_ok(c, sql, now, 2);
  db_value a[2] = {DB_I64(2), DB_STR("later")}, b[2] = {DB_I64(3), DB_STR("later")};
  cr_assert_eq(db_insert_later(c, head, a, 2, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_insert_later(c, head, b, 2, err, sizeof err), STATUS_OK, "%s", err);
  status_code st = db_commit(c, err, sizeof err);
  cr_assert_eq(st, STATUS_ALREADY_EXISTS, "%s: %s", status_name(st), err);
  cr_assert_not(db_in_tx(c));
  cr_assert_eq(count_rows(c, t), 0, "the direct row went with the rollback");
  drop_table(c, t);
  db_close(c);
}

Test(db, a_statement_may_bind_more_than_sixty_four_values) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  char t[64];
  make_table(c, t, sizeof t);
  char sql[8192];
  size_t o = (size_t)snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES ", t);
  db_value p[200];
  char skus[100][16];
  for (int i = 0; i < 100; i++) {
    o += (size_t)snprintf(sql + o, sizeof sql - o, "%s(?, ?)", i ? ", " : "");
    snprintf(skus[i], sizeof skus[i], "k%d", i);
    p[2 * i] = DB_I64(i);
    p[2 * i + 1] = DB_STR(skus[i]);
  }
  exec_ok(c, sql, p, 200);
  cr_assert_eq(count_rows(c, t), 100);
  drop_table(c, t);
  db_close(c);
}

Test(db, a_row_inserted_later_after_the_link_died_is_unavailable_not_misuse) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  db_conn *killer = testenv_db_connect("shop_test", "shop_test");
  char t[64], head[128];
  make_table(c, t, sizeof t);
  snprintf(head, sizeof head, "INSERT INTO %s (id, sku)", t);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  kill_link(killer, link_id(c));
  /* The next statement finds the link gone... */
  int64_t one = -1;
  cr_assert_eq(db_query_i64(c, "SELECT 1", NULL, 0, &one, err, sizeof err), STATUS_UNAVAILABLE);
  /* ...and a queued row says so too: the caller retries the transaction. */
  db_value row[2] = {DB_I64(1), DB_STR("one")};
  status_code st = db_insert_later(c, head, row, 2, err, sizeof err);
  cr_assert_eq(st, STATUS_UNAVAILABLE, "%s: %s", status_name(st), err);
  drop_table(killer, t);
  db_close(killer);
  db_close(c);
}

/* The deadlock of the cluster test's s1: a SELECT ... FOR UPDATE whose
 * rows had started to arrive when InnoDB chose it as a deadlock's victim
 * fails in the middle of its result. The consumer rolls back and runs the
 * same statement again, and the cached prepared statement, left with its
 * unread result, made the client wait for rows the server never sends: the
 * inventory worker hung with its retry's inbox row locked, and every other
 * instance then waited on that lock. Now the failure is ABORTED and the
 * same statement runs again at once. */
typedef struct locker {
  db_conn *c;
  const char *table;
  status_code st;
} locker;

/* A: after B waits on A's row 2, asks for B's row 1 (the deadlock). */
static void *take_row_one(void *arg) {
  locker *l = arg;
  struct timespec ts = {0, 300 * 1000000L};
  nanosleep(&ts, NULL);
  char sql[256], e[512];
  snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE id = 1 FOR UPDATE", l->table);
  db_rows *r = NULL;
  l->st = db_query(l->c, sql, NULL, 0, &r, e, sizeof e);
  db_rows_free(r);
  return NULL;
}

Test(db, a_deadlock_in_the_middle_of_a_result_leaves_the_statement_usable, .timeout = 60) {
  db_conn *a = testenv_db_connect("shop_test", "shop_test");
  db_conn *b = testenv_db_connect("shop_test", "shop_test");
  char t[64], heavy[64], sql[256];
  make_table(a, t, sizeof t);
  make_table(a, heavy, sizeof heavy);
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES (1, 'a'), (2, 'b'), (3, 'c')", t);
  exec_ok(a, sql, NULL, 0);
  /* A holds row 2 and has changed many rows: InnoDB takes B as the victim. */
  cr_assert_eq(db_begin(a, err, sizeof err), STATUS_OK);
  for (int i = 0; i < 200; i++) {
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES (?, ?)", heavy);
    char sku[16];
    snprintf(sku, sizeof sku, "h%d", i);
    exec_ok(a, sql, (db_value[]){DB_I64(i), DB_STR(sku)}, 2);
  }
  snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE id = 2 FOR UPDATE", t);
  db_rows *r = NULL;
  cr_assert_eq(db_query(a, sql, NULL, 0, &r, err, sizeof err), STATUS_OK, "%s", err);
  db_rows_free(r);

  char all[256];
  snprintf(all, sizeof all, "SELECT id, sku FROM %s WHERE id IN (1, 2, 3) ORDER BY id FOR UPDATE",
           t);
  cr_assert_eq(db_begin(b, err, sizeof err), STATUS_OK);
  locker l = {.c = a, .table = t};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, take_row_one, &l), 0);
  r = NULL;
  status_code st = db_query(b, all, NULL, 0, &r, err, sizeof err);
  pthread_join(th, NULL);
  cr_assert_eq(st, STATUS_ABORTED, "B: %s: %s", status_name(st), err);
  cr_assert_null(r);
  cr_assert_eq(l.st, STATUS_OK, "A got its row once B was rolled back");
  db_rollback(a);
  db_rollback(b);

  /* The retry: the same statement on the same connection. */
  cr_assert_eq(db_begin(b, err, sizeof err), STATUS_OK);
  st = db_query(b, all, NULL, 0, &r, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "the retry: %s: %s", status_name(st), err);
  cr_assert_eq(db_rows_count(r), 3);
  db_rows_free(r);
  cr_assert_eq(db_commit(b, err, sizeof err), STATUS_OK, "%s", err);
  drop_table(a, t);
  drop_table(a, heavy);
  db_close(a);
  db_close(b);
}

static void insert_id(db_conn *c, const char *t, int64_t id) {
  char sql[256], sku[32];
  snprintf(sql, sizeof sql, "INSERT INTO %s (id, sku) VALUES (?, ?)", t);
  snprintf(sku, sizeof sku, "C-%lld", (long long)id);
  db_value v[2] = {DB_I64(id), DB_STR(sku)};
  exec_ok(c, sql, v, 2);
}

/* db_commit sends COMMIT AND CHAIN, and a db_begin soon after takes over
 * the transaction it opened: that transaction must behave as one begun
 * then, and must never swallow what runs outside a transaction. */
Test(db, the_transaction_a_commit_chains_is_a_fresh_one_and_holds_nothing_meanwhile) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  db_conn *other = testenv_db_connect("shop_test", "shop_test");
  char t[64], sql[256];
  make_table(c, t, sizeof t);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  insert_id(c, t, 1);
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(count_rows(other, t), 1);
  /* While c holds the chained transaction: it locks nothing (a DDL of
   * another connection goes through at once) ... */
  exec_ok(other, "SET SESSION lock_wait_timeout = 2", NULL, 0);
  snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN extra INT NULL", t);
  exec_ok(other, sql, NULL, 0);
  insert_id(other, t, 2);
  /* ... and what others commit meanwhile is seen by it, its own writes
   * are undone by its rollback. */
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(count_rows(c, t), 2);
  insert_id(c, t, 3);
  db_rollback(c);
  cr_assert_eq(count_rows(other, t), 2);
  /* A statement outside a transaction after a commit stands on its own:
   * another connection sees it without c committing anything more. */
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  insert_id(c, t, 4);
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
  insert_id(c, t, 5);
  cr_assert_eq(count_rows(other, t), 4);
  db_value id = DB_I64(5);
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id = ?", t);
  int64_t n = 0;
  cr_assert_eq(db_query_i64(other, sql, &id, 1, &n, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(n, 1);
  drop_table(c, t);
  db_close(other);
  db_close(c);
}

Test(db, a_link_lost_while_a_chained_transaction_idles_is_reopened_by_the_next_begin) {
  db_conn *c = testenv_db_connect("shop_test", "shop_test");
  db_conn *killer = testenv_db_connect("shop_test", "shop_test");
  char t[64];
  make_table(c, t, sizeof t);
  int64_t id = link_id(c);
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  insert_id(c, t, 1);
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
  /* Killed while the chained transaction idles (asking its id now would
   * end the chain). */
  kill_link(killer, id);
  /* Idle longer than a chained transaction is taken over: db_begin sends
   * START TRANSACTION, finds the link dead and reopens it, as before
   * chaining. */
  struct timespec pause = {.tv_sec = 1, .tv_nsec = 200 * 1000000L};
  nanosleep(&pause, NULL);
  status_code st = db_begin(c, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s: %s", status_name(st), err);
  insert_id(c, t, 2);
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_reconnects(c), 1);
  cr_assert_eq(count_rows(killer, t), 2);
  drop_table(c, t);
  db_close(killer);
  db_close(c);
}
