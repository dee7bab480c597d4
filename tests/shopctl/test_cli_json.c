/* The proto3 JSON mapping of shopctl, on real Shop messages. */
#include <criterion/criterion.h>
#include <string.h>

#include "cli/cli.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/testing/v1/echo.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

static char err[512];

/* JSON text -> message of type name -> JSON text (compact, sorted). */
static char *round_trip(const char *name, const char *text) {
  const ProtobufCMessageDescriptor *d = pbjson_message_find(name);
  cr_assert_not_null(d, "%s", name);
  json_error_t je;
  json_t *in = json_loads(text, 0, &je);
  cr_assert_not_null(in, "%s", je.text);
  uint8_t *bytes;
  size_t len;
  cr_assert_eq(pbjson_to_bytes(&bytes, &len, d, in, err, sizeof err), STATUS_OK, "%s", err);
  json_decref(in);
  json_t *out;
  cr_assert_eq(pbjson_from_bytes(&out, d, bytes, len, err, sizeof err), STATUS_OK, "%s", err);
  free(bytes);
  char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(out);
  return s;
}

static status_code parse(const char *name, const char *text, ProtobufCMessage **m) {
  json_t *in = json_loads(text, 0, NULL);
  cr_assert_not_null(in);
  status_code rc = pbjson_to_message(m, pbjson_message_find(name), in, err, sizeof err);
  json_decref(in);
  return rc;
}

Test(cli_json, create_order_request_round_trips_with_camel_names_and_string_int64) {
  char *s = round_trip("shop.order.v1.CreateOrderRequest",
                       "{\"lines\":[{\"productId\":\"p1\",\"quantity\":2},"
                       "{\"product_id\":\"p2\",\"quantity\":\"3\"}],"
                       "\"payment_token\":\"tok_ok\","
                       "\"shippingAddress\":{\"recipient\":\"Ada\",\"city\":\"Paris\"},"
                       "\"expectedTotal\":{\"units\":1999,\"currency\":\"EUR\"}}");
  cr_assert_str_eq(s,
                   "{\"expectedTotal\":{\"currency\":\"EUR\",\"units\":\"1999\"},"
                   "\"lines\":[{\"productId\":\"p1\",\"quantity\":2},"
                   "{\"productId\":\"p2\",\"quantity\":3}],\"paymentToken\":\"tok_ok\","
                   "\"shippingAddress\":{\"city\":\"Paris\",\"recipient\":\"Ada\"}}");
  free(s);
}

Test(cli_json, list_products_response_round_trips_nested_and_repeated_messages) {
  const char *text =
      "{\"page\":{\"nextPageToken\":\"abc\",\"totalSize\":\"2\"},"
      "\"products\":[{\"archived\":true,\"details\":{\"category\":\"books\",\"name\":\"B\"},"
      "\"inventoryRule\":{\"lowStockThreshold\":\"5\",\"maxQuantityPerOrder\":3},"
      "\"price\":{\"currency\":\"EUR\",\"units\":\"-9223372036854775808\"},"
      "\"productId\":\"p1\",\"stock\":{\"available\":\"9223372036854775807\"},"
      "\"version\":\"7\"},{\"productId\":\"p2\"}]}";
  char *s = round_trip("shop.product.v1.ListProductsResponse", text);
  cr_assert_str_eq(s, text);
  free(s);
}

Test(cli_json, oneof_members_are_written_when_set_even_if_empty) {
  char *s = round_trip("shop.user.v1.UpdateProfileRequest",
                       "{\"userId\":\"u1\",\"phone\":\"\",\"expectedVersion\":4}");
  cr_assert_str_eq(s, "{\"expectedVersion\":\"4\",\"phone\":\"\",\"userId\":\"u1\"}");
  free(s);
  ProtobufCMessage *m;
  cr_assert_eq(parse("shop.user.v1.UpdateProfileRequest", "{\"name\":\"Ada\"}", &m), STATUS_OK,
               "%s", err);
  Shop__User__V1__UpdateProfileRequest *r = (Shop__User__V1__UpdateProfileRequest *)m;
  cr_assert_eq(r->name_update_case, SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME);
  cr_assert_str_eq(r->name, "Ada");
  cr_assert_eq(r->phone_update_case, 0);
  protobuf_c_message_free_unpacked(m, NULL);
}

Test(cli_json, defaults_are_omitted_on_output) {
  char *s = round_trip("shop.order.v1.CreateOrderRequest",
                       "{\"lines\":[],\"paymentToken\":\"\",\"expectedTotal\":null}");
  cr_assert_str_eq(s, "{}");
  free(s);
}

Test(cli_json, enums_by_name_and_number) {
  Shop__Order__V1__CreateOrderResponse r = SHOP__ORDER__V1__CREATE_ORDER_RESPONSE__INIT;
  r.order_id = "o1";
  r.status = SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_PENDING;
  json_t *j;
  cr_assert_eq(pbjson_from_message(&j, &r.base, err, sizeof err), STATUS_OK);
  cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ORDER_STATUS_PENDING");
  json_decref(j);
  char *s = round_trip("shop.order.v1.CreateOrderResponse", "{\"status\":1}");
  cr_assert_str_eq(s, "{\"status\":\"ORDER_STATUS_PENDING\"}");
  free(s);
}

Test(cli_json, bytes_are_base64_and_url_safe_input_is_accepted) {
  char *s = round_trip("shop.testing.v1.EchoRequest", "{\"message\":\"hi\",\"blob\":\"-_8\"}");
  cr_assert_str_eq(s, "{\"blob\":\"+/8=\",\"message\":\"hi\"}");
  free(s);
  ProtobufCMessage *m;
  cr_assert_eq(parse("shop.testing.v1.EchoRequest", "{\"blob\":\"a$b\"}", &m),
               STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(err, "blob: not valid base64");
}

Test(cli_json, map_fields_are_objects) {
  char *s = round_trip("shop.rpc.v1.RequestEnvelope",
                       "{\"method\":\"/a.B/C\",\"metadata\":{\"k\":\"v\",\"x\":\"y\"}}");
  cr_assert_str_eq(s, "{\"metadata\":{\"k\":\"v\",\"x\":\"y\"},\"method\":\"/a.B/C\"}");
  free(s);
}

Test(cli_json, unknown_field_is_an_error_with_its_path) {
  ProtobufCMessage *m;
  cr_assert_eq(parse("shop.order.v1.CreateOrderRequest",
                     "{\"lines\":[{\"productId\":\"p\"},{\"qty\":1}]}", &m),
               STATUS_INVALID_ARGUMENT);
  cr_assert_null(m);
  cr_assert(strstr(err, "lines[1].qty: unknown field") == err, "%s", err);
}

Test(cli_json, wrong_types_and_ranges_are_errors) {
  ProtobufCMessage *m;
  cr_assert_eq(
      parse("shop.order.v1.CreateOrderRequest", "{\"lines\":[{\"quantity\":3000000000}]}", &m),
      STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(err, "lines[0].quantity: expected a 32-bit integer");
  cr_assert_eq(parse("shop.order.v1.CreateOrderResponse", "{\"status\":\"NOPE\"}", &m),
               STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(err, "status: unknown value \"NOPE\"");
  cr_assert_eq(parse("shop.order.v1.CreateOrderRequest", "{\"paymentToken\":1}", &m),
               STATUS_INVALID_ARGUMENT);
  cr_assert_eq(parse("shop.user.v1.UpdateProfileRequest", "{\"name\":\"a\",\"name\":\"b\"}", &m),
               STATUS_OK);
  protobuf_c_message_free_unpacked(m, NULL);
}

Test(cli_json, registry_holds_services_and_event_types) {
  cr_assert_not_null(pbjson_message_find("shop.order.v1.OrderCreated"));
  cr_assert_not_null(pbjson_message_find(".shop.user.v1.UserRegistered"));
  cr_assert_null(pbjson_message_find("shop.nope.v1.Nope"));
  bool found = false;
  for (size_t i = 0; pbjson_service_registry[i]; i++)
    if (strcmp(pbjson_service_registry[i]->name, "shop.order.v1.OrderCommandService") == 0)
      found = true;
  cr_assert(found);
}

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

Test(cli_reflect, descriptor_set_yields_services_and_method_types) {
  json_t *s = cli_descriptor_set_services(shop_descriptor_set, shop_descriptor_set_len);
  cr_assert_not_null(s);
  json_t *methods = json_object_get(s, "shop.order.v1.OrderCommandService");
  cr_assert(json_is_array(methods));
  bool found = false;
  size_t i;
  json_t *m;
  json_array_foreach(methods, i, m) {
    if (strcmp(json_string_value(json_object_get(m, "name")), "CreateOrder") != 0) continue;
    found = true;
    cr_assert_str_eq(json_string_value(json_object_get(m, "input")),
                     "shop.order.v1.CreateOrderRequest");
    cr_assert_str_eq(json_string_value(json_object_get(m, "output")),
                     "shop.order.v1.CreateOrderResponse");
  }
  cr_assert(found);
  cr_assert_not_null(json_object_get(s, "grpc.health.v1.Health"));
  json_decref(s);
  const uint8_t junk[] = {0x0a, 0x7f, 0x01};
  cr_assert_null(cli_descriptor_set_services(junk, sizeof junk));
}
