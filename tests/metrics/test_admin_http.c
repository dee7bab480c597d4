/* The admin HTTP port of real Shop programs (internal/app): what /metrics
 * counts for the RPC calls made, /livez, /readyz (ready, and not ready
 * while the consumer has no partitions), 404 and 405, the consumer lag of
 * a worker, and a taken port stopping start-up. The programs run against
 * the test profile's MariaDB and Kafka (scripts/test.sh). */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "promtext.h"
#include "rpc/rpc.h"
#include "shop/product/v1/queries.pb-c.h"
#include "support/proc.h"
#include "support/stack.h"
#include "support/wait.h"

#define WAIT_MS 30000

/* The HTTP status of method path on the admin port; *out (may be NULL)
 * gets the body (free it). 0 when no answer. */
static long http(const char *method, int port, const char *path, char **out) {
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  return proc_http(method, url, 15000, out);
}

/* Scrapes /metrics and parses every line (a line that does not parse
 * fails the test). */
static void scrape(int port, prom_text *t) {
  char *text = NULL;
  cr_assert_eq(http("GET", port, "/metrics", &text), 200);
  char err[2200];
  cr_assert(prom_parse(text, t, err, sizeof err), "%s", err);
  free(text);
}

static void log_file(char *out, size_t len, const char *program) {
  static int n;
  const char *dir = getenv("SHOP_LOG_DIR");
  snprintf(out, len, "%s/test-admin-%s-%d-%d.log", dir != NULL && dir[0] ? dir : "/tmp", program,
           (int)getpid(), n++);
  unlink(out);
}

/* The admin port from the program's "serving ... admin http://h:port"
 * line; 0 while there is none. */
static int admin_port_in_log(const char *path) {
  FILE *f = fopen(path, "r");
  char line[4096];
  int port = 0;
  while (port == 0 && f != NULL && fgets(line, sizeof line, f) != NULL) {
    const char *p = strstr(line, "admin http://127.0.0.1:");
    if (p != NULL) port = atoi(p + strlen("admin http://127.0.0.1:"));
  }
  if (f != NULL) fclose(f);
  return port;
}

static bool log_has(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  char line[4096];
  bool found = false;
  while (!found && f != NULL && fgets(line, sizeof line, f) != NULL)
    found = strstr(line, needle) != NULL;
  if (f != NULL) fclose(f);
  return found;
}

/* What a test started and did not stop is killed by stack_release. */
TestSuite(admin_http, .fini = stack_release);

static void stop(proc *p) { cr_expect_eq(stack_stop(p), 0, "exit status after SIGTERM"); }

/* One look at /readyz; *code and *body (freed first) get the answer.
 * True when it is want from a program past its start-up (a program still
 * starting answers 503 "starting"). */
static bool ready_is(int port, long want, long *code, char **body) {
  free(*body);
  *body = NULL;
  *code = http("GET", port, "/readyz", body);
  return *code == want && strncmp(*body, "starting", 8) != 0;
}

/* Waits for /readyz to answer want once start-up is over; returns the
 * last body (free it). */
static char *wait_ready(int port, long want) {
  char *b = NULL;
  long code = 0;
  WAIT_UNTIL(ready_is(port, want, &code, &b), WAIT_MS, "/readyz answering %ld (last: %ld %s)", want,
             code, b != NULL ? b : "");
  return b;
}

static double handled(const prom_text *t, const char *svc, const char *method, const char *code) {
  return prom_value(t, "grpc_server_handled_total",
                    (const char *[]){"grpc_type", "unary", "grpc_service", svc, "grpc_method",
                                     method, "grpc_code", code, NULL});
}

static const char *const PQ = "shop.product.v1.ProductQueryService";

Test(admin_http, rpc_calls_move_the_grpc_metrics_by_exactly_the_calls_made) {
  char url[64], logp[1024];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", proc_free_tcp_port());
  log_file(logp, sizeof logp, "product-query");
  /* --listen without --admin-port: an ephemeral admin port, so that this
   * second instance never clashes with the configured one. */
  proc *p = stack_start_with("product-query",
                             &(stack_opts){.url = url, .admin_port = -1, .log_path = logp});
  int port = 0;
  WAIT_UNTIL((port = admin_port_in_log(logp)) > 0, WAIT_MS, "an admin port in %s", logp);

  cr_assert_eq(http("GET", port, "/livez", NULL), 200);
  free(wait_ready(port, 200));
  cr_assert_eq(http("GET", port, "/nope", NULL), 404);
  cr_assert_eq(http("POST", port, "/metrics", NULL), 405);
  cr_assert_eq(http("DELETE", port, "/readyz", NULL), 405);

  prom_text before;
  scrape(port, &before);
  double ok0 = handled(&before, PQ, "ListProducts", "OK");
  cr_assert_geq(ok0, 0, "ListProducts is initialised before its first call");
  const char *const lp[] = {"grpc_service", PQ, "grpc_method", "ListProducts", NULL};
  double count0 = prom_value(&before, "grpc_server_handling_seconds_count", lp);
  double started0 = prom_value(&before, "grpc_server_started_total", lp);
  double unimpl0 = handled(&before, PQ, "unknown", "Unimplemented");
  double unknown0 = handled(&before, "unknown", "unknown", "Unimplemented");

  rpc_client_opts co = {.url = url,
                        .caller = "test-admin",
                        .max_message_bytes = 1 << 20,
                        .default_timeout_ms = 10000,
                        .max_timeout_ms = 10000,
                        .retry_max = 3,
                        .retry_backoff_ms = 50};
  metrics_registry *creg = NULL;
  cr_assert_eq(metrics_registry_create(&creg), STATUS_OK);
  co.metrics = creg;
  rpc_client *c = NULL;
  char err[512];
  cr_assert_eq(rpc_client_create(&c, &co, err, sizeof err), STATUS_OK, "%s", err);
  Shop__Product__V1__ListProductsRequest req = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  rpc_status st;
  for (int i = 0; i < 3; i++) {
    rpc_call_opts o = {.timeout_ms = 10000};
    cr_assert_eq(rpc_client_call_sync(c, &shop__product__v1__product_query_service__descriptor,
                                      "ListProducts", &req.base, NULL, &o, &st),
                 STATUS_OK, "%s", st.message);
  }
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  rpc_call_opts o = {.timeout_ms = 10000};
  cr_assert_eq(rpc_client_call_raw(c, "/shop.product.v1.ProductQueryService/NoSuchMethod", "", 0,
                                   &resp, &resp_len, &o, &st),
               STATUS_UNIMPLEMENTED);
  cr_assert_eq(
      rpc_client_call_raw(c, "/made.up.Service/Whatever", "", 0, &resp, &resp_len, &o, &st),
      STATUS_UNIMPLEMENTED);
  rpc_client_destroy(c);

  /* The client's side of the same calls. */
  char *ctext = NULL;
  size_t clen = 0;
  cr_assert_eq(metrics_render(creg, &ctext, &clen), STATUS_OK);
  prom_text ct;
  cr_assert(prom_parse(ctext, &ct, err, sizeof err), "%s", err);
  cr_assert_eq(prom_value(&ct, "grpc_client_handled_total",
                          (const char *[]){"grpc_type", "unary", "grpc_service", PQ, "grpc_method",
                                           "ListProducts", "grpc_code", "OK", NULL}),
               3);
  cr_assert_eq(prom_value(&ct, "grpc_client_handled_total",
                          (const char *[]){"grpc_method", "NoSuchMethod", "grpc_code",
                                           "Unimplemented", NULL}),
               1);
  cr_assert_eq(prom_value(&ct, "grpc_client_handling_seconds_count",
                          (const char *[]){"grpc_method", "ListProducts", NULL}),
               3);
  cr_assert_eq(prom_value(&ct, "grpc_client_msg_received_total",
                          (const char *[]){"grpc_method", "ListProducts", NULL}),
               3);
  prom_free(&ct);
  free(ctext);
  metrics_registry_destroy(creg);

  prom_text after;
  scrape(port, &after);
  cr_assert_eq(handled(&after, PQ, "ListProducts", "OK"), ok0 + 3);
  cr_assert_eq(handled(&after, PQ, "ListProducts", "InvalidArgument"), 0);
  cr_assert_eq(prom_value(&after, "grpc_server_started_total", lp), started0 + 3);
  cr_assert_eq(prom_value(&after, "grpc_server_msg_sent_total", lp), ok0 + 3);
  cr_assert_eq(prom_value(&after, "grpc_server_handling_seconds_count", lp), count0 + 3);
  cr_assert_eq(prom_value(&after, "grpc_server_handling_seconds_bucket",
                          (const char *[]){"grpc_method", "ListProducts", "le", "+Inf", NULL}),
               count0 + 3);
  cr_assert_eq(handled(&after, PQ, "unknown", "Unimplemented"), (unimpl0 < 0 ? 0 : unimpl0) + 1);
  cr_assert_eq(handled(&after, "unknown", "unknown", "Unimplemented"),
               (unknown0 < 0 ? 0 : unknown0) + 1);
  /* Made-up names never become labels. */
  cr_assert_eq(prom_count(&after, "grpc_server_handled_total",
                          (const char *[]){"grpc_method", "NoSuchMethod", NULL}),
               0);
  cr_assert_eq(prom_value(&after, "shop_ready", NULL), 1);
  prom_free(&before);
  prom_free(&after);
  stop(p);
}

Test(admin_http, a_worker_shows_its_consumer_lag_and_turns_ready) {
  char logp[1024];
  log_file(logp, sizeof logp, "inventory-worker");
  proc *p = stack_start_with("inventory-worker", &(stack_opts){.no_wait = true, .log_path = logp});
  int port = stack_admin_port(p);
  free(wait_ready(port, 200));
  /* The lag of a partition shows once librdkafka knows its high
   * watermark (the first fetch). */
  const char *const g[] = {"group", "inventory-worker", "topic", "shop.order.events.v1", NULL};
  prom_text t = {0};
  WAIT_UNTIL((prom_free(&t), scrape(port, &t), prom_count(&t, "shop_consumer_lag", g) > 0), WAIT_MS,
             "a shop_consumer_lag series of the order topic (%zu samples scraped)", t.n);
  cr_assert_gt(prom_count(&t, "shop_consumer_lag", g), 0);
  cr_assert_geq(prom_value(&t, "shop_consumer_lag", g), 0);
  cr_assert_gt(prom_value(&t, "shop_consumer_assigned_partitions",
                          (const char *[]){"group", "inventory-worker", NULL}),
               0);
  cr_assert_geq(
      prom_value(&t, "shop_outbox_unsent", (const char *[]){"relay", "inventory-worker", NULL}), 0);
  cr_assert_geq(prom_value(&t, "shop_outbox_oldest_unsent_age_seconds", NULL), 0);
  cr_assert_geq(prom_value(&t, "shop_events_consumed_total", NULL), 0);
  cr_assert_eq(prom_count(&t, "grpc_server_handled_total", NULL), 0, "a worker serves no RPC");
  prom_free(&t);
  stop(p);
}

Test(admin_http, readyz_is_503_while_the_consumer_has_no_partitions) {
  char logp[1024], brokers[64];
  log_file(logp, sizeof logp, "inventory-worker");
  /* A broker address where nothing listens: the worker starts, its
   * consumer never joins the group. */
  snprintf(brokers, sizeof brokers, "SHOP_KAFKA__BROKERS=127.0.0.1:%d", proc_free_tcp_port());
  proc *p = stack_start_with(
      "inventory-worker",
      &(stack_opts){.env = (const char *[]){brokers, NULL}, .no_wait = true, .log_path = logp});
  int port = stack_admin_port(p);
  WAIT_UNTIL(http("GET", port, "/livez", NULL) == 200, WAIT_MS, "/livez answering 200 on %d", port);
  char *why = wait_ready(port, 503);
  cr_assert(strstr(why, "consumer inventory-worker: no partitions assigned") != NULL, "%s", why);
  free(why);
  prom_text t;
  scrape(port, &t);
  cr_assert_eq(prom_value(&t, "shop_ready", NULL), 0);
  prom_free(&t);
  stop(p);
}

Test(admin_http, a_taken_admin_port_stops_start_up_with_the_address) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  cr_assert_eq(listen(fd, 1), 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  char port[16], logp[1024];
  snprintf(port, sizeof port, "%d", ntohs(sa.sin_port));
  log_file(logp, sizeof logp, "payment-worker");
  proc *p = stack_start_with(
      "payment-worker", &(stack_opts){.admin_port = atoi(port), .no_wait = true, .log_path = logp});
  WAIT_UNTIL(!proc_alive(p), WAIT_MS, "payment-worker exiting on the taken port %s", port);
  int code = stack_stop(p);
  close(fd);
  cr_assert_eq(code, 1);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%s: Address already in use", port);
  cr_assert(log_has(logp, want), "%s does not say %s", logp, want);
}
