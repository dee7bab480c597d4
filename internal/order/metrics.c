/* Order-query's domain metrics, computed at scrape time from its read
 * model (order.h, order_read_metrics_cb). */
#include "log/log.h"
#include "order/order.h"

void order_read_metrics_cb(db_conn *db, metrics_registry *reg, void *arg) {
  static const char *const labels[] = {"state", NULL};
  static const struct {
    int status;
    const char *name;
  } states[] = {
      {ORDER_ST(PENDING), "PENDING"},
      {ORDER_ST(CONFIRMED), "CONFIRMED"},
      {ORDER_ST(SHIPPED), "SHIPPED"},
      {ORDER_ST(CANCELLED), "CANCELLED"},
  };
  enum { N_STATES = sizeof states / sizeof states[0] };
  metrics_family *f =
      metrics_gauge_family(reg, "shop_orders", "Orders in the read model, by state.", labels);
  char err[256];
  db_rows *r = NULL;
  /* created_ms = 0 marks a row that only a payment or inventory event
   * reached so far: not an order yet (see the migration). */
  if (db_query(db, "SELECT status, COUNT(*) FROM orders_view WHERE created_ms > 0 GROUP BY status",
               NULL, 0, &r, err, sizeof err) != STATUS_OK) {
    log_warn(NULL, "order metrics: %s", err);
    return;
  }
  int64_t counts[N_STATES] = {0};
  while (db_rows_next(r)) {
    int64_t st = db_rows_i64(r, 0);
    for (size_t i = 0; i < N_STATES; i++)
      if (states[i].status == st) counts[i] = db_rows_i64(r, 1);
  }
  db_rows_free(r);
  for (size_t i = 0; i < N_STATES; i++) {
    const char *v[] = {states[i].name};
    metrics_gauge_set(metrics_series_get(f, v), (double)counts[i]);
  }
}
