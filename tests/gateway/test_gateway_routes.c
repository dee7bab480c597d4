/* The gateway's route table and mappings, without sockets: the routes read
 * out of the embedded descriptor set, matching and its precedence, the
 * status mapping, X-Request-Timeout, percent-decoding, and templates the
 * loader refuses. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"
#include "google/api/http.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "pbjson/pbjson.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

static gateway_routes *load(void) {
  gateway_routes *r = NULL;
  char err[256] = "";
  cr_assert_eq(
      gateway_routes_load(&r, shop_descriptor_set, shop_descriptor_set_len, err, sizeof err),
      STATUS_OK, "%s", err);
  return r;
}

/* Every rpc of a domain service (not the RPC layer's reflection, not the
 * test fixture's echo) has a route: an rpc added without its
 * google.api.http option fails here. */
Test(gateway_routes, every_rpc_of_a_domain_service_has_a_route) {
  gateway_routes *r = load();
  size_t rpcs = 0;
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++) {
    const ProtobufCServiceDescriptor *d = pbjson_service_registry[i];
    if (strncmp(d->name, "shop.", 5) != 0 || strncmp(d->name, "shop.rpc.", 9) == 0 ||
        strncmp(d->name, "shop.testing.", 13) == 0)
      continue;
    for (unsigned m = 0; m < d->n_methods; m++, rpcs++) {
      bool found = false;
      for (size_t k = 0; k < gateway_routes_count(r) && !found; k++) {
        const gateway_route *rt = gateway_routes_at(r, k);
        found = strcmp(rt->service, d->name) == 0 && strcmp(rt->rpc, d->methods[m].name) == 0;
      }
      cr_expect(found, "%s/%s has no google.api.http route", d->name, d->methods[m].name);
    }
  }
  cr_assert_eq(gateway_routes_count(r), rpcs);
  for (size_t i = 0; i < gateway_routes_count(r); i++) {
    const gateway_route *rt = gateway_routes_at(r, i);
    cr_assert(strncmp(rt->service, "shop.", 5) == 0, "%s", rt->service);
    cr_assert(strncmp(rt->pattern, "/v1/", 4) == 0, "%s", rt->pattern);
  }
  gateway_routes_free(r);
}

Test(gateway_routes, a_path_variable_and_a_verb_bind_the_right_rpc) {
  gateway_routes *r = load();
  gateway_vars v;
  const gateway_route *rt =
      gateway_routes_match(r, "POST", "/v1/orders/abc%2Fdef:cancel", &v, NULL, 0);
  cr_assert_not_null(rt);
  cr_assert_str_eq(rt->rpc, "CancelOrder");
  cr_assert_str_eq(rt->body, "*");
  cr_assert_eq(v.n, 1);
  cr_assert_str_eq(v.field[0], "order_id");
  cr_assert_str_eq(v.value[0], "abc/def", "a segment is decoded after the split");
  rt = gateway_routes_match(r, "GET", "/v1/orders:stuck", &v, NULL, 0);
  cr_assert_str_eq(rt->rpc, "ListStuckOrders");
  rt = gateway_routes_match(r, "GET", "/v1/orders", &v, NULL, 0);
  cr_assert_str_eq(rt->rpc, "ListOrdersByStatus");
  cr_assert_null(rt->body);
  gateway_routes_free(r);
}

Test(gateway_routes, literal_segments_win_over_variables) {
  gateway_routes *r = load();
  gateway_vars v;
  cr_assert_str_eq(gateway_routes_match(r, "GET", "/v1/users/me", &v, NULL, 0)->rpc, "GetMe");
  cr_assert_str_eq(gateway_routes_match(r, "GET", "/v1/users/u-1", &v, NULL, 0)->rpc, "GetUser");
  cr_assert_str_eq(v.value[0], "u-1");
  /* PATCH has only the variable route: "me" is then a user id. */
  cr_assert_str_eq(gateway_routes_match(r, "PATCH", "/v1/users/me", &v, NULL, 0)->rpc,
                   "UpdateProfile");
  gateway_routes_free(r);
}

Test(gateway_routes, a_known_path_with_another_method_lists_the_allowed_ones) {
  gateway_routes *r = load();
  gateway_vars v;
  char allowed[64];
  cr_assert_null(gateway_routes_match(r, "DELETE", "/v1/products/p1", &v, allowed, sizeof allowed));
  cr_assert(strstr(allowed, "GET") && strstr(allowed, "PATCH"), "%s", allowed);
  cr_assert_null(
      gateway_routes_match(r, "GET", "/v1/products/p1/extra", &v, allowed, sizeof allowed));
  cr_assert_str_eq(allowed, "");
  cr_assert_null(gateway_routes_match(r, "GET", "/v1/products/", &v, allowed, sizeof allowed));
  cr_assert_null(gateway_routes_match(r, "GET", "v1/products", &v, allowed, sizeof allowed));
  cr_assert_null(gateway_routes_match(r, "GET", "/v1/products/%zz", &v, allowed, sizeof allowed));
  gateway_routes_free(r);
}

Test(gateway_routes, statuses_map_as_google_rpc_says) {
  rpc_status st;
  rpc_status_clear(&st);
  cr_assert_eq(gateway_http_status(STATUS_OK, NULL), 200);
  cr_assert_eq(gateway_http_status(STATUS_INVALID_ARGUMENT, NULL), 400);
  cr_assert_eq(gateway_http_status(STATUS_OUT_OF_RANGE, NULL), 400);
  cr_assert_eq(gateway_http_status(STATUS_FAILED_PRECONDITION, &st), 400);
  snprintf(st.projection_id, sizeof st.projection_id, "o-1");
  cr_assert_eq(gateway_http_status(STATUS_FAILED_PRECONDITION, &st), 412);
  cr_assert_eq(gateway_http_status(STATUS_UNAUTHENTICATED, NULL), 401);
  cr_assert_eq(gateway_http_status(STATUS_PERMISSION_DENIED, NULL), 403);
  cr_assert_eq(gateway_http_status(STATUS_NOT_FOUND, NULL), 404);
  cr_assert_eq(gateway_http_status(STATUS_ALREADY_EXISTS, NULL), 409);
  cr_assert_eq(gateway_http_status(STATUS_ABORTED, NULL), 409);
  cr_assert_eq(gateway_http_status(STATUS_RESOURCE_EXHAUSTED, NULL), 429);
  cr_assert_eq(gateway_http_status(STATUS_CANCELLED, NULL), 499);
  cr_assert_eq(gateway_http_status(STATUS_UNIMPLEMENTED, NULL), 501);
  cr_assert_eq(gateway_http_status(STATUS_UNAVAILABLE, NULL), 503);
  cr_assert_eq(gateway_http_status(STATUS_DEADLINE_EXCEEDED, NULL), 504);
  cr_assert_eq(gateway_http_status(STATUS_INTERNAL, NULL), 500);
  cr_assert_eq(gateway_http_status(STATUS_DATA_LOSS, NULL), 500);
}

Test(gateway_routes, request_timeouts_parse_in_grpc_timeout_syntax) {
  int64_t ms = 0;
  cr_assert(gateway_parse_timeout("500m", &ms) && ms == 500);
  cr_assert(gateway_parse_timeout("2S", &ms) && ms == 2000);
  cr_assert(gateway_parse_timeout("1M", &ms) && ms == 60000);
  cr_assert(gateway_parse_timeout("1H", &ms) && ms == 3600000);
  cr_assert(gateway_parse_timeout("1500u", &ms) && ms == 2, "rounded up: %lld", (long long)ms);
  cr_assert(gateway_parse_timeout("1n", &ms) && ms == 1);
  cr_assert(gateway_parse_timeout("250", &ms) && ms == 250, "bare digits are ms");
  const char *bad[] = {"", "m", "0m", "-5m", "5x", "5 m", "123456789m", "5mm", "soon"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert(!gateway_parse_timeout(bad[i], &ms), "'%s' accepted", bad[i]);
}

Test(gateway_routes, percent_decoding_refuses_bad_escapes_and_nul) {
  char out[16];
  cr_assert(gateway_percent_decode("a%20b+c", 7, true, out, sizeof out));
  cr_assert_str_eq(out, "a b c");
  cr_assert(gateway_percent_decode("a+b", 3, false, out, sizeof out));
  cr_assert_str_eq(out, "a+b");
  cr_assert_not(gateway_percent_decode("%2", 2, false, out, sizeof out));
  cr_assert_not(gateway_percent_decode("%g0", 3, false, out, sizeof out));
  cr_assert_not(gateway_percent_decode("%00", 3, false, out, sizeof out));
  cr_assert_not(gateway_percent_decode("0123456789abcdefXYZ", 19, false, out, sizeof out));
}

/* A descriptor set of one file with one service and one method whose
 * google.api.http option is rule (packed by hand, as protoc writes an
 * extension). */
static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t k = 0;
  while (v >= 0x80) {
    p[k++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[k++] = (uint8_t)v;
  return k;
}

static size_t one_route_set(const Google__Api__HttpRule *rule, uint8_t *buf, size_t len) {
  /* MethodOptions holding only the extension: key (field 72295728, wire
   * type 2), length, the HttpRule's bytes. */
  uint8_t opts[600];
  size_t rule_len = google__api__http_rule__get_packed_size(rule);
  cr_assert_lt(rule_len, 500);
  size_t k = put_varint(opts, ((uint64_t)72295728 << 3) | 2);
  k += put_varint(opts + k, rule_len);
  size_t n = google__api__http_rule__pack(rule, opts + k);
  Google__Protobuf__MethodOptions *mo = google__protobuf__method_options__unpack(NULL, k + n, opts);
  cr_assert_eq(mo != NULL ? mo->base.n_unknown_fields : 0, 1);
  cr_assert_not_null(mo);
  Google__Protobuf__MethodDescriptorProto m = GOOGLE__PROTOBUF__METHOD_DESCRIPTOR_PROTO__INIT;
  m.name = "Do";
  m.input_type = ".t.DoRequest";
  m.output_type = ".t.DoResponse";
  m.options = mo;
  Google__Protobuf__MethodDescriptorProto *mp = &m;
  Google__Protobuf__ServiceDescriptorProto s = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
  s.name = "S";
  s.n_method = 1;
  s.method = &mp;
  Google__Protobuf__ServiceDescriptorProto *sp = &s;
  Google__Protobuf__FileDescriptorProto f = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
  f.name = "t.proto";
  f.package = "t";
  f.n_service = 1;
  f.service = &sp;
  Google__Protobuf__FileDescriptorProto *fp = &f;
  Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
  set.n_file = 1;
  set.file = &fp;
  cr_assert_leq(google__protobuf__file_descriptor_set__get_packed_size(&set), len);
  size_t out = google__protobuf__file_descriptor_set__pack(&set, buf);
  google__protobuf__method_options__free_unpacked(mo, NULL);
  return out;
}

static status_code load_rule(const char *get, const char *body, gateway_routes **r, char *err,
                             size_t errlen) {
  Google__Api__HttpRule rule = GOOGLE__API__HTTP_RULE__INIT;
  rule.pattern_case = GOOGLE__API__HTTP_RULE__PATTERN_GET;
  rule.get = (char *)get;
  if (body != NULL) rule.body = (char *)body;
  uint8_t buf[2048];
  size_t n = one_route_set(&rule, buf, sizeof buf);
  return gateway_routes_load(r, buf, n, err, errlen);
}

Test(gateway_routes, a_hand_made_rule_loads_with_its_service_and_types) {
  gateway_routes *r = NULL;
  char err[256] = "";
  cr_assert_eq(load_rule("/v2/things/{thing.id}:do", NULL, &r, err, sizeof err), STATUS_OK, "%s",
               err);
  cr_assert_eq(gateway_routes_count(r), 1);
  const gateway_route *rt = gateway_routes_at(r, 0);
  cr_assert_str_eq(rt->service, "t.S");
  cr_assert_str_eq(rt->input_type, "t.DoRequest");
  cr_assert_str_eq(rt->verb, "do");
  gateway_vars v;
  cr_assert_eq(gateway_routes_match(r, "GET", "/v2/things/42:do", &v, NULL, 0), rt);
  cr_assert_str_eq(v.field[0], "thing.id");
  gateway_routes_free(r);
}

Test(gateway_routes, unsupported_templates_are_refused_with_the_rpc_named) {
  const char *bad[] = {"v1/no-slash", "/v1/{a=things/*}", "/v1/{open",  "/v1//x",
                       "/v1/x/",      "/v1/x:verb/y",     "/v1/pre{a}", "/v1/{1a}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    gateway_routes *r = NULL;
    char err[256] = "";
    cr_assert_eq(load_rule(bad[i], NULL, &r, err, sizeof err), STATUS_INVALID_ARGUMENT, "'%s'",
                 bad[i]);
    cr_assert_null(r);
    cr_assert(strstr(err, "t.S/Do") != NULL, "'%s': %s", bad[i], err);
  }
  gateway_routes *r = NULL;
  char err[256] = "";
  cr_assert_eq(load_rule("/v1/x", "not a field!", &r, err, sizeof err), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(gateway_routes_load(&r, "\xff\xff", 2, err, sizeof err), STATUS_INVALID_ARGUMENT);
}

Test(gateway_routes, the_openapi_document_names_every_operation_once) {
  json_t *doc = NULL;
  char err[256] = "";
  cr_assert_eq(
      gateway_openapi_build(&doc, shop_descriptor_set, shop_descriptor_set_len, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert_str_eq(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
  json_t *paths = json_object_get(doc, "paths");
  const char *p;
  json_t *item;
  size_t ops = 0;
  json_object_foreach(paths, p, item) ops += json_object_size(item);
  /* One operation for each route (each RPC with a google.api.http rule). */
  gateway_routes *routes = load();
  cr_assert_eq(ops, gateway_routes_count(routes));
  cr_assert_geq(ops, 30);
  gateway_routes_free(routes);
  json_t *get = json_object_get(json_object_get(paths, "/v1/orders/{order_id}"), "get");
  cr_assert_str_eq(json_string_value(json_object_get(get, "operationId")),
                   "OrderQueryService_GetOrder");
  cr_assert_not_null(json_object_get(json_object_get(json_object_get(doc, "components"), "schemas"),
                                     "shop.order.v1.Order"));
  json_decref(doc);
}
