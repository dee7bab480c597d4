/* inventory-worker: keeps stock per product and each order's reservation
 * (database shop_inventory) from product and order events (consumer group
 * "inventory-worker"), and publishes inventory events through its outbox.
 * No RPC endpoint.
 *
 *   inventory-worker [--config PATH]
 *
 * See internal/inventory/inventory.h and internal/app/app.h. */
#include "app/app.h"
#include "inventory/inventory.h"
#include "log/log.h"
#include "topology/topology.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  inventory_ctx_init(arg, app_cfg(a), app_name(a), outbox_sink_of(app_relay(a), app_name(a)));
  return STATUS_OK;
}

/* Every second: reject the reservations that waited too long for an
 * unknown product. */
static void housekeeping_cb(app *a, db_conn *db, void *arg) {
  char err[512];
  status_code st = inventory_expire_waiting(db, arg, NULL, err, sizeof err);
  if (st != STATUS_OK)
    log_warn(NULL, "expiring waiting reservations: %s: %s", status_name(st), err);
}

static void teardown_cb(app *a, void *arg) { inventory_ctx_destroy(arg); }

int main(int argc, char **argv) {
  static inventory_ctx ctx;
  const app_migrations migs[] = {{"inventory", inventory_migrations, inventory_migrations_count}};
  const app_spec spec = {
      .name = "inventory-worker",
      .db_account = "shop_inventory",
      .migrations = migs,
      .n_migrations = 1,
      .relay = true,
      .consumer = &inventory_consumer,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .housekeeping = housekeeping_cb,
      .housekeeping_interval_s = 1,
      .arg = &ctx,
  };
  return app_main(&spec, argc, argv);
}
