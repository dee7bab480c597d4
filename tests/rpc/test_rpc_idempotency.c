/* Idempotent commands against the test MariaDB (account and database
 * shop_test). Needs SHOP_MYSQL_PORT and SHOP_SECRETS_DIR (scripts/test.sh
 * sets them from `scripts/infra.sh env --profile test`); without them the
 * tests fail, saying so. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "command/command.h"
#include "harness.h"
#include "support/account.h"
#include "support/wait.h"

static db_params params;
static char password[256];
static char names[4][64];

static void db_env(void) {
  char err[512];
  cr_assert(support_env_db_params(&params, "shop_test", "shop_test", password, sizeof password, err,
                                  sizeof err),
            "the idempotency tests need the test MariaDB: %s", err);
  params.connect_retry_ms = 5000;
}

static db_conn *connect_db(void) {
  db_conn *c = NULL;
  char err[512];
  cr_assert_eq(db_connect(&c, &params, err, sizeof err), STATUS_OK, "%s", err);
  return c;
}

static void setup(void) {
  db_env();
  db_conn *c = connect_db();
  char err[512];
  cr_assert_eq(
      db_migrate(c, "command", command_migrations, command_migrations_count, NULL, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert_eq(db_exec(c,
                       "CREATE TABLE IF NOT EXISTS rpc_test_counter (name VARCHAR(64) PRIMARY KEY,"
                       " total BIGINT NOT NULL, executions BIGINT NOT NULL)",
                       NULL, 0, NULL, NULL, err, sizeof err),
               STATUS_OK, "%s", err);
  db_close(c);
  /* Names and keys of this run, so that runs never see each other's rows. */
  for (int i = 0; i < 4; i++)
    snprintf(names[i], sizeof names[i], "t%d-%ld-%lld", i, (long)getpid(),
             (long long)wait_now_ms());
}

static th_server *srv;
static rpc_client *cli;

static void up(int command_delay_ms) {
  setup();
  srv = th_server_start(&(th_opts){.url = "tcp://127.0.0.1:0", .workers = 8});
  char err[512];
  cr_assert_eq(db_pool_create(&srv->ctx.db, &params, 8, err, sizeof err), STATUS_OK, "%s", err);
  srv->ctx.command_delay_ms = command_delay_ms;
}

static void down(void) {
  rpc_client_destroy(cli);
  db_pool *p = srv != NULL ? srv->ctx.db : NULL;
  th_server_stop(srv);
  db_pool_destroy(p);
  cli = NULL;
  srv = NULL;
}

static status_code command(rpc_client *c, const char *key, const char *name, int64_t amount,
                           int64_t *executions, rpc_status *st) {
  Shop__Testing__V1__CommandRequest req = SHOP__TESTING__V1__COMMAND_REQUEST__INIT;
  req.name = (char *)name;
  req.amount = amount;
  ProtobufCMessage *out = NULL;
  rpc_call_opts o = {.idempotency_key = key, .timeout_ms = 20000};
  status_code rc = rpc_client_call_sync(c, &shop__testing__v1__echo_service__descriptor, "Command",
                                        &req.base, &out, &o, st);
  if (out != NULL) {
    if (executions != NULL) *executions = ((Shop__Testing__V1__CommandResponse *)out)->executions;
    protobuf_c_message_free_unpacked(out, NULL);
  }
  return rc;
}

static void counter(const char *name, int64_t *total, int64_t *executions) {
  db_conn *c = connect_db();
  char err[512];
  db_value p[1] = {DB_STR(name)};
  cr_assert_eq(db_query_i64(c, "SELECT total FROM rpc_test_counter WHERE name = ?", p, 1, total,
                            err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(db_query_i64(c, "SELECT executions FROM rpc_test_counter WHERE name = ?", p, 1,
                            executions, err, sizeof err),
               STATUS_OK, "%s", err);
  db_close(c);
}

Test(rpc_idempotency, a_request_resent_by_nng_runs_its_command_once) {
  up(400);
  /* NNG resends the request every 40 ms while the first run holds the
   * record's lock for 400 ms. */
  rpc_client_opts co = {.url = srv->url,
                        .caller = "rpc-test",
                        .max_message_bytes = 1 << 20,
                        .default_timeout_ms = 20000,
                        .max_timeout_ms = 60000,
                        .retry_max = 0,
                        .retry_backoff_ms = 20,
                        .resend_ms = 40};
  char err[256];
  cr_assert_eq(rpc_client_create(&cli, &co, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert(rpc_client_wait_connected(cli, 5000));
  int64_t execs = 0;
  rpc_status st;
  cr_assert_eq(command(cli, names[0], names[0], 7, &execs, &st), STATUS_OK, "%s", st.message);
  cr_assert_eq(execs, 1);
  /* The copies ran the handler too, and found the stored reply. */
  WAIT_UNTIL(atomic_load(&srv->ctx.command_runs) >= 2, 10000,
             "NNG resent the request (%d handler runs)", atomic_load(&srv->ctx.command_runs));
  /* Let the copies finish before the effect is counted. */
  rpc_server_stats ss;
  bool idle;
  WAIT_FOR(idle, (rpc_server_stats_get(srv->srv, &ss), ss.running == 0 && ss.queued == 0), 10000);
  (void)idle; /* the count below is the assertion */
  int64_t total = 0, applied = 0;
  counter(names[0], &total, &applied);
  cr_assert_eq(applied, 1, "the command's effect was applied once");
  cr_assert_eq(total, 7);
  down();
}

Test(rpc_idempotency, a_repeat_returns_the_stored_reply_and_changes_nothing) {
  up(0);
  cli = th_client(srv->url, 0, 0);
  int64_t e1 = 0, e2 = 0;
  cr_assert_eq(command(cli, names[1], names[1], 5, &e1, NULL), STATUS_OK);
  cr_assert_eq(command(cli, names[1], names[1], 5, &e2, NULL), STATUS_OK);
  cr_assert_eq(e1, 1);
  cr_assert_eq(e2, 1, "the stored reply");
  cr_assert_eq(atomic_load(&srv->ctx.command_runs), 2);
  int64_t total = 0, applied = 0;
  counter(names[1], &total, &applied);
  cr_assert_eq(applied, 1);
  cr_assert_eq(total, 5);
  down();
}

Test(rpc_idempotency, the_same_key_with_another_request_is_refused) {
  up(0);
  cli = th_client(srv->url, 0, 0);
  cr_assert_eq(command(cli, names[2], names[2], 5, NULL, NULL), STATUS_OK);
  rpc_status st;
  cr_assert_eq(command(cli, names[2], names[2], 6, NULL, &st), STATUS_FAILED_PRECONDITION);
  cr_assert_str_eq(st.message, "idempotency key reused with a different request");
  cr_assert_eq(st.n_violations, 1);
  cr_assert_str_eq(st.violations[0].field, "idempotency_key");
  int64_t total = 0, applied = 0;
  counter(names[2], &total, &applied);
  cr_assert_eq(total, 5, "nothing changed");
  down();
}

Test(rpc_idempotency, keys_are_scoped_to_the_caller) {
  up(0);
  cli = th_client(srv->url, 0, 0);
  rpc_client_opts co = {.url = srv->url,
                        .caller = "another-program",
                        .max_message_bytes = 1 << 20,
                        .default_timeout_ms = 20000,
                        .max_timeout_ms = 60000,
                        .retry_backoff_ms = 20};
  rpc_client *other = NULL;
  char err[256];
  cr_assert_eq(rpc_client_create(&other, &co, err, sizeof err), STATUS_OK);
  cr_assert(rpc_client_wait_connected(other, 5000));
  int64_t e1 = 0, e2 = 0;
  cr_assert_eq(command(cli, names[3], names[3], 1, &e1, NULL), STATUS_OK);
  cr_assert_eq(command(other, names[3], names[3], 1, &e2, NULL), STATUS_OK);
  cr_assert_eq(e2, 2, "another caller's key is another key");
  rpc_client_destroy(other);
  down();
}

Test(rpc_idempotency, the_stored_request_digest_is_keyed_not_a_plain_hash) {
  /* Requests carry passwords (RegisterUser, ChangePassword): the table must
   * not hold a fast unkeyed hash of them. */
  up(0);
  cli = th_client(srv->url, 0, 0);
  cr_assert_eq(command(cli, names[0], names[0], 3, NULL, NULL), STATUS_OK);
  Shop__Testing__V1__CommandRequest req = SHOP__TESTING__V1__COMMAND_REQUEST__INIT;
  req.name = names[0];
  req.amount = 3;
  uint8_t packed[256];
  size_t n = shop__testing__v1__command_request__pack(&req, packed);
  unsigned char plain[crypto_hash_sha256_BYTES], keyed[AUTH_DIGEST_BYTES];
  crypto_hash_sha256(plain, packed, n);
  auth_keys_digest(srv->keys, "shop.rpc.idempotency", packed, n, keyed);

  db_conn *c = connect_db();
  char err[512];
  db_value p[1] = {DB_STR(names[0])};
  db_rows *r = NULL;
  cr_assert_eq(db_query(c, "SELECT request_hash FROM rpc_idempotency WHERE idem_key = ?", p, 1, &r,
                        err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert(db_rows_next(r));
  size_t hlen = 0;
  const char *stored = db_rows_str(r, 0, &hlen);
  cr_assert_eq(hlen, sizeof keyed);
  cr_assert_arr_eq(stored, keyed, sizeof keyed, "the digest is keyed with the server's key");
  cr_assert(memcmp(stored, plain, sizeof plain) != 0, "not the plain SHA-256 of the request");
  db_rows_free(r);
  db_close(c);
  down();
}

Test(rpc_idempotency, purge_deletes_records_past_the_retention) {
  setup();
  db_conn *c = connect_db();
  char err[512];
  char key_old[80], key_new[80];
  snprintf(key_old, sizeof key_old, "%s-old", names[0]);
  snprintf(key_new, sizeof key_new, "%s-new", names[0]);
  const char *ins =
      "INSERT INTO rpc_idempotency (scope, method, idem_key, request_hash, status_code, "
      "created_at) VALUES ('purge-test', '/m', ?, REPEAT('x', 32), 0, NOW(6) - INTERVAL ? SECOND)";
  db_value p1[2] = {DB_STR(key_old), DB_I64(7200)};
  db_value p2[2] = {DB_STR(key_new), DB_I64(10)};
  cr_assert_eq(db_exec(c, ins, p1, 2, NULL, NULL, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(db_exec(c, ins, p2, 2, NULL, NULL, err, sizeof err), STATUS_OK, "%s", err);
  uint64_t deleted = 0;
  cr_assert_eq(command_idem_purge(c, 3600, 1, &deleted, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_geq(deleted, 1);
  db_value q1[1] = {DB_STR(key_old)}, q2[1] = {DB_STR(key_new)};
  int64_t n = -1;
  cr_assert_eq(db_query_i64(c, "SELECT COUNT(*) FROM rpc_idempotency WHERE idem_key = ?", q1, 1, &n,
                            err, sizeof err),
               STATUS_OK);
  cr_assert_eq(n, 0, "the old record is gone");
  cr_assert_eq(db_query_i64(c, "SELECT COUNT(*) FROM rpc_idempotency WHERE idem_key = ?", q2, 1, &n,
                            err, sizeof err),
               STATUS_OK);
  cr_assert_eq(n, 1, "the recent one stays");
  db_exec(c, "DELETE FROM rpc_idempotency WHERE scope = 'purge-test'", NULL, 0, NULL, NULL, err,
          sizeof err);
  db_close(c);
}
