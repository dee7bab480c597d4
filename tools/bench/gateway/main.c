/* bench-gateway: GetProduct through shop-gateway (HTTP/JSON, keep-alive)
 * against the same RPC called directly on product-query, with 1 and 8
 * callers, on a running stack (SHOP_CONFIG: endpoints, gateway port, the
 * first admin). Logs in as the first admin, creates one product, then
 * measures each path for --seconds. Prints one JSON object:
 *   {"bench":"gateway","seconds":S,"runs":[{"threads":1,
 *     "direct":{"calls":..,"per_s":..,"p50_ms":..,"p99_ms":..},
 *     "gateway":{...},"throughput_ratio":..,"p50_added_ms":..}, ...]}
 *
 *   bench-gateway [--seconds N] */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "rpc/rpc.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

#define MAX_SAMPLES 2000000

typedef struct bench {
  const shop_cfg *cfg;
  rpc_client *query;
  char product_id[64];
  char url[256];
  int seconds;
  bool via_gateway;
  atomic_bool stop;
  atomic_size_t n;
  double *lat_ms;
  atomic_size_t errors;
} bench;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static size_t sink_cb(char *p, size_t sz, size_t n, void *arg) { return sz * n; }

static void record(bench *b, double ms, bool ok) {
  if (!ok) {
    atomic_fetch_add(&b->errors, 1);
    return;
  }
  size_t i = atomic_fetch_add(&b->n, 1);
  if (i < MAX_SAMPLES) b->lat_ms[i] = ms;
}

static void *worker_main(void *arg) {
  bench *b = arg;
  CURL *c = NULL;
  if (b->via_gateway) {
    c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, b->url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_cb);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  }
  Shop__Product__V1__GetProductRequest req = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  req.product_id = b->product_id;
  while (!atomic_load(&b->stop)) {
    double t0 = now_ms();
    bool ok;
    if (c != NULL) {
      long code = 0;
      ok = curl_easy_perform(c) == CURLE_OK &&
           curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
    } else {
      ProtobufCMessage *out = NULL;
      rpc_call_opts o = {.timeout_ms = 5000};
      ok = rpc_client_call_sync(b->query, &shop__product__v1__product_query_service__descriptor,
                                "GetProduct", &req.base, &out, &o, NULL) == STATUS_OK;
      if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
    }
    record(b, now_ms() - t0, ok);
  }
  curl_easy_cleanup(c);
  return NULL;
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct result {
  size_t calls, errors;
  double per_s, p50, p99;
} result;

static result run(bench *b, int threads, bool via_gateway) {
  b->via_gateway = via_gateway;
  atomic_store(&b->stop, false);
  atomic_store(&b->n, 0);
  atomic_store(&b->errors, 0);
  pthread_t t[64];
  double t0 = now_ms();
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker_main, b);
  struct timespec d = {.tv_sec = b->seconds};
  nanosleep(&d, NULL);
  atomic_store(&b->stop, true);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  double secs = (now_ms() - t0) / 1e3;
  result r = {.calls = atomic_load(&b->n), .errors = atomic_load(&b->errors)};
  size_t n = r.calls < MAX_SAMPLES ? r.calls : MAX_SAMPLES;
  qsort(b->lat_ms, n, sizeof *b->lat_ms, cmpd);
  r.per_s = (double)r.calls / secs;
  r.p50 = n ? b->lat_ms[n / 2] : 0;
  r.p99 = n ? b->lat_ms[(size_t)((double)n * 0.99)] : 0;
  return r;
}

static bool setup_product(bench *b, char *err, size_t errlen) {
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, b->cfg, b->cfg->endpoints.user_command, "bench-gateway");
  rpc_client *users = NULL, *products = NULL;
  bool ok = false;
  if (rpc_client_create(&users, &o, err, errlen) != STATUS_OK) return false;
  rpc_client_opts_from_cfg(&o, b->cfg, b->cfg->endpoints.product_command, "bench-gateway");
  if (rpc_client_create(&products, &o, err, errlen) != STATUS_OK) goto out;
  rpc_client_wait_connected(users, 5000);
  rpc_client_wait_connected(products, 5000);
  Shop__User__V1__LoginRequest lr = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  lr.email = b->cfg->auth.admin_email;
  lr.password = b->cfg->auth.admin_password;
  char key[128], sku[64];
  snprintf(key, sizeof key, "bench-gw-login-%ld", (long)time(NULL));
  rpc_call_opts co = {.timeout_ms = 10000, .idempotency_key = key};
  ProtobufCMessage *out = NULL;
  rpc_status st;
  if (rpc_client_call_sync(users, &shop__user__v1__user_command_service__descriptor, "Login",
                           &lr.base, &out, &co, &st) != STATUS_OK) {
    snprintf(err, errlen, "login as %.100s: %.300s", lr.email, st.message);
    goto out;
  }
  Shop__User__V1__LoginResponse *login = (Shop__User__V1__LoginResponse *)out;
  char token[AUTH_TOKEN_MAX];
  snprintf(token, sizeof token, "%s", login->tokens ? login->tokens->access_token : "");
  protobuf_c_message_free_unpacked(out, NULL);
  Shop__Product__V1__CreateProductRequest cp = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  Shop__Product__V1__ProductDetails det = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  snprintf(sku, sizeof sku, "BENCH-GW-%ld", (long)time(NULL));
  det.name = "Benchmark mug";
  det.description = "GetProduct through the gateway and direct";
  det.category = "bench";
  price.units = 999;
  price.currency = b->cfg->catalog.currency;
  cp.sku = sku;
  cp.details = &det;
  cp.price = &price;
  cp.initial_stock = 100;
  snprintf(key, sizeof key, "bench-gw-create-%s", sku);
  co.token = token;
  if (rpc_client_call_sync(products, &shop__product__v1__product_command_service__descriptor,
                           "CreateProduct", &cp.base, &out, &co, &st) != STATUS_OK) {
    snprintf(err, errlen, "create product: %.300s", st.message);
    goto out;
  }
  snprintf(b->product_id, sizeof b->product_id, "%s",
           ((Shop__Product__V1__CreateProductResponse *)out)->product_id);
  protobuf_c_message_free_unpacked(out, NULL);
  /* Readable on the query side before the clock starts. */
  Shop__Common__V1__ConsistencyToken tok = SHOP__COMMON__V1__CONSISTENCY_TOKEN__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  tok.aggregate_id = b->product_id;
  tok.version = 1;
  rc.token = &tok;
  rc.wait_ms = 10000;
  Shop__Product__V1__GetProductRequest gp = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  gp.product_id = b->product_id;
  gp.consistency = &rc;
  rpc_call_opts qo = {.timeout_ms = 15000};
  rpc_client_wait_connected(b->query, 5000);
  if (rpc_client_call_sync(b->query, &shop__product__v1__product_query_service__descriptor,
                           "GetProduct", &gp.base, &out, &qo, &st) != STATUS_OK) {
    snprintf(err, errlen, "product-query never showed %s: %.300s", b->product_id, st.message);
    goto out;
  }
  protobuf_c_message_free_unpacked(out, NULL);
  ok = true;
out:
  rpc_client_destroy(products);
  rpc_client_destroy(users);
  return ok;
}

static void print_result(const char *name, const result *r) {
  printf("\"%s\":{\"calls\":%zu,\"errors\":%zu,\"per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}",
         name, r->calls, r->errors, r->per_s, r->p50, r->p99);
}

int main(int argc, char **argv) {
  bench b = {.seconds = 5};
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0) {
      b.seconds = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: bench-gateway [--seconds N]\n");
      return 2;
    }
  }
  char err[512];
  shop_cfg *cfg = NULL;
  if (config_load(&cfg, getenv("SHOP_CONFIG"), err, sizeof err) != 0) {
    fprintf(stderr, "bench-gateway: %s\n", err);
    return 2;
  }
  b.cfg = cfg;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  b.lat_ms = malloc(MAX_SAMPLES * sizeof *b.lat_ms);
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, cfg, cfg->endpoints.product_query, "bench-gateway");
  int rc = 1;
  if (b.lat_ms == NULL || rpc_client_create(&b.query, &o, err, sizeof err) != STATUS_OK ||
      !setup_product(&b, err, sizeof err)) {
    fprintf(stderr, "bench-gateway: %s\n", b.lat_ms ? err : "out of memory");
    goto out;
  }
  snprintf(b.url, sizeof b.url, "http://%s:%d/v1/products/%s", cfg->gateway.host, cfg->gateway.port,
           b.product_id);
  printf("{\"bench\":\"gateway\",\"seconds\":%d,\"runs\":[", b.seconds);
  const int threads[] = {1, 8};
  for (size_t i = 0; i < 2; i++) {
    result d = run(&b, threads[i], false);
    result g = run(&b, threads[i], true);
    printf("%s{\"threads\":%d,", i ? "," : "", threads[i]);
    print_result("direct", &d);
    printf(",");
    print_result("gateway", &g);
    printf(",\"throughput_ratio\":%.3f,\"p50_added_ms\":%.3f}", d.per_s > 0 ? g.per_s / d.per_s : 0,
           g.p50 - d.p50);
    fflush(stdout);
  }
  printf("]}\n");
  rc = 0;
out:
  rpc_client_destroy(b.query);
  free(b.lat_ms);
  curl_global_cleanup();
  config_free(cfg);
  return rc;
}
