/* The generated client against a real server, over inproc:// and tcp://,
 * and every bad input of issue 3 with its status (the server keeps
 * serving afterwards). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "log/log.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "support/wait.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

static th_server *srv;
static rpc_client *cli;

static void up_inproc(void) {
  srv = th_server_start(&(th_opts){0});
  cli = th_client(srv->url, 0, 0);
  cr_assert(rpc_client_wait_connected(cli, 5000));
}

static void down(void) {
  rpc_client_destroy(cli);
  th_server_stop(srv);
  cli = NULL;
  srv = NULL;
}

/* The server still answers a good call. */
static void assert_still_serving(void) {
  char got[64];
  rpc_status st;
  cr_assert_eq(th_echo(cli, "still here", NULL, got, sizeof got, &st), STATUS_OK, "%s", st.message);
  cr_assert_str_eq(got, "still here");
}

static Shop__Rpc__V1__ResponseEnvelope *raw(const void *frame, size_t len) {
  void *reply = NULL;
  size_t n = 0;
  int rv = th_raw_exchange(srv->url, frame, len, &reply, &n, 5000);
  cr_assert_eq(rv, 0, "raw exchange: %d", rv);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, n, reply);
  free(reply);
  cr_assert_not_null(e, "the reply is a ResponseEnvelope");
  return e;
}

static int code_of(const Shop__Rpc__V1__ResponseEnvelope *e) {
  return e->status != NULL ? e->status->code : 0;
}

/* ---- happy paths ------------------------------------------------------------------ */

Test(rpc_calls, generated_client_echoes_over_inproc, .init = up_inproc, .fini = down) {
  char got[64];
  rpc_status st;
  cr_assert_eq(th_echo(cli, "hello", NULL, got, sizeof got, &st), STATUS_OK, "%s", st.message);
  cr_assert_str_eq(got, "hello");
}

Test(rpc_calls, generated_client_echoes_over_tcp) {
  srv = th_server_start(&(th_opts){.url = "tcp://127.0.0.1:0"});
  cr_assert_gt(rpc_server_port(srv->srv), 0);
  cli = th_client(srv->url, 0, 3);
  char got[64];
  rpc_status st;
  cr_assert_eq(th_echo(cli, "over tcp", NULL, got, sizeof got, &st), STATUS_OK, "%s", st.message);
  cr_assert_str_eq(got, "over tcp");
  down();
}

Test(rpc_calls, sync_helper_returns_the_typed_reply, .init = up_inproc, .fini = down) {
  Shop__Testing__V1__EchoRequest req = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  req.message = "sync";
  uint8_t blob[3] = {1, 2, 3};
  req.blob.data = blob;
  req.blob.len = 3;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  cr_assert_eq(rpc_client_call_sync(cli, &shop__testing__v1__echo_service__descriptor, "Echo",
                                    &req.base, &out, NULL, &st),
               STATUS_OK, "%s", st.message);
  Shop__Testing__V1__EchoResponse *r = (Shop__Testing__V1__EchoResponse *)out;
  cr_assert_str_eq(r->message, "sync");
  cr_assert_eq(r->blob.len, 3);
  cr_assert_eq(r->blob.data[2], 3);
  protobuf_c_message_free_unpacked(out, NULL);
}

/* A call that comes without a valid traceparent (a client in another
 * language may send none) gets a trace the server starts: on the call,
 * in its log scope (so on its log lines and the events it appends), a new
 * one for each call. */
Test(rpc_calls, a_call_without_a_traceparent_gets_one_the_server_starts, .init = up_inproc,
     .fini = down) {
  Shop__Testing__V1__EchoRequest req = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  req.message = "untraced";
  uint8_t payload[64];
  size_t plen = shop__testing__v1__echo_request__pack(&req, payload);
  char first[LOG_TRACE_ID_SIZE] = "";
  for (int i = 0; i < 2; i++) {
    uint8_t *frame = NULL;
    size_t len = th_pack_envelope("/shop.testing.v1.EchoService/Echo", "req-untraced", 5000,
                                  payload, plen, &frame);
    Shop__Rpc__V1__ResponseEnvelope *e = raw(frame, len);
    free(frame);
    cr_assert_eq(code_of(e), STATUS_OK);
    shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
    char trace[LOG_TRACE_ID_SIZE];
    cr_assert(log_trace_id(srv->ctx.last_traceparent, trace), "not a W3C traceparent: '%s'",
              srv->ctx.last_traceparent);
    cr_assert_str_eq(trace, srv->ctx.last_trace, "the call's trace id is its traceparent's");
    cr_assert_str_eq(srv->ctx.scope_traceparent, srv->ctx.last_traceparent,
                     "the handler's log scope carries it");
    cr_assert_str_eq(srv->ctx.last_traceparent + 53, "01", "sampled");
    if (i == 0)
      snprintf(first, sizeof first, "%s", trace);
    else
      cr_assert_str_neq(trace, first, "each call starts its own trace");
  }
}

Test(rpc_calls, metadata_and_trace_reach_the_handler, .init = up_inproc, .fini = down) {
  const char *md[] = {"x-test", "42"};
  rpc_call_opts o = {.metadata = md, .n_metadata = 1};
  cr_assert_eq(th_echo(cli, "md", &o, NULL, 0, NULL), STATUS_OK);
  cr_assert_str_eq(srv->ctx.last_metadata, "42");
  cr_assert_eq(strlen(srv->ctx.last_trace), 32, "a trace id was made up: '%s'",
               srv->ctx.last_trace);
  cr_assert_eq(atomic_load(&srv->ctx.last_attempt), 1);
}

Test(rpc_calls, health_check_reports_serving, .init = up_inproc, .fini = down) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  const char *names[] = {"", "shop.testing.v1.EchoService", "grpc.health.v1.Health"};
  for (size_t i = 0; i < 3; i++) {
    req.service = (char *)names[i];
    ProtobufCMessage *out = NULL;
    cr_assert_eq(rpc_client_call_sync(cli, &grpc__health__v1__health__descriptor, "Check",
                                      &req.base, &out, NULL, NULL),
                 STATUS_OK);
    cr_assert_eq(((Grpc__Health__V1__HealthCheckResponse *)out)->status,
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(out, NULL);
  }
}

Test(rpc_calls, health_check_of_an_unknown_service_is_not_found, .init = up_inproc, .fini = down) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = "shop.nope.v1.NopeService";
  ProtobufCMessage *out = NULL;
  cr_assert_eq(rpc_client_call_sync(cli, &grpc__health__v1__health__descriptor, "Check", &req.base,
                                    &out, NULL, NULL),
               STATUS_NOT_FOUND);
  cr_assert_null(out);
}

Test(rpc_calls, health_watch_is_unimplemented, .init = up_inproc, .fini = down) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  cr_assert_eq(rpc_client_call_sync(cli, &grpc__health__v1__health__descriptor, "Watch", &req.base,
                                    &out, NULL, NULL),
               STATUS_UNIMPLEMENTED);
}

Test(rpc_calls, reflection_returns_the_descriptor_set_and_services, .init = up_inproc,
     .fini = down) {
  Shop__Rpc__V1__GetDescriptorSetRequest req = SHOP__RPC__V1__GET_DESCRIPTOR_SET_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  cr_assert_eq(rpc_client_call_sync(cli, &shop__rpc__v1__server_reflection_service__descriptor,
                                    "GetDescriptorSet", &req.base, &out, NULL, NULL),
               STATUS_OK);
  Shop__Rpc__V1__GetDescriptorSetResponse *r = (Shop__Rpc__V1__GetDescriptorSetResponse *)out;
  cr_assert_eq(r->file_descriptor_set.len, shop_descriptor_set_len);
  cr_assert_eq(memcmp(r->file_descriptor_set.data, shop_descriptor_set, shop_descriptor_set_len),
               0);
  bool echo = false, health = false, refl = false;
  for (size_t i = 0; i < r->n_services; i++) {
    echo |= strcmp(r->services[i], "shop.testing.v1.EchoService") == 0;
    health |= strcmp(r->services[i], "grpc.health.v1.Health") == 0;
    refl |= strcmp(r->services[i], "shop.rpc.v1.ServerReflectionService") == 0;
  }
  cr_assert(echo && health && refl);
  protobuf_c_message_free_unpacked(out, NULL);
}

/* ---- bad input ------------------------------------------------------------------------ */

Test(rpc_bad_input, garbage_bytes_get_invalid_argument_without_request_id, .init = up_inproc,
     .fini = down) {
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02, 0x03, 0x99};
  Shop__Rpc__V1__ResponseEnvelope *e = raw(garbage, sizeof garbage);
  cr_assert_eq(code_of(e), STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(e->request_id, "");
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  assert_still_serving();
}

Test(rpc_bad_input, truncated_envelope_gets_invalid_argument, .init = up_inproc, .fini = down) {
  uint8_t *frame = NULL;
  size_t n = th_pack_envelope("/shop.testing.v1.EchoService/Echo", "req-trunc", 1000, "\x0a\x02hi",
                              4, &frame);
  Shop__Rpc__V1__ResponseEnvelope *e = raw(frame, n - 3);
  free(frame);
  cr_assert_eq(code_of(e), STATUS_INVALID_ARGUMENT);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  assert_still_serving();
}

Test(rpc_bad_input, empty_frame_gets_unimplemented_for_the_empty_method, .init = up_inproc,
     .fini = down) {
  /* Zero bytes decode as an envelope with every field empty. */
  Shop__Rpc__V1__ResponseEnvelope *e = raw("", 0);
  cr_assert_eq(code_of(e), STATUS_UNIMPLEMENTED);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  assert_still_serving();
}

Test(rpc_bad_input, unknown_method_gets_unimplemented, .init = up_inproc, .fini = down) {
  const char *paths[] = {"/shop.testing.v1.EchoService/Nope", "/shop.nope.v1.NopeService/Echo",
                         "not a path", "/shop.testing.v1.EchoService/Echo/extra"};
  for (size_t i = 0; i < 4; i++) {
    uint8_t *resp = NULL;
    size_t n = 0;
    rpc_status st;
    cr_assert_eq(rpc_client_call_raw(cli, paths[i], "", 0, &resp, &n, NULL, &st),
                 STATUS_UNIMPLEMENTED, "%s", paths[i]);
    cr_assert_null(resp);
  }
  assert_still_serving();
}

Test(rpc_bad_input, undecodable_payload_gets_invalid_argument, .init = up_inproc, .fini = down) {
  const uint8_t bad[] = {0x0a, 0x7f, 'x'}; /* field 1, length 127, one byte */
  uint8_t *resp = NULL;
  size_t n = 0;
  rpc_status st;
  cr_assert_eq(rpc_client_call_raw(cli, "/shop.testing.v1.EchoService/Echo", bad, sizeof bad, &resp,
                                   &n, NULL, &st),
               STATUS_INVALID_ARGUMENT);
  cr_assert(strstr(st.message, "shop.testing.v1.EchoRequest") != NULL, "%s", st.message);
  cr_assert_eq(atomic_load(&srv->ctx.echo_calls), 0, "the handler never ran");
  assert_still_serving();
}

Test(rpc_bad_input, missing_required_field_gets_invalid_argument_with_violation, .init = up_inproc,
     .fini = down) {
  rpc_status st;
  cr_assert_eq(th_echo(cli, "", NULL, NULL, 0, &st), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(st.n_violations, 1);
  cr_assert_str_eq(st.violations[0].field, "message");
  cr_assert_str_eq(st.violations[0].description, "must not be empty");
  assert_still_serving();
}

Test(rpc_bad_input, spent_budget_on_arrival_gets_deadline_exceeded, .init = up_inproc,
     .fini = down) {
  uint8_t *frame = NULL;
  size_t n = th_pack_envelope("/shop.testing.v1.EchoService/Echo", "req-late", -5, "\x0a\x02hi", 4,
                              &frame);
  Shop__Rpc__V1__ResponseEnvelope *e = raw(frame, n);
  free(frame);
  cr_assert_eq(code_of(e), STATUS_DEADLINE_EXCEEDED);
  cr_assert_str_eq(e->request_id, "req-late");
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  cr_assert_eq(atomic_load(&srv->ctx.echo_calls), 0);
  assert_still_serving();
}

Test(rpc_bad_input, spent_budget_in_the_direct_path_gets_deadline_exceeded, .init = up_inproc,
     .fini = down) {
  uint8_t *frame = NULL;
  size_t n = th_pack_envelope("/shop.testing.v1.EchoService/Echo", "req-late", -1, "\x0a\x02hi", 4,
                              &frame);
  uint8_t *reply = NULL;
  size_t rn = 0;
  cr_assert_eq(rpc_server_handle_frame(srv->srv, frame, n, &reply, &rn), STATUS_OK);
  free(frame);
  Shop__Rpc__V1__ResponseEnvelope *e = shop__rpc__v1__response_envelope__unpack(NULL, rn, reply);
  free(reply);
  cr_assert_eq(code_of(e), STATUS_DEADLINE_EXCEEDED);
  shop__rpc__v1__response_envelope__free_unpacked(e, NULL);
  cr_assert_eq(atomic_load(&srv->ctx.echo_calls), 0);
}

#define LATE_BUDGET_MS 100

/* Sends the late call with its 100 ms budget, which the client's deadline
 * answers. False when the client itself stalled past the budget before it
 * sent (it happens on a loaded machine): nothing left, send again. */
static bool send_late(rpc_status *st) {
  cr_assert_eq(th_echo(cli, "late", &(rpc_call_opts){.timeout_ms = LATE_BUDGET_MS}, NULL, 0, st),
               STATUS_DEADLINE_EXCEEDED);
  return strcmp(st->message, "deadline exceeded before sending") != 0;
}

Test(rpc_bad_input, budget_spent_while_queued_is_not_dispatched) {
  srv = th_server_start(&(th_opts){.workers = 1});
  srv->ctx.block = true;
  cli = th_client(srv->url, 0, 0);
  th_sleep_call busy = {.c = cli, .timeout_ms = 10000};
  th_sleep_start(&busy);
  cr_assert(th_wait_peak(&srv->ctx, 1, 5000), "the only worker is busy");
  /* Queued behind the busy worker with a 100 ms budget. */
  rpc_status st;
  WAIT_UNTIL(send_late(&st), 10000, "the late call sent (last: %s)", st.message);
  rpc_server_stats ss = {0};
  int64_t seen_ms = 0;
  WAIT_UNTIL((rpc_server_stats_get(srv->srv, &ss), seen_ms = wait_now_ms(), ss.queued == 1), 10000,
             "the late call waiting in the server's queue (queued %llu)",
             (unsigned long long)ss.queued);
  /* The server counts a call's budget from its own receipt (it cannot know
   * how long the call travelled), so it may have budget left when the
   * client has given up: a worker freed at once would run the call. The
   * receipt came before the call was seen queued, so LATE_BUDGET_MS after
   * that sighting the server's budget is spent, however slow the machine. */
  wait_sleep_ms(seen_ms + LATE_BUDGET_MS - wait_now_ms());
  th_release(&srv->ctx);
  pthread_join(busy.t, NULL);
  cr_assert_eq(busy.rc, STATUS_OK);
  /* The worker picked the late call up and refused it without running it. */
  WAIT_UNTIL((rpc_server_stats_get(srv->srv, &ss), ss.by_code[STATUS_DEADLINE_EXCEEDED] >= 1), 5000,
             "the late call answered DEADLINE_EXCEEDED by the server (%llu OK, %d echo run)",
             (unsigned long long)ss.by_code[STATUS_OK], atomic_load(&srv->ctx.echo_calls));
  cr_assert_eq(ss.by_code[STATUS_DEADLINE_EXCEEDED], 1);
  cr_assert_eq(atomic_load(&srv->ctx.echo_calls), 0);
  assert_still_serving();
  down();
}

static const rpc_method_policy auth_policies[] = {
    {"Echo", RPC_AUTHENTICATED},
    {"Sleep", RPC_ADMIN},
    {"Command", RPC_AUTHENTICATED | RPC_COMMAND},
};

static void up_auth(void) {
  srv = th_server_start(&(th_opts){.policies = auth_policies, .n_policies = 3});
  cli = th_client(srv->url, 0, 0);
}

Test(rpc_auth, missing_token_gets_unauthenticated, .init = up_auth, .fini = down) {
  rpc_status st;
  cr_assert_eq(th_echo(cli, "hi", NULL, NULL, 0, &st), STATUS_UNAUTHENTICATED);
  cr_assert_str_eq(st.message, "missing token");
  cr_assert_eq(atomic_load(&srv->ctx.echo_calls), 0);
}

Test(rpc_auth, valid_token_hands_identity_to_the_handler, .init = up_auth, .fini = down) {
  char tok[AUTH_TOKEN_MAX];
  th_token(tok, sizeof tok, "user-7", AUTH_ROLE_CUSTOMER, 0);
  Shop__Testing__V1__EchoRequest req = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  req.message = "who";
  ProtobufCMessage *out = NULL;
  rpc_call_opts o = {.token = tok};
  cr_assert_eq(rpc_client_call_sync(cli, &shop__testing__v1__echo_service__descriptor, "Echo",
                                    &req.base, &out, &o, NULL),
               STATUS_OK);
  Shop__Testing__V1__EchoResponse *r = (Shop__Testing__V1__EchoResponse *)out;
  cr_assert_str_eq(r->user_id, "user-7");
  cr_assert_str_eq(r->role, "customer");
  protobuf_c_message_free_unpacked(out, NULL);
}

Test(rpc_auth, expired_token_gets_unauthenticated, .init = up_auth, .fini = down) {
  char tok[AUTH_TOKEN_MAX];
  th_token(tok, sizeof tok, "user-7", AUTH_ROLE_CUSTOMER, (int64_t)time(NULL) - 3600);
  rpc_status st;
  cr_assert_eq(th_echo(cli, "hi", &(rpc_call_opts){.token = tok}, NULL, 0, &st),
               STATUS_UNAUTHENTICATED);
  cr_assert_str_eq(st.message, "token expired");
}

Test(rpc_auth, tampered_token_gets_unauthenticated, .init = up_auth, .fini = down) {
  char tok[AUTH_TOKEN_MAX];
  th_token(tok, sizeof tok, "user-7", AUTH_ROLE_CUSTOMER, 0);
  size_t n = strlen(tok);
  tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
  cr_assert_eq(th_echo(cli, "hi", &(rpc_call_opts){.token = tok}, NULL, 0, NULL),
               STATUS_UNAUTHENTICATED);
  char good[AUTH_TOKEN_MAX];
  th_token(good, sizeof good, "user-7", AUTH_ROLE_CUSTOMER, 0);
  cr_assert_eq(th_echo(cli, "hi", &(rpc_call_opts){.token = good}, NULL, 0, NULL), STATUS_OK,
               "the server keeps serving");
}

Test(rpc_auth, alg_none_token_gets_unauthenticated, .init = up_auth, .fini = down) {
  /* {"alg":"none","typ":"JWT"} . {"sub":"root","role":"admin","iss":"shop-test",...} . */
  char tok[512];
  snprintf(tok, sizeof tok,
           "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
           "eyJzdWIiOiJyb290Iiwicm9sZSI6ImFkbWluIiwiaXNzIjoic2hvcC10ZXN0IiwiaWF0IjoxNzAwMDAwMDAw"
           "LCJleHAiOjQxMDI0NDQ4MDAsImp0aSI6IngifQ.");
  cr_assert_eq(th_echo(cli, "hi", &(rpc_call_opts){.token = tok}, NULL, 0, NULL),
               STATUS_UNAUTHENTICATED);
}

Test(rpc_auth, customer_on_an_admin_method_gets_permission_denied, .init = up_auth, .fini = down) {
  char tok[AUTH_TOKEN_MAX];
  th_token(tok, sizeof tok, "user-7", AUTH_ROLE_CUSTOMER, 0);
  Shop__Testing__V1__SleepRequest req = SHOP__TESTING__V1__SLEEP_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  rpc_call_opts o = {.token = tok};
  cr_assert_eq(rpc_client_call_sync(cli, &shop__testing__v1__echo_service__descriptor, "Sleep",
                                    &req.base, &out, &o, NULL),
               STATUS_PERMISSION_DENIED);
  th_token(tok, sizeof tok, "admin-1", AUTH_ROLE_ADMIN, 0);
  cr_assert_eq(rpc_client_call_sync(cli, &shop__testing__v1__echo_service__descriptor, "Sleep",
                                    &req.base, &out, &o, NULL),
               STATUS_OK);
  protobuf_c_message_free_unpacked(out, NULL);
}

Test(rpc_auth, builtins_are_public, .init = up_auth, .fini = down) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  cr_assert_eq(rpc_client_call_sync(cli, &grpc__health__v1__health__descriptor, "Check", &req.base,
                                    &out, NULL, NULL),
               STATUS_OK);
  protobuf_c_message_free_unpacked(out, NULL);
}

Test(rpc_bad_input, handler_without_reply_gets_internal, .init = up_inproc, .fini = down) {
  rpc_status st;
  cr_assert_eq(th_echo(cli, "no-reply", NULL, NULL, 0, &st), STATUS_INTERNAL);
  cr_assert_str_eq(st.message, "handler returned no reply");
  assert_still_serving();
}

Test(rpc_bad_input, handler_with_an_invalid_status_gets_internal, .init = up_inproc, .fini = down) {
  rpc_status st;
  cr_assert_eq(th_echo(cli, "bad-status", NULL, NULL, 0, &st), STATUS_INTERNAL);
  assert_still_serving();
}

Test(rpc_bad_input, handler_replying_the_wrong_type_gets_internal, .init = up_inproc,
     .fini = down) {
  cr_assert_eq(th_echo(cli, "wrong-type", NULL, NULL, 0, NULL), STATUS_INTERNAL);
  assert_still_serving();
}

Test(rpc_bad_input, command_without_idempotency_key_gets_invalid_argument, .init = up_inproc,
     .fini = down) {
  Shop__Testing__V1__CommandRequest req = SHOP__TESTING__V1__COMMAND_REQUEST__INIT;
  req.name = "c";
  ProtobufCMessage *out = NULL;
  rpc_status st;
  cr_assert_eq(rpc_client_call_sync(cli, &shop__testing__v1__echo_service__descriptor, "Command",
                                    &req.base, &out, NULL, &st),
               STATUS_INVALID_ARGUMENT);
  cr_assert_eq(st.n_violations, 1);
  cr_assert_str_eq(st.violations[0].field, "idempotency_key");
  cr_assert_eq(atomic_load(&srv->ctx.command_runs), 0);
  rpc_call_opts o = {.idempotency_key = "k-1"};
  cr_assert_eq(rpc_client_call_sync(cli, &shop__testing__v1__echo_service__descriptor, "Command",
                                    &req.base, &out, &o, &st),
               STATUS_OK);
  protobuf_c_message_free_unpacked(out, NULL);
}

Test(rpc_bad_input, full_queue_gets_resource_exhausted_at_once) {
  srv = th_server_start(&(th_opts){.workers = 1, .queue_size = 1});
  srv->ctx.block = true;
  cli = th_client(srv->url, 0, 0);
  th_sleep_call a = {.c = cli, .timeout_ms = 10000}, b = {.c = cli, .timeout_ms = 10000};
  th_sleep_start(&a);
  cr_assert(th_wait_peak(&srv->ctx, 1, 5000));
  th_sleep_start(&b);
  rpc_server_stats ss = {0};
  WAIT_UNTIL((rpc_server_stats_get(srv->srv, &ss), ss.queued >= 1), 5000,
             "one call waiting for the worker (queued %llu)", (unsigned long long)ss.queued);
  cr_assert_eq(ss.queued, 1, "one call waits for the worker");
  rpc_status st;
  cr_assert_eq(th_echo(cli, "overflow", NULL, NULL, 0, &st), STATUS_RESOURCE_EXHAUSTED);
  cr_assert_geq(st.retry_delay_ms, 1, "with retry info");
  th_release(&srv->ctx);
  pthread_join(a.t, NULL);
  pthread_join(b.t, NULL);
  cr_assert_eq(a.rc, STATUS_OK);
  cr_assert_eq(b.rc, STATUS_OK);
  rpc_server_stats_get(srv->srv, &ss);
  cr_assert_eq(ss.rejected_queue_full, 1);
  assert_still_serving();
  down();
}

Test(rpc_bad_input, oversized_request_is_refused_by_the_client, .init = up_inproc, .fini = down) {
  rpc_client *small = th_client(srv->url, 4096, 3);
  char big[8192];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  rpc_server_stats before, after;
  rpc_server_stats_get(srv->srv, &before);
  rpc_status st;
  cr_assert_eq(th_echo(small, big, NULL, NULL, 0, &st), STATUS_RESOURCE_EXHAUSTED);
  rpc_server_stats_get(srv->srv, &after);
  cr_assert_eq(after.calls, before.calls, "nothing reached the server");
  rpc_client_stats cs;
  rpc_client_stats_get(small, &cs);
  cr_assert_eq(cs.attempts, 1, "and it was not retried");
  rpc_client_destroy(small);
  assert_still_serving();
}

Test(rpc_bad_input, oversized_reply_gets_resource_exhausted) {
  srv = th_server_start(&(th_opts){.max_message_bytes = 4096});
  cli = th_client(srv->url, 0, 0);
  rpc_status st;
  cr_assert_eq(th_echo(cli, "big:10000", NULL, NULL, 0, &st), STATUS_RESOURCE_EXHAUSTED);
  cr_assert(strstr(st.message, "4096") != NULL, "%s", st.message);
  assert_still_serving();
  down();
}

/* ---- client behaviour ------------------------------------------------------------------ */

Test(rpc_client, no_server_connected_gives_unavailable_promptly) {
  rpc_client *c = th_client_nowait("tcp://127.0.0.1:1", 0, 0);
  int64_t t0 = wait_now_ms();
  rpc_status st;
  cr_assert_eq(th_echo(c, "anyone?", &(rpc_call_opts){.timeout_ms = 20000}, NULL, 0, &st),
               STATUS_UNAVAILABLE);
  cr_assert_lt(wait_now_ms() - t0, 10000, "well before the 20 s deadline");
  rpc_client_destroy(c);
}

Test(rpc_client, retries_stop_at_the_deadline) {
  rpc_client *c = th_client_nowait("tcp://127.0.0.1:1", 0, 100);
  rpc_status st;
  cr_assert_eq(th_echo(c, "anyone?", &(rpc_call_opts){.timeout_ms = 300}, NULL, 0, &st),
               STATUS_UNAVAILABLE);
  rpc_client_stats cs;
  rpc_client_stats_get(c, &cs);
  cr_assert_gt(cs.retries, 0);
  cr_assert_lt(cs.retries, 100, "the deadline ended the retries, not the count");
  rpc_client_destroy(c);
}

typedef struct late_start {
  th_server *s;
  char url[128];
  pthread_t t;
} late_start;

static void *start_later(void *arg) {
  late_start *l = arg;
  wait_sleep_ms(150); /* on purpose: the server comes up after the first attempts */
  l->s = th_server_start(&(th_opts){.url = l->url});
  return NULL;
}

Test(rpc_client, retry_on_unavailable_reaches_a_server_that_comes_up) {
  late_start l = {.url = "inproc://late"};
  rpc_client *c = th_client_nowait(l.url, 0, 20);
  pthread_create(&l.t, NULL, start_later, &l);
  char got[64];
  rpc_status st;
  cr_assert_eq(th_echo(c, "patience", &(rpc_call_opts){.timeout_ms = 10000}, got, sizeof got, &st),
               STATUS_OK, "%s", st.message);
  pthread_join(l.t, NULL);
  cr_assert_gt(atomic_load(&l.s->ctx.last_attempt), 1, "the attempt number travels");
  rpc_client_destroy(c);
  th_server_stop(l.s);
}

Test(rpc_client, a_handler_passes_its_budget_and_trace_downstream) {
  th_server *down_srv = th_server_start(&(th_opts){0});
  srv = th_server_start(&(th_opts){0});
  srv->ctx.downstream = th_client(down_srv->url, 0, 0);
  cli = th_client(srv->url, 0, 0);
  char got[64];
  rpc_status st;
  cr_assert_eq(th_echo(cli, "forward", &(rpc_call_opts){.timeout_ms = 1500}, got, sizeof got, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_str_eq(got, "hello");
  cr_assert_leq(atomic_load(&down_srv->ctx.last_remaining_ms), 1500,
                "the downstream budget is what was left");
  cr_assert_str_eq(down_srv->ctx.last_trace, srv->ctx.last_trace, "one trace");
  rpc_client_destroy(srv->ctx.downstream);
  th_server_stop(down_srv);
  down();
}

#define TRACE_TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"

Test(rpc_client, a_call_made_inside_a_log_scope_continues_its_trace) {
  srv = th_server_start(&(th_opts){0});
  cli = th_client(srv->url, 0, 0);
  log_scope s;
  log_scope_enter(&s, NULL, TRACE_TP, NULL);
  status_code rc = th_echo(cli, "scoped", NULL, NULL, 0, NULL);
  log_scope_leave(&s);
  cr_assert_eq(rc, STATUS_OK);
  cr_assert_str_eq(srv->ctx.last_trace, TRACE_ID);
  down();
}

Test(rpc_client, a_handler_calling_without_a_parent_still_passes_its_trace_downstream) {
  th_server *down_srv = th_server_start(&(th_opts){0});
  srv = th_server_start(&(th_opts){0});
  srv->ctx.downstream = th_client(down_srv->url, 0, 0);
  cli = th_client(srv->url, 0, 0);
  log_scope s;
  log_scope_enter(&s, NULL, TRACE_TP, NULL);
  char got[64];
  rpc_status st;
  status_code rc = th_echo(cli, "forward-scope", NULL, got, sizeof got, &st);
  log_scope_leave(&s);
  cr_assert_eq(rc, STATUS_OK, "%s", st.message);
  cr_assert_str_eq(srv->ctx.last_trace, TRACE_ID);
  cr_assert_str_eq(down_srv->ctx.last_trace, TRACE_ID, "the server's scope carried the trace");
  rpc_client_destroy(srv->ctx.downstream);
  th_server_stop(down_srv);
  down();
}

static _Atomic int ic_order[8];
static _Atomic int ic_n;

static void server_ic(rpc_call *call, void *arg) {
  ic_order[atomic_fetch_add(&ic_n, 1)] = (int)(intptr_t)arg;
  rpc_call_proceed(call);
}

static status_code client_ic(rpc_client_req *req, void *arg) {
  ic_order[atomic_fetch_add(&ic_n, 1)] = (int)(intptr_t)arg;
  return rpc_client_req_proceed(req);
}

Test(rpc_client, added_interceptors_run_in_order_on_both_sides) {
  char err[256];
  srv = th_server_start(&(th_opts){0});
  rpc_server_destroy(srv->srv); /* rebuild with interceptors before start */
  rpc_server_opts so = {.name = "ic",
                        .workers = 2,
                        .queue_size = 8,
                        .max_message_bytes = 65536,
                        .default_timeout_ms = 5000,
                        .max_timeout_ms = 60000};
  cr_assert_eq(rpc_server_create(&srv->srv, &so, err, sizeof err), STATUS_OK);
  rpc_service_opts svo = {.default_policy = RPC_PUBLIC, .ctx = &srv->ctx};
  cr_assert_eq(rpc_server_register(srv->srv, &srv->svc.base, &svo, err, sizeof err), STATUS_OK);
  rpc_server_interceptor s1 = {"s1", server_ic, (void *)(intptr_t)3};
  rpc_server_interceptor s2 = {"s2", server_ic, (void *)(intptr_t)4};
  cr_assert_eq(rpc_server_add_interceptor(srv->srv, &s1, err, sizeof err), STATUS_OK);
  cr_assert_eq(rpc_server_add_interceptor(srv->srv, &s2, err, sizeof err), STATUS_OK);
  cr_assert_eq(rpc_server_listen(srv->srv, "inproc://ic", err, sizeof err), STATUS_OK);
  cr_assert_eq(rpc_server_start(srv->srv, err, sizeof err), STATUS_OK);
  cli = th_client("inproc://ic", 0, 0);
  rpc_client_interceptor c1 = {"c1", client_ic, (void *)(intptr_t)1};
  rpc_client_interceptor c2 = {"c2", client_ic, (void *)(intptr_t)2};
  cr_assert_eq(rpc_client_add_interceptor(cli, &c1, err, sizeof err), STATUS_OK);
  cr_assert_eq(rpc_client_add_interceptor(cli, &c2, err, sizeof err), STATUS_OK);
  cr_assert_eq(th_echo(cli, "order", NULL, NULL, 0, NULL), STATUS_OK);
  cr_assert_eq(atomic_load(&ic_n), 4);
  for (int i = 0; i < 4; i++) cr_assert_eq(ic_order[i], i + 1);
  down();
}

static void th_never_echo(Shop__Testing__V1__EchoService_Service *svc,
                          const Shop__Testing__V1__EchoRequest *in,
                          Shop__Testing__V1__EchoResponse_Closure closure, void *data) {}
static void th_never_sleep(Shop__Testing__V1__EchoService_Service *svc,
                           const Shop__Testing__V1__SleepRequest *in,
                           Shop__Testing__V1__SleepResponse_Closure closure, void *data) {}
static void th_never_command(Shop__Testing__V1__EchoService_Service *svc,
                             const Shop__Testing__V1__CommandRequest *in,
                             Shop__Testing__V1__CommandResponse_Closure closure, void *data) {}

Test(rpc_server, register_refuses_a_policy_for_a_method_the_service_lacks) {
  rpc_server *s = NULL;
  char err[256];
  rpc_server_opts so = {.name = "x",
                        .workers = 1,
                        .queue_size = 1,
                        .max_message_bytes = 4096,
                        .default_timeout_ms = 1000,
                        .max_timeout_ms = 1000};
  cr_assert_eq(rpc_server_create(&s, &so, err, sizeof err), STATUS_OK);
  static Shop__Testing__V1__EchoService_Service svc =
      SHOP__TESTING__V1__ECHO_SERVICE__INIT(th_never_);
  rpc_method_policy p[] = {{"Ecko", RPC_PUBLIC}};
  rpc_service_opts o = {.policies = p, .n_policies = 1};
  cr_assert_eq(rpc_server_register(s, &svc.base, &o, err, sizeof err), STATUS_INVALID_ARGUMENT);
  cr_assert(strstr(err, "Ecko") != NULL, "%s", err);
  rpc_server_destroy(s);
}

/* ---- several instances ------------------------------------------------------------ */

Test(rpc_calls, a_comma_separated_endpoint_list_dials_every_instance_and_spreads_the_calls) {
  th_server *a = th_server_start(&(th_opts){0}), *b = th_server_start(&(th_opts){0});
  char list[300];
  snprintf(list, sizeof list, "%s, %s", a->url, b->url);
  rpc_client *c = th_client(list, 0, 0);
  WAIT_UNTIL(rpc_client_pipes(c) >= 2, 1000, "a connection to each instance (%d)",
             rpc_client_pipes(c));
  cr_assert_eq(rpc_client_pipes(c), 2);
  for (int i = 0; i < 20; i++) {
    char got[64];
    rpc_status st;
    cr_assert_eq(th_echo(c, "hi", NULL, got, sizeof got, &st), STATUS_OK, "%s", st.message);
  }
  cr_assert_gt(atomic_load(&a->ctx.echo_calls), 0);
  cr_assert_gt(atomic_load(&b->ctx.echo_calls), 0);
  rpc_client_destroy(c);
  th_server_stop(a);
  th_server_stop(b);
  rpc_client_opts o = {.url = "inproc://x,,inproc://y",
                       .max_message_bytes = 1 << 20,
                       .default_timeout_ms = 1000,
                       .max_timeout_ms = 1000,
                       .retry_backoff_ms = 10};
  char err[256] = "";
  cr_assert_eq(rpc_client_create(&c, &o, err, sizeof err), STATUS_INVALID_ARGUMENT);
  cr_assert_null(c);
}
