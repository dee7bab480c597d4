/* Golden fixtures: each envelope kind decodes to the expected fields and
 * re-encodes byte for byte. The fixtures are committed files (written once
 * by fixtures/gen_fixtures.c); these tests never write them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "support/file.h"

static uint8_t *load(const char *name, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", RPC_FIXTURES_DIR, name);
  uint8_t *buf = (uint8_t *)test_file_read(path, len);
  cr_assert_not_null(buf, "fixture %s", path);
  return buf;
}

static void assert_same_bytes(const ProtobufCMessage *m, const uint8_t *want, size_t n) {
  size_t got_n = protobuf_c_message_get_packed_size(m);
  cr_assert_eq(got_n, n, "re-encoded size");
  uint8_t *got = malloc(got_n ? got_n : 1);
  protobuf_c_message_pack(m, got);
  cr_assert_eq(memcmp(got, want, n), 0, "re-encoded bytes");
  free(got);
}

Test(rpc_envelope, full_request_round_trips_byte_for_byte) {
  size_t n;
  uint8_t *b = load("request_full.bin", &n);
  Shop__Rpc__V1__RequestEnvelope *e = shop__rpc__v1__request_envelope__unpack(NULL, n, b);
  cr_assert_not_null(e);
  cr_assert_str_eq(e->method, "/shop.testing.v1.EchoService/Echo");
  cr_assert_str_eq(e->request_id, "0123456789abcdef0123456789abcdef");
  cr_assert_eq(e->timeout_ms, 2500);
  cr_assert_str_eq(e->authorization, "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
  cr_assert_str_eq(e->traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  cr_assert_str_eq(e->idempotency_key, "order-42-create");
  cr_assert_eq(e->attempt, 2);
  cr_assert_str_eq(e->caller, "shopctl");
  cr_assert_eq(e->n_metadata, 2);
  cr_assert_str_eq(e->metadata[0]->key, "x-tenant");
  cr_assert_str_eq(e->metadata[1]->value, "shopctl/0.1");
  Shop__Testing__V1__EchoRequest *p =
      shop__testing__v1__echo_request__unpack(NULL, e->payload.len, e->payload.data);
  cr_assert_not_null(p);
  cr_assert_str_eq(p->message, "hello");
  shop__testing__v1__echo_request__free_unpacked(p, NULL);
  assert_same_bytes(&e->base, b, n);
  shop__rpc__v1__request_envelope__free_unpacked(e, NULL);
  free(b);
}

Test(rpc_envelope, minimal_request_round_trips_byte_for_byte) {
  size_t n;
  uint8_t *b = load("request_minimal.bin", &n);
  Shop__Rpc__V1__RequestEnvelope *e = shop__rpc__v1__request_envelope__unpack(NULL, n, b);
  cr_assert_not_null(e);
  cr_assert_str_eq(e->method, "/grpc.health.v1.Health/Check");
  cr_assert_eq(e->timeout_ms, 0, "no budget: the server's default applies");
  cr_assert_eq(e->n_metadata, 0);
  assert_same_bytes(&e->base, b, n);
  shop__rpc__v1__request_envelope__free_unpacked(e, NULL);
  free(b);
}

Test(rpc_envelope, ok_response_round_trips_byte_for_byte) {
  size_t n;
  uint8_t *b = load("response_ok.bin", &n);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, n, b);
  cr_assert_not_null(e);
  cr_assert_str_eq(e->request_id, "0123456789abcdef0123456789abcdef");
  cr_assert_not_null(e->status);
  cr_assert_eq(e->status->code, 0);
  Shop__Testing__V1__EchoResponse *p =
      shop__testing__v1__echo_response__unpack(NULL, e->payload.len, e->payload.data);
  cr_assert_str_eq(p->role, "customer");
  shop__testing__v1__echo_response__free_unpacked(p, NULL);
  assert_same_bytes(&e->base, b, n);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  free(b);
}

Test(rpc_envelope, error_response_with_details_round_trips_byte_for_byte) {
  size_t n;
  uint8_t *b = load("response_error.bin", &n);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, n, b);
  cr_assert_not_null(e);
  cr_assert_eq(e->status->code, STATUS_INVALID_ARGUMENT);
  cr_assert_eq(e->status->n_field_violations, 2);
  cr_assert_str_eq(e->status->field_violations[1]->field, "idempotency_key");
  cr_assert_eq(e->status->retry_info->retry_delay_ms, 50);
  cr_assert_eq(e->payload.len, 0);
  assert_same_bytes(&e->base, b, n);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  free(b);
}

Test(rpc_envelope, projection_response_round_trips_byte_for_byte) {
  size_t n;
  uint8_t *b = load("response_projection.bin", &n);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, n, b);
  cr_assert_not_null(e);
  cr_assert_eq(e->status->code, STATUS_FAILED_PRECONDITION);
  cr_assert_not_null(e->status->projection);
  cr_assert_str_eq(e->status->projection->aggregate_id, "0190c3c2-7a1b-7c3d-8e4f-0123456789ab");
  cr_assert_eq(e->status->projection->version, 3);
  cr_assert_null(e->status->retry_info);
  assert_same_bytes(&e->base, b, n);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  free(b);
}

Test(rpc_envelope, undecodable_response_round_trips_byte_for_byte) {
  size_t n;
  uint8_t *b = load("response_undecodable.bin", &n);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, n, b);
  cr_assert_not_null(e);
  cr_assert_str_eq(e->request_id, "");
  assert_same_bytes(&e->base, b, n);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  free(b);
}

Test(rpc_envelope, server_answers_garbage_with_the_golden_bytes) {
  th_server *srv = th_server_start(&(th_opts){0});
  size_t n;
  uint8_t *want = load("response_undecodable.bin", &n);
  const uint8_t garbage[] = {0x0b, 0xad};
  uint8_t *reply = NULL;
  size_t rn = 0;
  cr_assert_eq(rpc_server_handle_frame(srv->srv, garbage, sizeof garbage, &reply, &rn), STATUS_OK);
  cr_assert_eq(rn, n);
  cr_assert_eq(memcmp(reply, want, n), 0);
  free(reply);
  free(want);
  th_server_stop(srv);
}

Test(rpc_envelope, server_decodes_the_golden_request) {
  th_server *srv = th_server_start(&(th_opts){0});
  size_t n;
  uint8_t *req = load("request_full.bin", &n);
  uint8_t *reply = NULL;
  size_t rn = 0;
  cr_assert_eq(rpc_server_handle_frame(srv->srv, req, n, &reply, &rn), STATUS_OK);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, rn, reply);
  cr_assert_not_null(e);
  cr_assert_str_eq(e->request_id, "0123456789abcdef0123456789abcdef");
  /* The fixture's token is not signed with the test key: Echo is public, so
   * the call runs anonymously. */
  cr_assert_eq(e->status->code, 0, "%s", e->status->message);
  cr_assert_eq(atomic_load(&srv->ctx.last_attempt), 2);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  free(reply);
  free(req);
  th_server_stop(srv);
}
