/* product-query: builds the catalog read model (database
 * shop_product_read) from product events and the inventory worker's
 * StockLevelChanged (consumer group "product-query") and serves
 * shop.product.v1.ProductQueryService from it, publicly.
 *
 *   product-query [--config PATH] [--listen URL]
 *
 * See internal/product/product.h and internal/app/app.h. */
#include "app/app.h"
#include "product/product.h"
#include "topology/topology.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  product_query_ctx *ctx = arg;
  product_query_ctx_init(ctx, app_cfg(a), app_db_read(a));
  return product_query_register(app_server(a), ctx, errbuf, errlen);
}

static void teardown_cb(app *a, void *arg) { product_query_ctx_destroy(arg); }

int main(int argc, char **argv) {
  product_query_ctx ctx;
  const app_migrations migs[] = {
      {"product_read", product_read_migrations, product_read_migrations_count}};
  const app_spec spec = {
      .name = "product-query",
      .db_account = "shop_product_read",
      .migrations = migs,
      .n_migrations = 1,
      .consumer = &product_projection_consumer,
      .read_replica = true,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
