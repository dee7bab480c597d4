/* shop-echo: serves shop.testing.v1.EchoService, for the RPC layer's
 * lifecycle tests and for trying the stack by hand.
 *
 *   shop-echo [--config PATH] --listen URL
 *
 * Loads the config (rpc.*, auth.*), serves until SIGTERM or SIGINT, then
 * drains for rpc.drain_grace_ms and exits 0. Exit 2: bad usage or config;
 * exit 1: could not serve. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/auth.h"
#include "config/config.h"
#include "log/log.h"
#include "rpc/rpc.h"
#include "shop/testing/v1/echo.pb-c.h"

typedef struct echo_ctx {
  _Atomic int64_t executions;
} echo_ctx;

static void echo_echo(Shop__Testing__V1__EchoService_Service *svc,
                      const Shop__Testing__V1__EchoRequest *in,
                      Shop__Testing__V1__EchoResponse_Closure closure, void *data) {
  rpc_call *call = data;
  if (in->message[0] == '\0') {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "message is required");
    rpc_call_add_field_violation(call, "message", "must not be empty");
    return;
  }
  Shop__Testing__V1__EchoResponse r = SHOP__TESTING__V1__ECHO_RESPONSE__INIT;
  r.message = in->message;
  r.blob = in->blob;
  r.user_id = (char *)rpc_call_user_id(call);
  r.role = (char *)auth_role_name(rpc_call_role(call));
  closure(&r, data);
}

static void echo_sleep(Shop__Testing__V1__EchoService_Service *svc,
                       const Shop__Testing__V1__SleepRequest *in,
                       Shop__Testing__V1__SleepResponse_Closure closure, void *data) {
  rpc_call *call = data;
  int32_t slept = 0;
  /* The lifecycle tests wait for this line to know a call is in flight. */
  log_info(&(log_ctx){.request_id = rpc_call_request_id(call)}, "sleep started: %d ms",
           (int)in->duration_ms);
  /* Sleeps in short steps so that a spent deadline or an abandoned drain
   * ends it. */
  while (slept < in->duration_ms && !rpc_call_cancelled(call)) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 5 * 1000000L};
    nanosleep(&ts, NULL);
    slept += 5;
  }
  Shop__Testing__V1__SleepResponse r = SHOP__TESTING__V1__SLEEP_RESPONSE__INIT;
  r.slept_ms = slept;
  closure(&r, data);
}

static void echo_command(Shop__Testing__V1__EchoService_Service *svc,
                         const Shop__Testing__V1__CommandRequest *in,
                         Shop__Testing__V1__CommandResponse_Closure closure, void *data) {
  echo_ctx *ctx = rpc_call_service_ctx(data);
  Shop__Testing__V1__CommandResponse r = SHOP__TESTING__V1__COMMAND_RESPONSE__INIT;
  r.name = in->name;
  r.executions = atomic_fetch_add(&ctx->executions, 1) + 1;
  closure(&r, data);
}

static const rpc_method_policy echo_policies[] = {
    {"Echo", RPC_PUBLIC},
    {"Sleep", RPC_PUBLIC},
    {"Command", RPC_PUBLIC | RPC_COMMAND},
};

int main(int argc, char **argv) {
  rpc_signals_block();
  const char *listen = NULL;
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--listen") == 0) listen = argv[i + 1];
  if (listen == NULL) {
    fprintf(stderr, "usage: shop-echo [--config PATH] --listen URL\n");
    return 2;
  }
  char err[512];
  shop_cfg *cfg = NULL;
  if (config_load(&cfg, config_path_from_args(argc, argv), err, sizeof err) != 0) {
    fprintf(stderr, "shop-echo: %s\n", err);
    return 2;
  }
  log_level lvl = LOG_LEVEL_INFO;
  log_level_parse(cfg->log.level, &lvl);
  log_setup("shop-echo", lvl, NULL);

  int rc = 1;
  auth_keys *keys = NULL;
  rpc_server *srv = NULL;
  echo_ctx ctx = {0};
  static Shop__Testing__V1__EchoService_Service echo_svc =
      SHOP__TESTING__V1__ECHO_SERVICE__INIT(echo_);

  if (cfg->auth.jwt_key != NULL && cfg->auth.jwt_key[0] != '\0') {
    if (auth_keys_create(&keys, cfg->auth.jwt_key, strlen(cfg->auth.jwt_key), cfg->auth.issuer,
                         cfg->auth.access_ttl_s, err, sizeof err) != STATUS_OK) {
      log_error(NULL, "shop-echo: %s", err);
      rc = 2;
      goto out;
    }
  } else {
    log_warn(NULL, "shop-echo: no auth.jwt_key: no token verifies");
  }
  rpc_server_opts so;
  rpc_server_opts_from_cfg(&so, cfg, "shop-echo");
  so.auth = keys;
  rpc_service_opts svo = {.default_policy = RPC_AUTHENTICATED,
                          .policies = echo_policies,
                          .n_policies = sizeof echo_policies / sizeof echo_policies[0],
                          .ctx = &ctx};
  if (rpc_server_create(&srv, &so, err, sizeof err) != STATUS_OK ||
      rpc_server_register(srv, &echo_svc.base, &svo, err, sizeof err) != STATUS_OK ||
      rpc_server_listen(srv, listen, err, sizeof err) != STATUS_OK ||
      rpc_server_start(srv, err, sizeof err) != STATUS_OK) {
    log_error(NULL, "shop-echo: %s", err);
    goto out;
  }
  log_info(NULL, "shop-echo: serving on %s with %d workers", listen, so.workers);
  rpc_server_run_until_signal(srv);
  rc = 0;
out:
  rpc_server_destroy(srv);
  auth_keys_destroy(keys);
  config_free(cfg);
  return rc;
}
