/* order-query: builds the orders read model (database shop_order_read)
 * from order, payment and inventory events (consumer group "order-query")
 * and serves shop.order.v1.OrderQueryService from it.
 *
 *   order-query [--config PATH] [--listen URL]
 *
 * See internal/order/order.h and internal/app/app.h. */
#include "app/app.h"
#include "order/order.h"
#include "topology/topology.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  order_query_ctx *ctx = arg;
  order_query_ctx_init(ctx, app_db_read(a));
  return order_query_register(app_server(a), ctx, errbuf, errlen);
}

static void teardown_cb(app *a, void *arg) { order_query_ctx_destroy(arg); }

int main(int argc, char **argv) {
  static order_query_ctx ctx;
  const app_migrations migs[] = {
      {"order_read", order_read_migrations, order_read_migrations_count}};
  const app_spec spec = {
      .name = "order-query",
      .db_account = "shop_order_read",
      .migrations = migs,
      .n_migrations = 1,
      .consumer = &order_projection_consumer,
      .read_replica = true,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .metrics = order_read_metrics_cb,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
