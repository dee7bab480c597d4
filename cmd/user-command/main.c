/* user-command: serves shop.user.v1.UserCommandService (registration,
 * login, tokens, profiles, roles) from database shop_user, publishes user
 * events through its outbox, and creates the first admin at start-up.
 *
 *   user-command [--config PATH] [--listen URL]
 *
 * See internal/user/user.h for the rules and internal/app/app.h for the
 * start-up, the signals and the exit status. */
#include "app/app.h"
#include "user/user.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  user_cmd_ctx *ctx = arg;
  status_code st = user_cmd_ctx_init(ctx, app_cfg(a), app_name(a), app_db(a), app_relay(a),
                                     app_auth(a), errbuf, errlen);
  if (st == STATUS_OK) st = user_cmd_register(app_server(a), ctx, errbuf, errlen);
  if (st == STATUS_OK) st = user_bootstrap_admin(ctx, errbuf, errlen);
  return st;
}

static void teardown_cb(app *a, void *arg) { user_cmd_ctx_destroy(arg); }

static void housekeeping_cb(app *a, db_conn *c, void *arg) { user_cmd_housekeeping(c, arg); }

int main(int argc, char **argv) {
  user_cmd_ctx ctx;
  const app_migrations migs[] = {{"user", user_migrations, user_migrations_count}};
  const app_spec spec = {
      .name = "user-command",
      .db_account = "shop_user",
      .migrations = migs,
      .n_migrations = 1,
      .relay = true,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .housekeeping = housekeeping_cb,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
