/*
 * Shared by the .c files of the app module; not part of its contract
 * (app.h).
 */
#ifndef SHOP_APP_INTERNAL_H
#define SHOP_APP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <stdatomic.h>

#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "metrics/metrics.h"
#include "rpc/rpc.h"
#include "status/status.h"

/* The admin HTTP server (admin.c). */
typedef struct app_admin app_admin;

/* True when the program is ready; otherwise a short reason in why. Runs on
 * a connection thread of the admin server. */
typedef bool (*app_admin_ready_cb)(void *arg, char *why, size_t len);

/* Binds host:port (0: ephemeral) and serves GET /livez (200 "ok" while
 * the process runs), /readyz (200, or 503 with ready's reason) and
 * /metrics (reg's text format 0.0.4) on threads of its own; an unknown
 * path is 404, a method other than GET or HEAD 405. reg and ready_arg are
 * borrowed until app_admin_stop. Errors: UNAVAILABLE (the port is taken,
 * said in errbuf), INTERNAL. */
status_code app_admin_start(app_admin **out, const char *host, int port, metrics_registry *reg,
                            app_admin_ready_cb ready, void *ready_arg, char *errbuf, size_t errlen);
/* The bound port. */
int app_admin_port(const app_admin *ad);
/* Stops serving and waits for running requests. NULL is fine. */
void app_admin_stop(app_admin *ad);

/* What /readyz and the program's metrics look at (observe.c). The main
 * thread fills the pointers while it starts the program, then sets up;
 * the admin threads read them only while up is true, and the main thread
 * clears up and stops the admin server before it frees anything. */
typedef struct app_observed {
  const char *name;  /* program */
  const char *group; /* consumer group, if any */
  db_pool *db;
  db_pool *db_read; /* the queries' replica pool (app_db_read), if any */
  rpc_server *srv;
  consumer *cons;
  outbox_relay *relay;
  void (*metrics)(db_conn *db, metrics_registry *reg, void *arg);
  bool (*ready)(void *arg, char *why, size_t len);
  void *arg;
  atomic_bool up;       /* everything started, not stopping */
  atomic_bool stopping; /* a signal came */
} app_observed;

/* app_admin_ready_cb over an app_observed: the database answers, the RPC server
 * serves (not draining), the consumer has partitions, the relay runs, and
 * then the program's own check (spec->ready). */
bool app_ready_cb(void *arg, char *why, size_t len);
/* metrics_collect_cb over an app_observed: consumer lag and counters,
 * outbox backlog, RPC queue, then the program's own (spec->metrics). */
void app_collect_cb(metrics_registry *reg, void *arg);

#endif
