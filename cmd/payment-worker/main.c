/* payment-worker: authorizes, captures, voids and refunds orders' payments
 * (database shop_payment) through the simulated card processor, from order
 * events (consumer group "payment-worker"), and publishes payment events
 * through its outbox. No RPC endpoint.
 *
 *   payment-worker [--config PATH]
 *
 * See internal/payment/payment.h and internal/app/app.h. */
#include "app/app.h"
#include "log/log.h"
#include "payment/payment.h"
#include "topology/topology.h"

typedef struct program {
  payment_ctx ctx; /* first: the consumer's callbacks take it as their arg */
  payment_sim *sim;
} program;

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  program *p = arg;
  payment_sim_opts o;
  payment_sim_opts_from_cfg(&o, app_cfg(a));
  status_code st = payment_sim_create(&p->sim, &o, errbuf, errlen);
  if (st != STATUS_OK) return st;
  log_info(NULL, "payment-worker: simulated card processor in %s (latency %d ms, failures %d/1000)",
           o.state_dir, o.latency_ms, o.failure_permille);
  payment_ctx_init(&p->ctx, app_cfg(a), app_name(a), outbox_sink_of(app_relay(a), app_name(a)),
                   payment_sim_gateway(p->sim));
  return STATUS_OK;
}

static void teardown_cb(app *a, void *arg) {
  program *p = arg;
  payment_ctx_destroy(&p->ctx);
  payment_sim_destroy(p->sim);
  p->sim = NULL;
}

int main(int argc, char **argv) {
  static program p;
  const app_migrations migs[] = {{"payment", payment_migrations, payment_migrations_count}};
  const app_spec spec = {
      .name = "payment-worker",
      .db_account = "shop_payment",
      .migrations = migs,
      .n_migrations = 1,
      .relay = true,
      .consumer = &payment_consumer,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .arg = &p,
  };
  return app_main(&spec, argc, argv);
}
