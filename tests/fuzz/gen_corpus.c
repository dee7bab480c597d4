/* Writes the seed corpus of rpc_envelope_fuzz into DIR. Run by hand once
 * (the seeds are committed):  build/tests/rpc_gen_corpus tests/fuzz/corpus/rpc_envelope */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "grpc/health/v1/health.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/testing/v1/echo.pb-c.h"

#define FUZZ_KEY "fuzz-signing-key-0123456789abcdefghij"
#define FUZZ_ISSUER "shop-fuzz"

static const char *dir;

static void write_bytes(const char *name, const uint8_t *buf, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(buf, 1, n, f) != n) {
    perror(path);
    exit(1);
  }
  fclose(f);
}

static void write_msg(const char *name, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  protobuf_c_message_pack(m, buf);
  write_bytes(name, buf, n);
  free(buf);
}

static void envelope(const char *name, const char *method, const ProtobufCMessage *payload,
                     const char *auth, const char *key, int64_t timeout_ms) {
  uint8_t pb[512];
  size_t pn = payload ? protobuf_c_message_pack(payload, pb) : 0;
  Shop__Rpc__V1__RequestEnvelope__MetadataEntry md =
      SHOP__RPC__V1__REQUEST_ENVELOPE__METADATA_ENTRY__INIT;
  md.key = "x-echo";
  md.value = "from-metadata";
  Shop__Rpc__V1__RequestEnvelope__MetadataEntry *mdp[] = {&md};
  Shop__Rpc__V1__RequestEnvelope e = SHOP__RPC__V1__REQUEST_ENVELOPE__INIT;
  e.method = (char *)method;
  e.request_id = "seed";
  e.timeout_ms = timeout_ms;
  e.authorization = (char *)auth;
  e.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  e.idempotency_key = (char *)key;
  e.attempt = 1;
  e.caller = "fuzz";
  e.n_metadata = strcmp(name, "echo_metadata") == 0 ? 1 : 0;
  e.metadata = mdp;
  e.payload.data = pb;
  e.payload.len = pn;
  write_msg(name, &e.base);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  auth_keys *k = NULL;
  char err[256], tok[AUTH_TOKEN_MAX], bearer[AUTH_TOKEN_MAX + 8], admin[AUTH_TOKEN_MAX + 8];
  /* The seeds' tokens must stay valid for as long as the corpus is used:
   * they live for 60 years. */
  if (auth_keys_create(&k, FUZZ_KEY, strlen(FUZZ_KEY), FUZZ_ISSUER, 60 * 365 * 86400, err,
                       sizeof err) != 0)
    return 1;
  auth_token_sign(k, "user-1", AUTH_ROLE_CUSTOMER, 0, tok, sizeof tok, err, sizeof err);
  snprintf(bearer, sizeof bearer, "Bearer %s", tok);
  auth_token_sign(k, "admin-1", AUTH_ROLE_ADMIN, 0, tok, sizeof tok, err, sizeof err);
  snprintf(admin, sizeof admin, "Bearer %s", tok);
  auth_keys_destroy(k);

  Shop__Testing__V1__EchoRequest echo = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  echo.message = "hello";
  Shop__Testing__V1__SleepRequest sleep = SHOP__TESTING__V1__SLEEP_REQUEST__INIT;
  sleep.duration_ms = 5;
  Shop__Testing__V1__CommandRequest cmd = SHOP__TESTING__V1__COMMAND_REQUEST__INIT;
  cmd.name = "c";
  cmd.amount = 3;
  Grpc__Health__V1__HealthCheckRequest hc = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  hc.service = "shop.testing.v1.EchoService";

  envelope("echo", "/shop.testing.v1.EchoService/Echo", &echo.base, "", "", 1000);
  envelope("echo_metadata", "/shop.testing.v1.EchoService/Echo", &echo.base, bearer, "", 0);
  envelope("sleep_admin", "/shop.testing.v1.EchoService/Sleep", &sleep.base, admin, "", 1000);
  envelope("sleep_customer", "/shop.testing.v1.EchoService/Sleep", &sleep.base, bearer, "", 1000);
  envelope("command", "/shop.testing.v1.EchoService/Command", &cmd.base, bearer, "key-1", 1000);
  envelope("command_nokey", "/shop.testing.v1.EchoService/Command", &cmd.base, bearer, "", 1000);
  envelope("health", "/grpc.health.v1.Health/Check", &hc.base, "", "", 0);
  envelope("reflection", "/shop.rpc.v1.ServerReflectionService/GetDescriptorSet", NULL, "", "", 0);
  envelope("late", "/shop.testing.v1.EchoService/Echo", &echo.base, "", "", -1);
  envelope("alg_none", "/shop.testing.v1.EchoService/Sleep", &sleep.base,
           "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJyb290Iiwicm9sZSI6ImFkbWluIn0.",
           "", 1000);
  /* Wrapped payloads (first byte below 0x08 selects the method). */
  uint8_t w[256];
  w[0] = 0;
  size_t n = shop__testing__v1__echo_request__pack(&echo, w + 1);
  write_bytes("wrapped_echo", w, n + 1);
  w[0] = 6;
  n = shop__testing__v1__command_request__pack(&cmd, w + 1);
  write_bytes("wrapped_command", w, n + 1);
  write_bytes("garbage", (const uint8_t *)"\xff\xff\xff\x0f\x01", 5);
  return 0;
}
