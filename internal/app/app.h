/*
 * app: the start-up and shut-down every Shop program shares, so that
 * cmd/<program>/main.c only names what is particular to it:
 *
 *   int main(int argc, char **argv) {
 *     static const app_spec spec = {
 *         .name = "user-command",
 *         .db_account = "shop_user",
 *         .migrations = user_migrations_table, .n_migrations = 1,
 *         .relay = true,
 *         .setup = user_command_setup_cb, .teardown = user_command_teardown_cb,
 *     };
 *     return app_main(&spec, argc, argv);
 *   }
 *
 * app_main() does, in this order:
 *   1. blocks SIGTERM and SIGINT (before any thread exists, so that every
 *      thread inherits the mask and only the main thread takes them);
 *   2. parses the command line: --config PATH (else $SHOP_CONFIG, else
 *      config/shop.yaml in the current folder: config_path_find),
 *      --print-config [KEY] (prints the effective config, or one key's
 *      value, and exits 0: config_print), --listen URL (overrides the
 *      endpoint from the config; tests run a second instance with it) and --admin-port N (the admin
 * HTTP port; 0 picks a free one; default: admin.<program> from the config, or 0 when --listen is
 * given, so a second instance never clashes);
 *   3. finds spec->name in internal/config/programs.list (which says
 *      whether it serves RPC, on which endpoints.<key>, and its
 *      admin.<key>); loads the config and sets up logging (service =
 *      spec->name), then
 *      starts the admin HTTP server on admin.host (see "Admin HTTP"
 *      below); a port in use stops start-up (exit 1) with the address;
 *   4. when db_account is set: applies the migrations as the migration
 *      account (mysql account "shop_migrate", on the service's database):
 *      component "rpc" (idempotency records) when the program serves RPC,
 *      "events" (outbox, inbox, projection versions) when it runs a relay
 *      or a consumer, then the program's own components, in the order
 *      given; then opens a pool of mysql.pool_size connections as the
 *      service's own account (the database has the account's name);
 *   5. loads the JWT key (auth.jwt_key, auth_keys_from_cfg: a missing or
 *      short key names the config file): RPC servers verify tokens with it;
 *   6. creates the outbox relay (spec->relay) and the RPC server
 *      (when programs.list gives the program an endpoint), then calls spec->setup, which registers
 * the services and may do start-up work (the first admin, say), then creates the consumer
 * (spec->consumer);
 *   7. starts the relay, the consumer (spec->consumer), the housekeeping
 *      thread and the RPC server, and logs "serving" with the RPC
 *      endpoint and the admin port ("serving on tcp://... admin
 *      http://127.0.0.1:19105");
 *   8. waits for SIGTERM or SIGINT; then drains the server for
 *      rpc.drain_grace_ms (new calls get UNAVAILABLE, running ones
 *      finish), stops the consumer, then the relay (which waits for the
 *      broker's acks of what it already sent; unsent rows stay in the
 *      outbox for the next start), calls spec->teardown and frees
 *      everything.
 *
 * Admin HTTP (libmicrohttpd, one thread per connection, loopback):
 *   GET /livez    200 "ok" while the process runs;
 *   GET /readyz   200 "ok" once everything started, while the database
 *                 answers (SELECT 1 on the pool), the RPC server is not
 *                 draining and the consumer has partitions assigned; else
 *                 503 with the reason ("starting", "consumer inventory-worker:
 *                 no partitions assigned", "database: ...");
 *   GET /metrics  Prometheus text format 0.0.4: grpc_server_* (rpc.h),
 *                 shop_consumer_lag{group,topic,partition}, shop_events_*,
 *                 shop_outbox_*, shop_rpc_server_*, shop_ready, and what
 *                 the program adds (spec->metrics, app_metrics());
 *   other paths 404, other methods 405. HEAD works like GET. Every reply
 *   carries "X-Shop-Pid: <pid>", the process that answered (scripts wait
 *   for a restarted program's own 200 on /readyz by it).
 * The admin server stops after the RPC server drained, before anything it
 * reads is freed.
 *
 * Exit status of app_main: 0 after a signal-driven stop; 2 for bad usage or
 * a bad config (the reason on stderr); 1 when the program could not start
 * (database, port, migrations, setup), logged.
 *
 * Threads: app_main runs on the main thread and owns everything it makes.
 * The accessors below may be called from any thread between setup and
 * teardown; what they return is owned by the app.
 */
#ifndef SHOP_APP_H
#define SHOP_APP_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "config/config.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "metrics/metrics.h"
#include "rpc/rpc.h"
#include "status/status.h"

typedef struct app app;

/* One component's numbered migrations (shop_embed_migrations output). */
typedef struct app_migrations {
  const char *component; /* "user", "user_read", ... */
  const db_migration *migs;
  size_t count;
} app_migrations;

/* Called once after the database, the relay and the server exist and
 * before anything starts: register services with app_server(), build the
 * domain context. A non-OK status stops start-up (exit 1) with errbuf
 * logged. Runs on the main thread. */
typedef status_code (*app_setup_cb)(app *a, void *arg, char *errbuf, size_t errlen);

/* Called once after the server, the consumer and the relay have stopped
 * (also when start-up failed after setup succeeded). */
typedef void (*app_teardown_cb)(app *a, void *arg);

/* Called every housekeeping_interval_s on the housekeeping thread, with a
 * connection of the pool (no transaction open): purge what has expired.
 * Errors are the hook's to log. */
typedef void (*app_housekeeping_cb)(app *a, db_conn *db, void *arg);

/* Called on each scrape of /metrics, on an admin HTTP thread, with a
 * connection of the pool (no transaction open): sets the program's own
 * gauges computed from its database (orders by state, say). Only for
 * programs with db_account. Errors are the hook's to log (or to leave a
 * gauge stale). */
typedef void (*app_metrics_cb)(db_conn *db, metrics_registry *reg, void *arg);

/* Called on each /readyz (and shop_ready scrape), on an admin HTTP thread,
 * once everything app_main started is ready: the program's own readiness
 * (the gateway's backends connected, say). False with a short reason in
 * why makes /readyz 503. */
typedef bool (*app_ready_check_cb)(void *arg, char *why, size_t len);

typedef struct app_spec {
  const char *name;                 /* program name (a row of internal/config/programs.list,
                                       which gives its endpoint and admin port): logs, RPC
                                       caller, event source */
  const char *db_account;           /* account and database ("shop_user"); NULL: none */
  const app_migrations *migrations; /* the program's own, applied after rpc/events */
  size_t n_migrations;
  bool relay;                       /* run an outbox relay on db_account's database */
  const consumer_spec *consumer;    /* the domain's consumer (events/consumer.h); its
                                       apply functions, handler and committed
                                       callback get arg; it nudges the relay */
  app_setup_cb setup;               /* may be NULL */
  app_teardown_cb teardown;         /* may be NULL */
  app_housekeeping_cb housekeeping; /* may be NULL */
  int housekeeping_interval_s;      /* 0: 60 */
  bool append_only;                 /* db_account may not DELETE (audit): neither the
                                       idempotency records nor the consumer's
                                       processed ids are purged; they grow with
                                       the append-only log they guard */
  app_metrics_cb metrics;           /* may be NULL */
  app_ready_check_cb ready;         /* may be NULL */
  bool read_replica;                /* a query side: app_db_read reads from the replica
                                       mysql.read_host when it is set */
  void *arg;                        /* handed to the hooks */
} app_spec;

/* Runs the program as described above. Returns the process exit status. */
int app_main(const app_spec *spec, int argc, char **argv);

/* Accessors, valid from setup to teardown. */
const char *app_name(const app *a);
const shop_cfg *app_cfg(const app *a);
/* The service account's pool; NULL without db_account. */
db_pool *app_db(app *a);
/* The pool the queries read from: with spec->read_replica and
 * mysql.read_host set, the service account's connections to that replica,
 * falling back on app_db while it is down (db_pool_create_read); else
 * app_db. Reading your own writes holds on a replica too: a consistency
 * token waits until the replica has the version (consistency.h). */
db_pool *app_db_read(app *a);
/* NULL without an endpoint. Register services on it in setup. */
rpc_server *app_server(app *a);
/* The JWT keys (sign and verify); never NULL once setup runs. */
const auth_keys *app_auth(const app *a);
/* NULL without spec->relay. Nudge it after a commit that appended rows. */
outbox_relay *app_relay(app *a);
/* The program's metrics registry (served on /metrics): a program may add
 * its own families in setup and update them from any thread. */
metrics_registry *app_metrics(app *a);
/* The bound admin HTTP port. */
int app_admin_port_get(const app *a);
/* The connection parameters of the service account (borrowed). */
const db_params *app_db_params(const app *a);

#endif
