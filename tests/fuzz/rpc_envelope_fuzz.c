/* libFuzzer target for the server's decode path: a request frame goes
 * through rpc_server_handle_frame (envelope decode, interceptors with token
 * verification, method lookup, payload decode, handler, reply encode)
 * exactly as a worker runs it, without a socket.
 *
 * Input: a frame as it arrives on the wire, or, when the first byte is
 * below 0x08 (never a valid first tag), a typed payload wrapped by the
 * harness in an envelope for method data[0] % N, so that mutations reach the
 * payload decoders and handlers as well.
 *
 * Invariants checked on every input (abort on violation): a reply is
 * always produced, it decodes as a ResponseEnvelope, its status code is a
 * canonical one, and a non-OK reply carries no payload. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "rpc/rpc.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/testing/v1/echo.pb-c.h"

#define FUZZ_KEY "fuzz-signing-key-0123456789abcdefghij"
#define FUZZ_ISSUER "shop-fuzz"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_echo(Shop__Testing__V1__EchoService_Service *svc,
                    const Shop__Testing__V1__EchoRequest *in,
                    Shop__Testing__V1__EchoResponse_Closure closure, void *data) {
  rpc_call *call = data;
  if (in->message[0] == '\0') {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "message is required");
    rpc_call_add_field_violation(call, "message", "must not be empty");
    return;
  }
  if (strcmp(in->message, "no-reply") == 0) return;
  Shop__Testing__V1__EchoResponse r = SHOP__TESTING__V1__ECHO_RESPONSE__INIT;
  r.message = in->message;
  r.blob = in->blob;
  r.user_id = (char *)rpc_call_user_id(call);
  r.role = (char *)auth_role_name(rpc_call_role(call));
  const char *md = rpc_call_metadata(call, "x-echo");
  if (md != NULL) r.message = (char *)md;
  closure(&r, data);
}

static void fz_sleep(Shop__Testing__V1__EchoService_Service *svc,
                     const Shop__Testing__V1__SleepRequest *in,
                     Shop__Testing__V1__SleepResponse_Closure closure, void *data) {
  /* Never sleeps: the fuzzer wants throughput. */
  Shop__Testing__V1__SleepResponse r = SHOP__TESTING__V1__SLEEP_RESPONSE__INIT;
  r.slept_ms = in->duration_ms;
  closure(&r, data);
}

static void fz_command(Shop__Testing__V1__EchoService_Service *svc,
                       const Shop__Testing__V1__CommandRequest *in,
                       Shop__Testing__V1__CommandResponse_Closure closure, void *data) {
  Shop__Testing__V1__CommandResponse r = SHOP__TESTING__V1__COMMAND_RESPONSE__INIT;
  r.name = in->name;
  r.executions = in->amount;
  closure(&r, data);
}

static Shop__Testing__V1__EchoService_Service fz_svc = SHOP__TESTING__V1__ECHO_SERVICE__INIT(fz_);
static const rpc_method_policy fz_policies[] = {
    {"Echo", RPC_PUBLIC},
    {"Sleep", RPC_ADMIN},
    {"Command", RPC_AUTHENTICATED | RPC_COMMAND},
};
static rpc_server *fz_server;
static auth_keys *fz_keys;

static const char *const fz_methods[] = {
    "/shop.testing.v1.EchoService/Echo",    "/shop.testing.v1.EchoService/Sleep",
    "/shop.testing.v1.EchoService/Command", "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",         "/shop.rpc.v1.ServerReflectionService/GetDescriptorSet",
    "/shop.testing.v1.EchoService/Missing",
};

/* RPC_FUZZ_STATS=1 prints the replies by status code at exit, to see
 * which paths a corpus reaches. */
static void print_stats(void) {
  rpc_server_stats st;
  rpc_server_stats_get(fz_server, &st);
  for (int i = 0; i < 17; i++)
    if (st.by_code[i] > 0)
      fprintf(stderr, "%-20s %llu\n", status_name(i), (unsigned long long)st.by_code[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (getenv("RPC_FUZZ_STATS") != NULL) atexit(print_stats);
  /* The harness's INTERNAL answers are logged at error level; keep the
   * fuzzer's output readable. */
  FILE *devnull = fopen("/dev/null", "w");
  log_setup("rpc-fuzz", LOG_LEVEL_ERROR, devnull != NULL ? devnull : stderr);
  char err[256];
  if (auth_keys_create(&fz_keys, FUZZ_KEY, strlen(FUZZ_KEY), FUZZ_ISSUER, 3600, err, sizeof err) !=
      STATUS_OK)
    abort();
  rpc_server_opts so = {.name = "rpc-fuzz",
                        .workers = 1,
                        .queue_size = 1,
                        .max_message_bytes = 1 << 20,
                        .default_timeout_ms = 5000,
                        .max_timeout_ms = 60000,
                        .drain_grace_ms = 0,
                        .auth = fz_keys};
  rpc_service_opts svo = {.default_policy = RPC_AUTHENTICATED,
                          .policies = fz_policies,
                          .n_policies = sizeof fz_policies / sizeof fz_policies[0]};
  if (rpc_server_create(&fz_server, &so, err, sizeof err) != STATUS_OK ||
      rpc_server_register(fz_server, &fz_svc.base, &svo, err, sizeof err) != STATUS_OK) {
    fprintf(stderr, "fuzz init: %s\n", err);
    abort();
  }
  return 0;
}

static void check_reply(const uint8_t *reply, size_t len) {
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, len, reply);
  if (e == NULL) abort();
  int code = e->status != NULL ? e->status->code : 0;
  if (!status_is_valid(code)) abort();
  if (code != 0 && e->payload.len != 0) abort();
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *frame = NULL;
  const uint8_t *in = data;
  size_t in_len = size;
  if (size > 0 && data[0] < 0x08) {
    Shop__Rpc__V1__RequestEnvelope env = SHOP__RPC__V1__REQUEST_ENVELOPE__INIT;
    env.method = (char *)fz_methods[data[0] % (sizeof fz_methods / sizeof fz_methods[0])];
    env.request_id = "fuzz";
    env.idempotency_key = (data[0] & 4) ? "fuzz-key" : "";
    env.payload.data = (uint8_t *)data + 1;
    env.payload.len = size - 1;
    in_len = shop__rpc__v1__request_envelope__get_packed_size(&env);
    frame = malloc(in_len);
    if (frame == NULL) return 0;
    shop__rpc__v1__request_envelope__pack(&env, frame);
    in = frame;
  }
  uint8_t *reply = NULL;
  size_t reply_len = 0;
  if (rpc_server_handle_frame(fz_server, in, in_len, &reply, &reply_len) != STATUS_OK) abort();
  check_reply(reply, reply_len);
  free(reply);
  free(frame);
  return 0;
}
