/* audit-worker: appends every event of every domain topic (consumer group
 * "audit-worker") to the append-only, hash-chained audit log (database
 * shop_audit, runtime account SELECT and INSERT only) and serves
 * shop.audit.v1.AuditQueryService (admin only) from it. Emits no events.
 *
 *   audit-worker [--config PATH] [--listen URL]
 *
 * RebuildOrderProjection is internal/rebuild's, wired in here: the audit
 * log knows no domain.
 *
 * See internal/audit/audit.h, internal/rebuild/rebuild.h and
 * internal/app/app.h. */
#include "app/app.h"
#include "audit/audit.h"
#include "rebuild/rebuild.h"

static rebuild_order_opts rebuild_opts;

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  audit_ctx *ctx = arg;
  audit_ctx_init(ctx, app_db(a));
  rebuild_opts =
      (rebuild_order_opts){.cfg = app_cfg(a), .auth = app_auth(a), .dbp = app_db_params(a)};
  ctx->rebuild = rebuild_order_projection_cb;
  ctx->rebuild_self = &rebuild_opts;
  return audit_query_register(app_server(a), ctx, errbuf, errlen);
}

static void teardown_cb(app *a, void *arg) { audit_ctx_destroy(arg); }

int main(int argc, char **argv) {
  static audit_ctx ctx;
  const app_migrations migs[] = {{"audit", audit_migrations, audit_migrations_count}};
  const app_spec spec = {
      .name = "audit-worker",
      .db_account = "shop_audit",
      .migrations = migs,
      .n_migrations = 1,
      .consumer = &audit_consumer,
      .append_only = true,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
