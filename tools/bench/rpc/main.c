/* bench-rpc: the RPC layer against raw NNG, in one run.
 *
 *   bench-rpc [--calls N] [--warmup N] [--payload BYTES] [--workers N] [--rounds N]
 *
 * For concurrency 1 and 16 it measures, over tcp://127.0.0.1 in this
 * process:
 *   raw   a REP server of 16 nng_ctx/aio that echoes each message from its
 *         callback, called by REQ contexts (one per client thread);
 *   full  EchoService/Echo through the whole stack: envelopes, dispatch by
 *         descriptor, the server's and the client's interceptor chains,
 *         worker threads, the generated client stub;
 * with the same payload (128 B) and prints calls/s, p50 and p99, and the
 * ratios full/raw. The machines are shared and noisy, so raw and full run
 * alternately for a few rounds and the medians are reported. Build it
 * optimized:
 *   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSHOP_TESTS=OFF
 *   cmake --build build-release --target bench-rpc && build-release/bin/bench-rpc */
#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log.h"
#include "rpc/rpc.h"
#include "shop/testing/v1/echo.pb-c.h"

#define MAX_CONC 16
#define RAW_CTXS 16

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "bench-rpc: %s: %s\n", what, why);
  exit(1);
}

/* ---- raw NNG echo server ------------------------------------------------------ */

typedef struct raw_slot {
  nng_ctx ctx;
  nng_aio *aio;
  int sending;
} raw_slot;

static void raw_cb(void *arg) {
  raw_slot *s = arg;
  if (nng_aio_result(s->aio) != 0) {
    if (s->sending) nng_msg_free(nng_aio_get_msg(s->aio));
    return; /* closed */
  }
  if (s->sending) {
    s->sending = 0;
    nng_ctx_recv(s->ctx, s->aio);
  } else {
    s->sending = 1;
    nng_ctx_send(s->ctx, s->aio); /* the received message goes back */
  }
}

/* ---- the Echo service ---------------------------------------------------------- */

static void bench_echo(Shop__Testing__V1__EchoService_Service *svc,
                       const Shop__Testing__V1__EchoRequest *in,
                       Shop__Testing__V1__EchoResponse_Closure closure, void *data) {
  Shop__Testing__V1__EchoResponse r = SHOP__TESTING__V1__ECHO_RESPONSE__INIT;
  r.message = in->message;
  r.blob = in->blob;
  closure(&r, data);
}
static void bench_sleep(Shop__Testing__V1__EchoService_Service *svc,
                        const Shop__Testing__V1__SleepRequest *in,
                        Shop__Testing__V1__SleepResponse_Closure closure, void *data) {
  rpc_call_set_status(data, STATUS_UNIMPLEMENTED, NULL);
}
static void bench_command(Shop__Testing__V1__EchoService_Service *svc,
                          const Shop__Testing__V1__CommandRequest *in,
                          Shop__Testing__V1__CommandResponse_Closure closure, void *data) {
  rpc_call_set_status(data, STATUS_UNIMPLEMENTED, NULL);
}

/* ---- clients ---------------------------------------------------------------------- */

typedef struct runner {
  int full;
  nng_socket raw_sock;
  ProtobufCService *stub;
  int calls;
  int warmup;
  size_t payload;
  int64_t *lat_ns;
  int errors;
  pthread_t t;
} runner;

static void echo_done(const Shop__Testing__V1__EchoResponse *r, void *data) {
  rpc_client_call *cc = data;
  runner *ru = cc->user;
  if (r == NULL || r->blob.len != ru->payload) ru->errors++;
}

static void *run(void *arg) {
  runner *ru = arg;
  uint8_t *payload = malloc(ru->payload);
  for (size_t i = 0; i < ru->payload; i++) payload[i] = (uint8_t)(i * 131 + 7);
  nng_ctx ctx;
  nng_aio *aio = NULL;
  if (!ru->full) {
    if (nng_ctx_open(&ctx, ru->raw_sock) != 0 || nng_aio_alloc(&aio, NULL, NULL) != 0)
      die("raw client", "ctx");
    nng_aio_set_timeout(aio, 10000);
  }
  Shop__Testing__V1__EchoRequest req = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  req.message = "bench";
  req.blob.data = payload;
  req.blob.len = ru->payload;
  rpc_call_opts opts = {.timeout_ms = 10000};
  for (int i = -ru->warmup; i < ru->calls; i++) {
    int64_t t0 = now_ns();
    if (ru->full) {
      rpc_client_call cc = {.opts = &opts, .user = ru};
      shop__testing__v1__echo_service__echo(ru->stub, &req, echo_done, &cc);
      if (cc.status.code != STATUS_OK) ru->errors++;
    } else {
      nng_msg *m;
      nng_msg_alloc(&m, 0);
      nng_msg_append(m, payload, ru->payload);
      nng_aio_set_msg(aio, m);
      nng_ctx_send(ctx, aio);
      nng_aio_wait(aio);
      if (nng_aio_result(aio) != 0) {
        nng_msg_free(m);
        ru->errors++;
        continue;
      }
      nng_ctx_recv(ctx, aio);
      nng_aio_wait(aio);
      if (nng_aio_result(aio) != 0) {
        ru->errors++;
      } else {
        m = nng_aio_get_msg(aio);
        if (nng_msg_len(m) != ru->payload) ru->errors++;
        nng_msg_free(m);
      }
    }
    if (i >= 0) ru->lat_ns[i] = now_ns() - t0;
  }
  if (aio != NULL) {
    nng_aio_free(aio);
    nng_ctx_close(ctx);
  }
  free(payload);
  return NULL;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct result {
  double calls_s;
  double p50_us;
  double p99_us;
  int errors;
} result;

static result measure(int full, nng_socket raw, rpc_client *cli, int conc, int calls, int warmup,
                      size_t payload) {
  runner r[MAX_CONC];
  int per = calls / conc;
  int64_t *all = malloc(sizeof(int64_t) * (size_t)per * (size_t)conc);
  char err[256];
  for (int i = 0; i < conc; i++) {
    r[i] = (runner){.full = full,
                    .raw_sock = raw,
                    .calls = per,
                    .warmup = warmup,
                    .payload = payload,
                    .lat_ns = all + (size_t)i * (size_t)per};
    if (full && rpc_stub_create(&r[i].stub, cli, &shop__testing__v1__echo_service__descriptor, err,
                                sizeof err) != STATUS_OK)
      die("stub", err);
  }
  /* Warm-up calls are inside each runner, before its timed calls; the
   * clock for throughput starts when all runners start. */
  int64_t t0 = now_ns();
  for (int i = 0; i < conc; i++) pthread_create(&r[i].t, NULL, run, &r[i]);
  for (int i = 0; i < conc; i++) pthread_join(r[i].t, NULL);
  int64_t wall = now_ns() - t0;
  result res = {0};
  int64_t sum = 0;
  for (int i = 0; i < conc; i++) {
    res.errors += r[i].errors;
    rpc_stub_destroy(r[i].stub);
  }
  size_t n = (size_t)per * (size_t)conc;
  for (size_t i = 0; i < n; i++) sum += all[i];
  qsort(all, n, sizeof *all, cmp64);
  /* Throughput from the timed calls: total calls over the wall time they
   * took, the warm-up share removed in proportion. */
  double frac = (double)per / (double)(per + warmup);
  res.calls_s = (double)n / ((double)wall * frac / 1e9);
  res.p50_us = (double)all[n / 2] / 1000.0;
  res.p99_us = (double)all[(size_t)((double)n * 0.99)] / 1000.0;
  (void)sum;
  free(all);
  return res;
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of each figure on its own. */
static result median(const result *r, int n) {
  double v[3][15];
  for (int i = 0; i < n; i++) {
    v[0][i] = r[i].calls_s;
    v[1][i] = r[i].p50_us;
    v[2][i] = r[i].p99_us;
  }
  for (int k = 0; k < 3; k++) qsort(v[k], (size_t)n, sizeof(double), cmpd);
  return (result){.calls_s = v[0][n / 2], .p50_us = v[1][n / 2], .p99_us = v[2][n / 2]};
}

int main(int argc, char **argv) {
  int calls = 20000, warmup = 1000, workers = 16, rounds = 3;
  size_t payload = 128;
  const char *json_path = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--json") == 0)
      json_path = argv[i + 1];
    else if (strcmp(argv[i], "--calls") == 0)
      calls = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--warmup") == 0)
      warmup = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--payload") == 0)
      payload = (size_t)atol(argv[i + 1]);
    else if (strcmp(argv[i], "--workers") == 0)
      workers = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--rounds") == 0)
      rounds = atoi(argv[i + 1]);
    else
      die("usage",
          "bench-rpc [--calls N] [--warmup N] [--payload BYTES] [--workers N] [--rounds N]"
          " [--json FILE]");
  }
  if (rounds < 1 || rounds > 15 || calls < 100) die("usage", "--rounds 1..15, --calls >= 100");
  log_setup("bench-rpc", LOG_LEVEL_WARN, NULL);
  char err[256];

  /* Raw server. */
  nng_socket rep, req;
  raw_slot slots[RAW_CTXS];
  if (nng_rep0_open(&rep) != 0) die("raw", "rep0_open");
  nng_listener l;
  if (nng_listen(rep, "tcp://127.0.0.1:0", &l, 0) != 0) die("raw", "listen");
  int raw_port = 0;
  nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &raw_port);
  for (int i = 0; i < RAW_CTXS; i++) {
    slots[i].sending = 0;
    if (nng_aio_alloc(&slots[i].aio, raw_cb, &slots[i]) != 0 ||
        nng_ctx_open(&slots[i].ctx, rep) != 0)
      die("raw", "ctx");
    nng_ctx_recv(slots[i].ctx, slots[i].aio);
  }
  char raw_url[64];
  snprintf(raw_url, sizeof raw_url, "tcp://127.0.0.1:%d", raw_port);
  if (nng_req0_open(&req) != 0 || nng_dial(req, raw_url, NULL, 0) != 0) die("raw", "dial");

  /* Full stack. */
  static Shop__Testing__V1__EchoService_Service svc = SHOP__TESTING__V1__ECHO_SERVICE__INIT(bench_);
  rpc_server_opts so = {.name = "bench-rpc",
                        .workers = workers,
                        .queue_size = 1024,
                        .max_message_bytes = 4 << 20,
                        .default_timeout_ms = 5000,
                        .max_timeout_ms = 60000,
                        .drain_grace_ms = 1000};
  rpc_service_opts svo = {.default_policy = RPC_PUBLIC};
  rpc_server *srv = NULL;
  if (rpc_server_create(&srv, &so, err, sizeof err) != STATUS_OK ||
      rpc_server_register(srv, &svc.base, &svo, err, sizeof err) != STATUS_OK ||
      rpc_server_listen(srv, "tcp://127.0.0.1:0", err, sizeof err) != STATUS_OK ||
      rpc_server_start(srv, err, sizeof err) != STATUS_OK)
    die("server", err);
  char url[64];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", rpc_server_port(srv));
  rpc_client_opts co = {.url = url,
                        .caller = "bench-rpc",
                        .max_message_bytes = 4 << 20,
                        .default_timeout_ms = 10000,
                        .max_timeout_ms = 60000,
                        .retry_max = 3,
                        .retry_backoff_ms = 10};
  rpc_client *cli = NULL;
  if (rpc_client_create(&cli, &co, err, sizeof err) != STATUS_OK) die("client", err);
  if (!rpc_client_wait_connected(cli, 5000)) die("client", "not connected");

  printf(
      "bench-rpc: %d calls per run (+%d warm-up per client), payload %zu B, tcp loopback, "
      "%d server workers, median of %d alternating rounds\n\n",
      calls, warmup, payload, workers, rounds);
  printf("%-6s %-5s %12s %10s %10s\n", "stack", "conc", "calls/s", "p50 us", "p99 us");
  const int concs[] = {1, 16};
  int failed = 0;
  FILE *js = json_path != NULL ? fopen(json_path, "w") : NULL;
  if (json_path != NULL && js == NULL) die(json_path, strerror(errno));
  if (js != NULL)
    fprintf(js, "{\"calls\": %d, \"payload_bytes\": %zu, \"runs\": [", calls, payload);
  for (size_t k = 0; k < 2; k++) {
    int c = concs[k];
    result raw[15], full[15];
    for (int r = 0; r < rounds; r++) {
      raw[r] = measure(0, req, NULL, c, calls, warmup, payload);
      full[r] = measure(1, req, cli, c, calls, warmup, payload);
      if (raw[r].errors || full[r].errors) {
        fprintf(stderr, "bench-rpc: errors: raw %d, full %d\n", raw[r].errors, full[r].errors);
        failed = 1;
      }
    }
    result rm = median(raw, rounds), fm = median(full, rounds);
    printf("%-6s %-5d %12.0f %10.1f %10.1f\n", "raw", c, rm.calls_s, rm.p50_us, rm.p99_us);
    printf("%-6s %-5d %12.0f %10.1f %10.1f\n", "full", c, fm.calls_s, fm.p50_us, fm.p99_us);
    printf("%-6s %-5d %11.2fx %9.2fx %9.2fx   (aim: throughput >= 0.75x, p50 <= 1.3x)\n\n", "ratio",
           c, fm.calls_s / rm.calls_s, fm.p50_us / rm.p50_us, fm.p99_us / rm.p99_us);
    if (js != NULL)
      fprintf(js,
              "%s{\"concurrency\": %d, \"raw\": {\"calls_per_s\": %.1f, \"p50_us\": %.1f,"
              " \"p99_us\": %.1f}, \"full\": {\"calls_per_s\": %.1f, \"p50_us\": %.1f,"
              " \"p99_us\": %.1f}, \"throughput_ratio\": %.4f}",
              k > 0 ? ", " : "", c, rm.calls_s, rm.p50_us, rm.p99_us, fm.calls_s, fm.p50_us,
              fm.p99_us, fm.calls_s / rm.calls_s);
  }
  if (js != NULL) {
    fprintf(js, "], \"errors\": %s}\n", failed ? "true" : "false");
    fclose(js);
  }
  rpc_client_destroy(cli);
  rpc_server_destroy(srv);
  nng_close(req);
  nng_close(rep);
  for (int i = 0; i < RAW_CTXS; i++) nng_aio_free(slots[i].aio);
  return failed;
}
