/* The shared bootstrap of Shop's programs: config, logs, database and
 * migrations, keys, relay, consumer, RPC server, signals. See app.h. */
#include "app/app.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app_internal.h"
#include "command/command.h"
#include "events/events.h"
#include "log/log.h"

#define APP_MIGRATE_ACCOUNT "shop_migrate"
#define APP_DEFAULT_HOUSEKEEPING_S 60

struct app {
  const app_spec *spec;
  const config_program *prog; /* spec->name's row of programs.list */
  shop_cfg *cfg;
  const char *listen; /* --listen, or the endpoint from the config; NULL: no RPC */
  bool listen_arg;    /* --listen was given */
  char db_password[256];
  db_params dbp;
  db_pool *db;
  db_params dbp_read; /* mysql.read_host:read_port, when spec->read_replica and it is set */
  db_pool *db_read;   /* NULL: the queries read from db */
  auth_keys *keys;
  outbox_relay *relay;
  consumer *cons;
  rpc_server *srv;
  bool srv_started;
  bool setup_done;

  /* Observability: the registry behind /metrics, the admin HTTP server and
   * what its threads look at. */
  metrics_registry *reg;
  app_admin *admin;
  app_observed obs;

  /* Housekeeping thread: wakes every interval or when stopping. */
  pthread_t hk_thread;
  bool hk_started;
  pthread_mutex_t hk_mu;
  pthread_cond_t hk_cv;
  bool hk_stop;
};

/* ---- accessors --------------------------------------------------------------- */

const char *app_name(const app *a) { return a->spec->name; }
const shop_cfg *app_cfg(const app *a) { return a->cfg; }
db_pool *app_db(app *a) { return a->db; }
db_pool *app_db_read(app *a) { return a->db_read != NULL ? a->db_read : a->db; }
rpc_server *app_server(app *a) { return a->srv; }
const auth_keys *app_auth(const app *a) { return a->keys; }
outbox_relay *app_relay(app *a) { return a->relay; }
const db_params *app_db_params(const app *a) { return &a->dbp; }
metrics_registry *app_metrics(app *a) { return a->reg; }
int app_admin_port_get(const app *a) { return app_admin_port(a->admin); }

/* ---- start-up steps ------------------------------------------------------------ */

static void params_from_cfg(db_params *p, const shop_cfg *cfg, const char *account,
                            const char *password) {
  memset(p, 0, sizeof *p);
  p->host = cfg->mysql.host;
  p->port = cfg->mysql.port;
  p->socket = cfg->mysql.socket;
  p->user = account;
  p->password = password;
  p->database = account;
  p->connect_timeout_ms = cfg->mysql.connect_timeout_ms;
  p->connect_retry_ms = cfg->mysql.connect_retry_ms;
}

/* Applies rpc, events and the program's migrations to the service's
 * database as the migration account, on a connection of its own that is
 * closed afterwards (the service account has no DDL business at run
 * time). */
static status_code app_migrate(app *a, char *errbuf, size_t errlen) {
  const app_spec *s = a->spec;
  char pw[256];
  if (!db_password_from_dir(a->cfg->mysql.secrets_dir, APP_MIGRATE_ACCOUNT, pw, sizeof pw, errbuf,
                            errlen))
    return STATUS_FAILED_PRECONDITION;
  db_params p;
  params_from_cfg(&p, a->cfg, APP_MIGRATE_ACCOUNT, pw);
  p.database = s->db_account;
  db_conn *c = NULL;
  status_code st = db_connect(&c, &p, errbuf, errlen);
  memset(pw, 0, sizeof pw);
  if (st != STATUS_OK) return st;
  int applied = 0, total = 0;
  if (a->prog->endpoint != NULL) {
    st = db_migrate(c, "command", command_migrations, command_migrations_count, &applied, errbuf,
                    errlen);
    total += applied;
  }
  if (st == STATUS_OK && (s->relay || s->consumer != NULL)) {
    st = events_migrate(c, &applied, errbuf, errlen);
    total += applied;
  }
  for (size_t i = 0; st == STATUS_OK && i < s->n_migrations; i++) {
    const app_migrations *m = &s->migrations[i];
    st = db_migrate(c, m->component, m->migs, m->count, &applied, errbuf, errlen);
    total += applied;
  }
  db_close(c);
  if (st == STATUS_OK && total > 0)
    log_info(NULL, "%s: applied %d migration(s) to %s", s->name, total, s->db_account);
  return st;
}

static status_code app_open_db(app *a, char *errbuf, size_t errlen) {
  const char *account = a->spec->db_account;
  if (a->cfg->mysql.password != NULL && a->cfg->mysql.password[0] != '\0') {
    snprintf(a->db_password, sizeof a->db_password, "%s", a->cfg->mysql.password);
  } else if (!db_password_from_dir(a->cfg->mysql.secrets_dir, account, a->db_password,
                                   sizeof a->db_password, errbuf, errlen)) {
    return STATUS_FAILED_PRECONDITION;
  }
  params_from_cfg(&a->dbp, a->cfg, account, a->db_password);
  status_code st = db_pool_create(&a->db, &a->dbp, a->cfg->mysql.pool_size, errbuf, errlen);
  const char *read_host = a->cfg->mysql.read_host;
  if (st != STATUS_OK || !a->spec->read_replica || read_host == NULL || read_host[0] == '\0')
    return st;
  a->dbp_read = a->dbp;
  a->dbp_read.host = read_host;
  a->dbp_read.socket = NULL; /* the replica is reached over TCP */
  if (a->cfg->mysql.read_port > 0) a->dbp_read.port = a->cfg->mysql.read_port;
  st = db_pool_create_read(&a->db_read, &a->dbp_read, a->cfg->mysql.pool_size, a->db, errbuf,
                           errlen);
  if (st == STATUS_OK)
    log_info(NULL, "%s: queries read from the replica %s:%d (the primary while it is down)",
             a->spec->name, a->dbp_read.host, a->dbp_read.port);
  return st;
}

static status_code app_load_keys(app *a, char *errbuf, size_t errlen) {
  return auth_keys_from_cfg(&a->keys, a->cfg, errbuf, errlen);
}

static status_code app_make_relay(app *a, char *errbuf, size_t errlen) {
  outbox_relay_opts o;
  outbox_relay_opts_init(&o, a->cfg);
  o.db = &a->dbp;
  char client_id[128];
  snprintf(client_id, sizeof client_id, "shop-%s-relay", a->spec->name);
  o.client_id = client_id;
  return outbox_relay_create(&a->relay, &o, errbuf, errlen);
}

static status_code app_make_consumer(app *a, char *errbuf, size_t errlen) {
  consumer_opts o;
  consumer_opts_init(&o, a->cfg, a->spec->consumer);
  o.db = &a->dbp;
  o.handler_arg = a->spec->arg;
  o.committed_arg = a->spec->arg;
  o.relay = a->relay;
  if (a->spec->append_only) o.purge_interval_ms = 0;
  char client_id[128];
  snprintf(client_id, sizeof client_id, "shop-%s", a->spec->name);
  o.client_id = client_id;
  return consumer_create(&a->cons, &o, errbuf, errlen);
}

static status_code app_make_server(app *a, char *errbuf, size_t errlen) {
  rpc_server_opts so;
  rpc_server_opts_from_cfg(&so, a->cfg, a->spec->name);
  so.auth = a->keys;
  so.metrics = a->reg;
  status_code st = rpc_server_create(&a->srv, &so, errbuf, errlen);
  if (st != STATUS_OK) return st;
  return rpc_server_listen(a->srv, a->listen, errbuf, errlen);
}

/* ---- housekeeping ------------------------------------------------------------- */

static void *app_housekeeping_main(void *arg) {
  app *a = arg;
  int interval = a->spec->housekeeping_interval_s > 0 ? a->spec->housekeeping_interval_s
                                                      : APP_DEFAULT_HOUSEKEEPING_S;
  for (;;) {
    pthread_mutex_lock(&a->hk_mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += interval;
    while (!a->hk_stop) {
      if (pthread_cond_timedwait(&a->hk_cv, &a->hk_mu, &until) != 0) break;
    }
    bool stop = a->hk_stop;
    pthread_mutex_unlock(&a->hk_mu);
    if (stop) return NULL;

    char err[STATUS_ERRBUF_SIZE];
    db_conn *c = NULL;
    if (db_pool_get(a->db, &c, err, sizeof err) != STATUS_OK) {
      log_warn(NULL, "%s: housekeeping: no database connection: %s", a->spec->name, err);
      continue;
    }
    if (a->prog->endpoint != NULL && !a->spec->append_only) {
      uint64_t n = 0;
      if (command_idem_purge(c, a->cfg->rpc.idempotency_retention_s, 1000, &n, err, sizeof err) !=
          STATUS_OK)
        log_warn(NULL, "%s: purging idempotency records failed: %s", a->spec->name, err);
      else if (n > 0)
        log_info(NULL, "%s: purged %llu idempotency record(s)", a->spec->name,
                 (unsigned long long)n);
    }
    if (a->spec->housekeeping != NULL) a->spec->housekeeping(a, c, a->spec->arg);
    db_pool_put(a->db, c);
  }
}

static status_code app_housekeeping_start(app *a, char *errbuf, size_t errlen) {
  if (a->db == NULL) return STATUS_OK;
  if (pthread_create(&a->hk_thread, NULL, app_housekeeping_main, a) != 0) {
    status_seterr(errbuf, errlen, "cannot start the housekeeping thread");
    return STATUS_INTERNAL;
  }
  a->hk_started = true;
  return STATUS_OK;
}

static void app_housekeeping_stop(app *a) {
  if (!a->hk_started) return;
  pthread_mutex_lock(&a->hk_mu);
  a->hk_stop = true;
  pthread_cond_signal(&a->hk_cv);
  pthread_mutex_unlock(&a->hk_mu);
  pthread_join(a->hk_thread, NULL);
  a->hk_started = false;
}

/* ---- main ------------------------------------------------------------------ */

static int app_wait_signal(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

static const char *arg_value(int argc, char **argv, const char *name) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return NULL;
}

static bool args_ok(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--listen") == 0 ||
         strcmp(argv[i], "--admin-port") == 0) &&
        i + 1 < argc) {
      i++;
      continue;
    }
    if (strcmp(argv[i], "--print-config") == 0) {
      if (i + 1 < argc && argv[i + 1][0] != '-') i++;
      continue;
    }
    return false;
  }
  return true;
}

/* Stops in the reverse order of starting; each step accepts "not made".
 * The consumer is joined before teardown: its callbacks use what teardown
 * frees. The relay stops after the server drained, so the events of the
 * last commands are still sent. */
static void app_stop_all(app *a) {
  atomic_store(&a->obs.stopping, true);
  atomic_store(&a->obs.up, false);
  if (a->srv_started) {
    status_code st = rpc_server_drain(a->srv, a->cfg->rpc.drain_grace_ms);
    if (st != STATUS_OK)
      log_warn(NULL, "%s: calls still running after the drain grace period", a->spec->name);
  }
  /* Its threads read what follows: stop them first. */
  app_admin_stop(a->admin);
  a->admin = NULL;
  app_housekeeping_stop(a);
  consumer_destroy(a->cons);
  a->cons = NULL;
  if (a->relay != NULL) outbox_relay_stop(a->relay);
  rpc_server_destroy(a->srv);
  a->srv = NULL;
  if (a->setup_done && a->spec->teardown != NULL) a->spec->teardown(a, a->spec->arg);
  outbox_relay_destroy(a->relay);
  a->relay = NULL;
  if (a->spec->relay || a->spec->consumer != NULL) events_shutdown_wait(10000);
  db_pool_destroy(a->db_read);
  a->db_read = NULL;
  db_pool_destroy(a->db);
  a->db = NULL;
  auth_keys_destroy(a->keys);
  a->keys = NULL;
  metrics_registry_destroy(a->reg);
  a->reg = NULL;
}

/* --admin-port, else the config's port (0 with --listen). -1: bad value. */
static int app_admin_port_pick(const app *a, int argc, char **argv) {
  const char *v = arg_value(argc, argv, "--admin-port");
  if (v == NULL) return a->listen_arg ? 0 : config_program_admin_port(a->cfg, a->prog);
  char *end;
  errno = 0;
  long p = strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || p < 0 || p > 65535) return -1;
  return (int)p;
}

static status_code app_admin_up(app *a, int argc, char **argv, char *errbuf, size_t errlen) {
  if (metrics_registry_create(&a->reg) != STATUS_OK ||
      metrics_collector_add(a->reg, app_collect_cb, &a->obs) != STATUS_OK) {
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  int port = app_admin_port_pick(a, argc, argv);
  if (port < 0) {
    status_seterr(errbuf, errlen, "--admin-port must be a port number (0-65535)");
    return STATUS_INVALID_ARGUMENT;
  }
  return app_admin_start(&a->admin, a->cfg->admin.host, port, a->reg, app_ready_cb, &a->obs, errbuf,
                         errlen);
}

int app_main(const app_spec *spec, int argc, char **argv) {
  rpc_signals_block();
  if (!args_ok(argc, argv)) {
    fprintf(stderr,
            "usage: %s [--config PATH] [--listen URL] [--admin-port N] [--print-config [KEY]]\n",
            spec->name);
    return 2;
  }
  const config_program *prog = config_program_find(spec->name);
  if (prog == NULL) {
    fprintf(stderr, "%s: not a program of internal/config/programs.list\n", spec->name);
    return 2;
  }
  char err[STATUS_ERRBUF_SIZE] = "";
  shop_cfg *cfg = NULL;
  if (config_load(&cfg, config_path_find(argc, argv), err, sizeof err) != 0) {
    fprintf(stderr, "%s: %s\n", spec->name, err);
    return 2;
  }
  const char *print_key;
  if (config_print_arg(argc, argv, &print_key)) {
    int prc = config_print(cfg, print_key, stdout);
    config_free(cfg);
    return prc;
  }
  app a = {.spec = spec, .prog = prog, .cfg = cfg};
  pthread_mutex_init(&a.hk_mu, NULL);
  pthread_cond_init(&a.hk_cv, NULL);
  log_level lvl = LOG_LEVEL_INFO;
  log_level_parse(a.cfg->log.level, &lvl);
  log_setup(spec->name, lvl, NULL);
  a.listen = arg_value(argc, argv, "--listen");
  a.listen_arg = a.listen != NULL;
  if (a.listen == NULL) a.listen = config_program_endpoint(a.cfg, prog);
  if (prog->endpoint == NULL) a.listen = NULL; /* a worker serves no RPC, --listen or not */
  a.obs.name = spec->name;
  a.obs.group = spec->consumer != NULL ? spec->consumer->group : NULL;
  a.obs.metrics = spec->metrics;
  a.obs.ready = spec->ready;
  a.obs.arg = spec->arg;

  int rc = 1;
  status_code st = app_admin_up(&a, argc, argv, err, sizeof err);
  if (st != STATUS_OK) {
    log_error(NULL, "%s: admin http: %s", spec->name, err);
    rc = st == STATUS_INVALID_ARGUMENT ? 2 : 1;
    goto out;
  }
  st = app_load_keys(&a, err, sizeof err);
  if (st != STATUS_OK) {
    log_error(NULL, "%s: %s", spec->name, err);
    rc = 2;
    goto out;
  }
  if (spec->db_account != NULL) {
    if ((st = app_migrate(&a, err, sizeof err)) != STATUS_OK) {
      log_error(NULL, "%s: migrations failed: %s", spec->name, err);
      goto out;
    }
    if ((st = app_open_db(&a, err, sizeof err)) != STATUS_OK) {
      log_error(NULL, "%s: database: %s", spec->name, err);
      goto out;
    }
  }
  if (spec->relay && (st = app_make_relay(&a, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: outbox relay: %s", spec->name, err);
    goto out;
  }
  if (a.listen != NULL && (st = app_make_server(&a, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: rpc server on %s: %s", spec->name, a.listen, err);
    goto out;
  }
  if (spec->setup != NULL && (st = spec->setup(&a, spec->arg, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: setup: %s", spec->name, err);
    goto out;
  }
  a.setup_done = true;
  if (spec->consumer != NULL && (st = app_make_consumer(&a, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: consumer: %s", spec->name, err);
    goto out;
  }
  if (a.relay != NULL && (st = outbox_relay_start(a.relay, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: outbox relay: %s", spec->name, err);
    goto out;
  }
  if (a.cons != NULL && (st = consumer_start(a.cons, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: consumer: %s", spec->name, err);
    goto out;
  }
  if ((st = app_housekeeping_start(&a, err, sizeof err)) != STATUS_OK) {
    log_error(NULL, "%s: %s", spec->name, err);
    goto out;
  }
  if (a.srv != NULL) {
    if ((st = rpc_server_start(a.srv, err, sizeof err)) != STATUS_OK) {
      log_error(NULL, "%s: rpc server: %s", spec->name, err);
      goto out;
    }
    a.srv_started = true;
  }
  a.obs.db = a.db;
  a.obs.db_read = a.db_read;
  a.obs.srv = a.srv;
  a.obs.cons = a.cons;
  a.obs.relay = a.relay;
  atomic_store(&a.obs.up, true);
  log_info(NULL, "%s: serving%s%s admin http://%s:%d", spec->name, a.listen != NULL ? " on " : "",
           a.listen != NULL ? a.listen : "", a.cfg->admin.host, app_admin_port(a.admin));
  int sig = app_wait_signal();
  log_info(NULL, "%s: %s received, stopping", spec->name, sig == SIGTERM ? "SIGTERM" : "SIGINT");
  rc = 0;
out:
  app_stop_all(&a);
  if (rc == 0) log_info(NULL, "%s: stopped", spec->name);
  memset(a.db_password, 0, sizeof a.db_password);
  config_free(a.cfg);
  pthread_mutex_destroy(&a.hk_mu);
  pthread_cond_destroy(&a.hk_cv);
  return rc;
}
