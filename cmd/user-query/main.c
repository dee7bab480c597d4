/* user-query: builds the users read model (database shop_user_read) from
 * user events (consumer group "user-query") and serves
 * shop.user.v1.UserQueryService from it.
 *
 *   user-query [--config PATH] [--listen URL]
 *
 * See internal/user/user.h and internal/app/app.h. */
#include "app/app.h"
#include "topology/topology.h"
#include "user/user.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  user_query_ctx *ctx = arg;
  user_query_ctx_init(ctx, app_db_read(a));
  return user_query_register(app_server(a), ctx, errbuf, errlen);
}

static void teardown_cb(app *a, void *arg) { user_query_ctx_destroy(arg); }

int main(int argc, char **argv) {
  user_query_ctx ctx;
  const app_migrations migs[] = {{"user_read", user_read_migrations, user_read_migrations_count}};
  const app_spec spec = {
      .name = "user-query",
      .db_account = "shop_user_read",
      .migrations = migs,
      .n_migrations = 1,
      .consumer = &user_projection_consumer,
      .read_replica = true,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
