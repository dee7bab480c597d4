/* Method policies at registration: every method of a *CommandService is a
 * command (an idempotency key is required) whatever its policy row says;
 * other services' methods are commands only when their row says so. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"

static atomic_int invoked;

/* A handler for any method: replies with an empty message of the method's
 * output type. */
static void any_invoke(ProtobufCService *svc, unsigned idx, const ProtobufCMessage *in,
                       ProtobufCClosure closure, void *data) {
  (void)in;
  atomic_fetch_add(&invoked, 1);
  const ProtobufCMessageDescriptor *od = svc->descriptor->methods[idx].output;
  ProtobufCMessage *m = calloc(1, od->sizeof_message);
  protobuf_c_message_init(od, m);
  closure(m, data);
  free(m);
}

static rpc_server *srv;
static ProtobufCService cmd_svc = {
    .descriptor = &shop__product__v1__product_command_service__descriptor, .invoke = any_invoke};
static ProtobufCService query_svc = {
    .descriptor = &shop__product__v1__product_query_service__descriptor, .invoke = any_invoke};

static void up(void) {
  rpc_server_opts o = {.name = "policy-test",
                       .workers = 1,
                       .queue_size = 4,
                       .max_message_bytes = 65536,
                       .default_timeout_ms = 5000,
                       .max_timeout_ms = 5000};
  char err[256];
  cr_assert_eq(rpc_server_create(&srv, &o, err, sizeof err), STATUS_OK, "%s", err);
  /* Public, so that access control lets every call through to dispatch;
   * the rows say nothing of commands. */
  static const rpc_method_policy rows[] = {{"CreateProduct", RPC_PUBLIC}};
  rpc_service_opts so = {.default_policy = RPC_PUBLIC, .policies = rows, .n_policies = 1};
  cr_assert_eq(rpc_server_register(srv, &cmd_svc, &so, err, sizeof err), STATUS_OK, "%s", err);
  rpc_service_opts qo = {.default_policy = RPC_PUBLIC};
  cr_assert_eq(rpc_server_register(srv, &query_svc, &qo, err, sizeof err), STATUS_OK, "%s", err);
  atomic_store(&invoked, 0);
}

static void down(void) { rpc_server_destroy(srv); }

/* Sends one call through the server's frame path; returns its status. */
static Shop__Rpc__V1__ResponseEnvelope *call(const char *method, const char *idem_key) {
  Shop__Rpc__V1__RequestEnvelope e = SHOP__RPC__V1__REQUEST_ENVELOPE__INIT;
  e.method = (char *)method;
  e.request_id = "req-1";
  e.idempotency_key = (char *)idem_key;
  uint8_t buf[512];
  size_t n = shop__rpc__v1__request_envelope__pack(&e, buf);
  uint8_t *reply = NULL;
  size_t rn = 0;
  cr_assert_eq(rpc_server_handle_frame(srv, buf, n, &reply, &rn), STATUS_OK);
  Shop__Rpc__V1__ResponseEnvelope *r = shop__rpc__v1__response_envelope__unpack(NULL, rn, reply);
  free(reply);
  cr_assert_not_null(r);
  return r;
}

static int code_of(const Shop__Rpc__V1__ResponseEnvelope *r) {
  return r->status != NULL ? r->status->code : 0;
}

TestSuite(rpc_policy, .init = up, .fini = down);

Test(rpc_policy, a_command_service_method_without_a_key_is_refused_whatever_its_row_says) {
  const char *methods[] = {"/shop.product.v1.ProductCommandService/CreateProduct",
                           "/shop.product.v1.ProductCommandService/SetPrice"};
  for (size_t i = 0; i < 2; i++) {
    Shop__Rpc__V1__ResponseEnvelope *r = call(methods[i], "");
    cr_assert_eq(code_of(r), STATUS_INVALID_ARGUMENT, "%s", methods[i]);
    cr_assert_eq(r->status->n_field_violations, 1);
    cr_assert_str_eq(r->status->field_violations[0]->field, "idempotency_key");
    shop__rpc__v1__response_envelope__free_unpacked(r, NULL);
  }
  cr_assert_eq(atomic_load(&invoked), 0, "no handler ran");
  Shop__Rpc__V1__ResponseEnvelope *r =
      call("/shop.product.v1.ProductCommandService/CreateProduct", "key-1");
  cr_assert_eq(code_of(r), STATUS_OK);
  shop__rpc__v1__response_envelope__free_unpacked(r, NULL);
  cr_assert_eq(atomic_load(&invoked), 1);
}

Test(rpc_policy, a_query_service_method_needs_no_key) {
  Shop__Rpc__V1__ResponseEnvelope *r = call("/shop.product.v1.ProductQueryService/GetProduct", "");
  cr_assert_eq(code_of(r), STATUS_OK);
  shop__rpc__v1__response_envelope__free_unpacked(r, NULL);
  cr_assert_eq(atomic_load(&invoked), 1);
}

Test(rpc_policy, command_services_are_known_by_their_name) {
  cr_assert(rpc_service_is_command(&shop__product__v1__product_command_service__descriptor));
  cr_assert_not(rpc_service_is_command(&shop__product__v1__product_query_service__descriptor));
}
