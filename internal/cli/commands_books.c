/* shopctl reconcile, rebuild-projection and seed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

/* ---- reconcile and rebuild-projection ---------------------------------- */

/* Exit status of reconcile: 0 clean, 1 something is broken, 14 the database
 * cannot be reached, 2 bad cli_usage; other errors as status_exit_code. */
#define RECONCILE_EXIT_BROKEN 1

/* --since: Unix milliseconds, or a duration ago ("90s", "10m", "2h"). */
static bool parse_since(const char *s, int64_t *ms) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || v < 0) return false;
  int64_t unit = 0;
  if (*end == '\0') {
    *ms = v;
    return true;
  }
  if (strcmp(end, "s") == 0)
    unit = 1000;
  else if (strcmp(end, "m") == 0)
    unit = 60000;
  else if (strcmp(end, "h") == 0)
    unit = 3600000;
  else if (strcmp(end, "d") == 0)
    unit = 86400000;
  else
    return false;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  *ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - v * unit;
  return true;
}

static void reconcile_print_json(const reconcile_report *r) {
  json_t *findings = json_array();
  for (size_t i = 0; i < r->findings_count; i++)
    json_array_append_new(
        findings, json_pack("{s:s, s:s, s:s}", "kind", reconcile_kind_name(r->findings[i].kind),
                            "id", r->findings[i].id, "why", r->findings[i].why));
  json_t *j = json_pack(
      "{s:b, s:i, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:o}", "clean",
      r->findings_count == 0, "runs", r->runs, "elapsedMs", (json_int_t)r->elapsed_ms, "orders",
      (json_int_t)r->orders, "ordersByStatus", "PENDING", (json_int_t)r->orders_pending,
      "CONFIRMED", (json_int_t)r->orders_confirmed, "SHIPPED", (json_int_t)r->orders_shipped,
      "CANCELLED", (json_int_t)r->orders_cancelled, "products", (json_int_t)r->products,
      "auditEvents", (json_int_t)r->events, "findings", findings);
  cli_print_json(j);
  json_decref(j);
}

int cli_cmd_reconcile(cli_opts *o) {
  if (o->n_args != 1) return cli_usage(stderr), 2;
  if (o->cfg == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "no config: give --config PATH%s%s", "", "");
  reconcile_opts ro;
  reconcile_opts_init(&ro);
  ro.settle_ms = (int)o->settle_ms;
  ro.sku_prefix = o->sku_prefix;
  ro.database = o->database;
  if (o->since != NULL && !parse_since(o->since, &ro.since_ms))
    return fprintf(stderr, "shopctl: bad --since %s (Unix ms, or 90s, 10m, 2h, 1d)\n", o->since), 2;
  reconcile_report r;
  char err[STATUS_ERRBUF_SIZE];
  status_code rc = reconcile_run(o->cfg, &ro, &r, err, sizeof err);
  if (rc != STATUS_OK) {
    fprintf(stderr, "ERROR: %s: reconcile: %s\n", status_name(rc), err);
    if (rc == STATUS_UNAVAILABLE)
      fprintf(stderr, "  database: %s:%d\n", o->cfg->mysql.host, o->cfg->mysql.port);
    return status_exit_code(rc);
  }
  if (o->json) {
    reconcile_print_json(&r);
  } else {
    for (size_t i = 0; i < r.findings_count; i++)
      printf("%s %s: %s\n", reconcile_kind_name(r.findings[i].kind), r.findings[i].id,
             r.findings[i].why);
    printf("%s: %" PRId64 " orders (%" PRId64 " pending, %" PRId64 " confirmed, %" PRId64
           " shipped, %" PRId64 " cancelled), %" PRId64 " products, %" PRId64
           " audit events; %d run(s) in %" PRId64 " ms\n",
           r.findings_count == 0 ? "clean" : "BROKEN", r.orders, r.orders_pending,
           r.orders_confirmed, r.orders_shipped, r.orders_cancelled, r.products, r.events, r.runs,
           r.elapsed_ms);
    if (r.findings_count > 0) printf("%zu finding(s)\n", r.findings_count);
  }
  int code = r.findings_count == 0 ? 0 : RECONCILE_EXIT_BROKEN;
  reconcile_report_free(&r);
  return code;
}

int cli_cmd_rebuild_projection(cli_opts *o) {
  if (o->n_args != 1) return cli_usage(stderr), 2;
  const char *url =
      o->server ? o->server : cli_service_endpoint(o->cfg, "shop.audit.v1.AuditQueryService");
  if (url == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "no endpoint for %s: give --server URL%s",
                         "shop.audit.v1.AuditQueryService", "");
  char *token = NULL;
  cli_creds_token(o, &token);
  rpc_client *cli;
  status_code rc = cli_client_open(&cli, o, url);
  if (rc != STATUS_OK) {
    free(token);
    return status_exit_code(rc);
  }
  Shop__Audit__V1__RebuildOrderProjectionRequest req =
      SHOP__AUDIT__V1__REBUILD_ORDER_PROJECTION_REQUEST__INIT;
  req.max_differences = o->max > 0 ? (int32_t)o->max : 0;
  if (o->timeout_ms == 0) o->timeout_ms = 60000; /* a replay of the whole log */
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  rc = cli_call_typed(cli, o, "/shop.audit.v1.AuditQueryService/RebuildOrderProjection", &req.base,
                      &shop__audit__v1__rebuild_order_projection_response__descriptor, &resp, token,
                      o->idempotency_key, &st);
  rpc_client_destroy(cli);
  free(token);
  if (rc != STATUS_OK) {
    cli_print_status(&st, "RebuildOrderProjection");
    return status_exit_code(rc);
  }
  Shop__Audit__V1__RebuildOrderProjectionResponse *r =
      (Shop__Audit__V1__RebuildOrderProjectionResponse *)resp;
  if (o->json) {
    json_t *j;
    char err[STATUS_ERRBUF_SIZE];
    if (pbjson_from_message(&j, resp, err, sizeof err) == STATUS_OK) {
      cli_print_json(j);
      json_decref(j);
    }
  } else {
    for (size_t i = 0; i < r->n_differences; i++) {
      const Shop__Audit__V1__OrderDifference *d = r->differences[i];
      printf("order %s: %s: rebuilt %s, live %s\n", d->order_id, d->field,
             d->rebuilt[0] ? d->rebuilt : "(missing)", d->live[0] ? d->live : "(missing)");
    }
    printf("%s: replayed %" PRId64 " audit events into %" PRId64 " orders; compared %" PRId64
           " with the live read model; %" PRId64 " difference(s)%s\n",
           r->match ? "match" : "DIFFERENT", r->events_applied, r->orders_rebuilt,
           r->orders_compared, r->difference_count,
           (size_t)r->difference_count > r->n_differences ? " (first ones listed)" : "");
  }
  int code = r->match ? 0 : RECONCILE_EXIT_BROKEN;
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

/* ---- seed -------------------------------------------------------------- */

int cli_cmd_seed(cli_opts *o) {
  if (o->n_args > 2) return cli_usage(stderr), 2;
  if (o->cfg == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "no config: give --config PATH%s%s", "", "");
  if (o->password_file == NULL && !o->password_stdin)
    return cli_fail_code(
        STATUS_INVALID_ARGUMENT,
        "give the customer's password: --password-file PATH or --password-stdin%s%s", "", "");
  char password[1024];
  if (!cli_read_password(o, password, sizeof password))
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "could not read a password%s%s", "", "");
  int code = cli_seed(o->cfg, o->n_args == 2 ? o->args[1] : "customer@shop.local", password,
                      o->sku_prefix, stdout);
  memset(password, 0, sizeof password);
  return code;
}
