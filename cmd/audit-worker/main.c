/* audit-worker: appends every event of every domain topic (consumer group
 * "audit-worker") to the append-only, hash-chained audit log (database
 * shop_audit, runtime account SELECT and INSERT only) and serves
 * shop.audit.v1.AuditQueryService (admin only) from it. Emits no events.
 *
 *   audit-worker [--config PATH] [--listen URL]
 *
 * See internal/audit/audit.h and internal/app/app.h. */
#include "app/app.h"
#include "audit/audit.h"
#include "topology/topology.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  audit_ctx *ctx = arg;
  audit_ctx_init(ctx, app_db(a));
  ctx->cfg = app_cfg(a);
  ctx->auth = app_auth(a);
  ctx->dbp = app_db_params(a);
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
