/* product-command: serves shop.product.v1.ProductCommandService (admin
 * only) from database shop_product and publishes product events through
 * its outbox.
 *
 *   product-command [--config PATH] [--listen URL]
 *
 * See internal/product/product.h and internal/app/app.h. */
#include "app/app.h"
#include "product/product.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  product_cmd_ctx *ctx = arg;
  product_cmd_ctx_init(ctx, app_cfg(a), app_name(a), app_db(a), app_relay(a));
  return product_cmd_register(app_server(a), ctx, errbuf, errlen);
}

int main(int argc, char **argv) {
  product_cmd_ctx ctx;
  const app_migrations migs[] = {{"product", product_migrations, product_migrations_count}};
  const app_spec spec = {
      .name = "product-command",
      .db_account = "shop_product",
      .migrations = migs,
      .n_migrations = 1,
      .relay = true,
      .setup = setup_cb,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
