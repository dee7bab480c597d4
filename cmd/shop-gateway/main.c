/* shop-gateway: HTTP/JSON in front of Shop's RPC services (routes from
 * proto/'s google.api.http options), /openapi.json and the storefront page,
 * on gateway.host:gateway.port; /metrics, /livez and /readyz on its admin
 * port (admin.gateway).
 *
 *   shop-gateway [--config PATH] [--admin-port N]
 *
 * See internal/gateway/gateway.h and internal/app/app.h. */
#include "app/app.h"
#include "gateway/gateway.h"
#include "log/log.h"

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  gateway **g = arg;
  gateway_opts o = {.cfg = app_cfg(a), .metrics = app_metrics(a), .port = -1};
  status_code st = gateway_create(g, &o, errbuf, errlen);
  if (st == STATUS_OK)
    log_info(NULL, "shop-gateway: HTTP on http://%s:%d", app_cfg(a)->gateway.host,
             gateway_port(*g));
  return st;
}

static void teardown_cb(app *a, void *arg) {
  gateway **g = arg;
  gateway_destroy(*g);
  *g = NULL;
}

static bool ready_cb(void *arg, char *why, size_t len) {
  gateway **g = arg;
  return *g != NULL && gateway_ready(*g, why, len);
}

int main(int argc, char **argv) {
  gateway *g = NULL;
  const app_spec spec = {
      .name = "shop-gateway",
      .setup = setup_cb,
      .teardown = teardown_cb,
      .ready = ready_cb,
      .arg = &g,
  };
  return app_main(&spec, argc, argv);
}
