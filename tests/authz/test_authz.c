/* The authorization matrix: every method of every service the Shop
 * programs serve, called through the real programs (user, product and
 * order command and query sides, and the audit worker's query service)
 * by four callers:
 *
 *   none   no token
 *   A      a customer, who owns the resources the requests name (her
 *          profile, her orders)
 *   B      another customer
 *   admin  the first admin
 *
 * Each cell holds the status code the call must answer. The methods come
 * from the protobuf-c service descriptors linked into this binary
 * (shopctl's registry): a method without a row fails the test, so a new
 * RPC forces a new row here. A request is valid for its owner, so that
 * the answer shows the authorization decision and not a validation
 * error; where the admin's call would be slow or change shared state
 * (ShipOrder of a pending order, RebuildOrderProjection), its request is
 * one the handler refuses after the policy passed, and the expected code
 * says so. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "pbjson/pbjson.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"
#include "shop/user/v1/queries.pb-c.h"
#include "support/stack.h"

#define PASSWORD STACK_PASSWORD
#define ADMIN_EMAIL "admin@shop.test"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  static const char *const programs[] = {
      "user-command",  "user-query",  "product-command", "product-query",
      "order-command", "order-query", "audit-worker",    NULL};
  stack_up(programs);
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

TestSuite(authz, .init = stack_require, .fini = stack_release, .timeout = 120);

enum { NONE, CUST_A, CUST_B, ADMIN, N_WHO };
static const char *const who_name[N_WHO] = {"no token", "customer A", "customer B", "admin"};

/* ---- Fixture: the callers and what A owns ------------------------------------------------ */

#define MAX_OWNED 256
static struct {
  char email[N_WHO][160];
  char user_id[N_WHO][40];
  char token[N_WHO][AUTH_TOKEN_MAX];
  char product[40];  /* a product every order buys */
  char archived[40]; /* a product ArchiveProduct archives */
  char order[40];    /* an order of A */
  Shop__Common__V1__ConsistencyToken order_token;
  ProtobufCMessage *owned[MAX_OWNED]; /* replies and requests to free at the end */
  size_t n_owned;
} fx;

static void *own(void *m) {
  cr_assert_lt(fx.n_owned, MAX_OWNED);
  fx.owned[fx.n_owned++] = m;
  return m;
}

/* A setup call that must succeed; the reply is freed at the end. */
static void *must(const char *program, const ProtobufCServiceDescriptor *d, const char *method,
                  const ProtobufCMessage *in, const char *token) {
  ProtobufCMessage *out = NULL;
  rpc_status st;
  status_code c = stack_call(program, d, method, in, &out, token, stack_key(), &st);
  cr_assert_eq(c, STATUS_OK, "setup %s: %s %s", method, status_name(c), st.message);
  return own(out);
}

#define UCMD (&shop__user__v1__user_command_service__descriptor)
#define UQRY (&shop__user__v1__user_query_service__descriptor)
#define PCMD (&shop__product__v1__product_command_service__descriptor)
#define PQRY (&shop__product__v1__product_query_service__descriptor)
#define OCMD (&shop__order__v1__order_command_service__descriptor)
#define OQRY (&shop__order__v1__order_query_service__descriptor)

static Shop__User__V1__LoginResponse *login(const char *email, const char *password) {
  return own(stack_login(email, password));
}

static void customer(int w) {
  stack_user u;
  stack_customer(&u, w == CUST_A ? "a" : "b", w == CUST_A ? "Ann" : "Bob");
  snprintf(fx.email[w], sizeof fx.email[w], "%s", u.email);
  snprintf(fx.user_id[w], sizeof fx.user_id[w], "%s", u.user_id);
  snprintf(fx.token[w], sizeof fx.token[w], "%s", u.token);
  /* GetUser reads the read model: wait until the user is there. */
  Shop__User__V1__GetMeRequest me = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = &u.consistency;
  rc.wait_ms = 10000;
  me.consistency = &rc;
  must("user-query", UQRY, "GetMe", &me.base, fx.token[w]);
}

static Shop__Order__V1__CreateOrderRequest *order_request(void) {
  static req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, fx.product, 1);
  return &o.req;
}

/* A new order of A; its consistency token goes to tok when not NULL. */
static const char *order_of_a(Shop__Common__V1__ConsistencyToken **tok) {
  Shop__Order__V1__CreateOrderResponse *r =
      must("order-command", OCMD, "CreateOrder", &order_request()->base, fx.token[CUST_A]);
  if (tok != NULL) *tok = r->consistency;
  return r->order_id;
}

static void fixture(void) {
  char pw[256];
  stack_admin_password(pw, sizeof pw);
  snprintf(fx.email[ADMIN], sizeof fx.email[ADMIN], "%s", ADMIN_EMAIL);
  Shop__User__V1__LoginResponse *l = login(ADMIN_EMAIL, pw);
  snprintf(fx.token[ADMIN], sizeof fx.token[ADMIN], "%s", l->tokens->access_token);
  snprintf(fx.user_id[ADMIN], sizeof fx.user_id[ADMIN], "%s", l->user_id);
  customer(CUST_A);
  customer(CUST_B);
  /* order-command reads the catalog from product-query: stack_product
   * waits for it. */
  stack_product(fx.token[ADMIN], 1000, 500, 0, fx.product);
  stack_product(fx.token[ADMIN], 1000, 500, 0, fx.archived);
  Shop__Common__V1__ConsistencyToken *tok = NULL;
  snprintf(fx.order, sizeof fx.order, "%s", order_of_a(&tok));
  fx.order_token = *tok;
}

/* ---- The requests ------------------------------------------------------------------------ */

/* Builds the request of one cell (w: the caller), in static storage or
 * owned by the fixture. */
typedef ProtobufCMessage *(*build_fn)(int w);

static ProtobufCMessage *b_register(int w) {
  static char email[128];
  char u[64];
  stack_unique(u, sizeof u, "reg");
  snprintf(email, sizeof email, "%s@authz.test", u);
  static Shop__User__V1__RegisterUserRequest r = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  r.email = email;
  r.password = PASSWORD;
  r.name = "Newcomer";
  return &r.base;
}

static ProtobufCMessage *b_login(int w) {
  static Shop__User__V1__LoginRequest r = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  r.email = fx.email[CUST_A];
  r.password = PASSWORD;
  return &r.base;
}

/* A fresh refresh token of A: the refresh token is the credential of
 * RefreshToken and Logout, whoever's bearer token comes along. */
static ProtobufCMessage *b_refresh(int w) {
  static Shop__User__V1__RefreshTokenRequest r = SHOP__USER__V1__REFRESH_TOKEN_REQUEST__INIT;
  r.refresh_token = login(fx.email[CUST_A], PASSWORD)->tokens->refresh_token;
  return &r.base;
}

static ProtobufCMessage *b_logout(int w) {
  static Shop__User__V1__LogoutRequest r = SHOP__USER__V1__LOGOUT_REQUEST__INIT;
  r.refresh_token = login(fx.email[CUST_A], PASSWORD)->tokens->refresh_token;
  return &r.base;
}

static ProtobufCMessage *b_update_profile(int w) {
  static Shop__User__V1__UpdateProfileRequest r = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  r.user_id = fx.user_id[CUST_A];
  r.name_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME;
  r.name = "Ann";
  return &r.base;
}

/* The same old and new password: refused by the handler (INVALID_ARGUMENT)
 * once the policy let the caller in, and nobody's password changes. */
static ProtobufCMessage *b_change_password(int w) {
  static Shop__User__V1__ChangePasswordRequest r = SHOP__USER__V1__CHANGE_PASSWORD_REQUEST__INIT;
  r.old_password = PASSWORD;
  r.new_password = PASSWORD;
  return &r.base;
}

static ProtobufCMessage *b_set_role(int w) {
  static Shop__User__V1__SetRoleRequest r = SHOP__USER__V1__SET_ROLE_REQUEST__INIT;
  r.user_id = fx.user_id[CUST_A];
  r.role = SHOP__USER__V1__ROLE__ROLE_CUSTOMER; /* what A is: no change */
  return &r.base;
}

static ProtobufCMessage *b_get_user(int w) {
  static Shop__User__V1__GetUserRequest r = SHOP__USER__V1__GET_USER_REQUEST__INIT;
  r.user_id = fx.user_id[CUST_A];
  return &r.base;
}

static ProtobufCMessage *b_create_product(int w) {
  static char sku[64];
  stack_unique(sku, sizeof sku, "AZ-NEW");
  static req_product p;
  req_product_init(&p, sku, 0, 300, "EUR");
  return &p.req.base;
}

static ProtobufCMessage *b_update_product(int w) {
  static Shop__Product__V1__UpdateProductRequest r =
      SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__INIT;
  r.product_id = fx.product;
  r.name_update_case = SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__NAME_UPDATE_NAME;
  r.name = "Authz mug";
  return &r.base;
}

static ProtobufCMessage *b_archive_product(int w) {
  static Shop__Product__V1__ArchiveProductRequest r =
      SHOP__PRODUCT__V1__ARCHIVE_PRODUCT_REQUEST__INIT;
  r.product_id = fx.archived;
  return &r.base;
}

static ProtobufCMessage *b_set_price(int w) {
  static Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  static Shop__Product__V1__SetPriceRequest r = SHOP__PRODUCT__V1__SET_PRICE_REQUEST__INIT;
  price.units = 500;
  price.currency = "EUR";
  r.product_id = fx.product;
  r.price = &price;
  return &r.base;
}

static ProtobufCMessage *b_set_rule(int w) {
  static Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  static Shop__Product__V1__SetInventoryRuleRequest r =
      SHOP__PRODUCT__V1__SET_INVENTORY_RULE_REQUEST__INIT;
  rule.low_stock_threshold = 1;
  r.product_id = fx.product;
  r.inventory_rule = &rule;
  return &r.base;
}

static ProtobufCMessage *b_restock(int w) {
  static Shop__Product__V1__RestockRequest r = SHOP__PRODUCT__V1__RESTOCK_REQUEST__INIT;
  r.product_id = fx.product;
  r.quantity = 1;
  return &r.base;
}

static ProtobufCMessage *b_get_product(int w) {
  static Shop__Product__V1__GetProductRequest r = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  r.product_id = fx.product;
  return &r.base;
}

static ProtobufCMessage *b_get_products(int w) {
  static Shop__Product__V1__GetProductsRequest r = SHOP__PRODUCT__V1__GET_PRODUCTS_REQUEST__INIT;
  static char *ids[1];
  ids[0] = fx.product;
  r.n_product_ids = 1;
  r.product_ids = ids;
  return &r.base;
}

/* Archived products are for admins only. */
static ProtobufCMessage *b_list_products(int w) {
  static Shop__Product__V1__ListProductsRequest r = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  r.category = "authz";
  r.include_archived = 1;
  return &r.base;
}

static ProtobufCMessage *b_create_order(int w) { return &order_request()->base; }

/* A fresh order of A for each caller: a cancelled order stays cancelled. */
static ProtobufCMessage *b_cancel_order(int w) {
  static char id[40];
  snprintf(id, sizeof id, "%s", order_of_a(NULL));
  static Shop__Order__V1__CancelOrderRequest r = SHOP__ORDER__V1__CANCEL_ORDER_REQUEST__INIT;
  r.order_id = id;
  r.reason = "authz";
  return &r.base;
}

/* A's order is pending (no payment or inventory worker runs here): the
 * admin gets past the policy and is refused by the order's state. */
static ProtobufCMessage *b_ship_order(int w) {
  static Shop__Order__V1__ShipOrderRequest r = SHOP__ORDER__V1__SHIP_ORDER_REQUEST__INIT;
  r.order_id = fx.order;
  r.carrier = "Post";
  return &r.base;
}

static ProtobufCMessage *b_get_order(int w) {
  static Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  static Shop__Order__V1__GetOrderRequest r = SHOP__ORDER__V1__GET_ORDER_REQUEST__INIT;
  rc.token = &fx.order_token;
  rc.wait_ms = 10000;
  r.order_id = fx.order;
  r.consistency = &rc;
  return &r.base;
}

static ProtobufCMessage *b_list_by_customer(int w) {
  static Shop__Order__V1__ListOrdersByCustomerRequest r =
      SHOP__ORDER__V1__LIST_ORDERS_BY_CUSTOMER_REQUEST__INIT;
  r.customer_id = fx.user_id[CUST_A];
  return &r.base;
}

static ProtobufCMessage *b_list_by_status(int w) {
  static Shop__Order__V1__ListOrdersByStatusRequest r =
      SHOP__ORDER__V1__LIST_ORDERS_BY_STATUS_REQUEST__INIT;
  r.status = SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_PENDING;
  return &r.base;
}

/* An order the log has never seen: the admin passes and finds nothing. */
static ProtobufCMessage *b_timeline(int w) {
  static Shop__Audit__V1__GetOrderTimelineRequest r =
      SHOP__AUDIT__V1__GET_ORDER_TIMELINE_REQUEST__INIT;
  r.order_id = "00000000-0000-7000-8000-000000000000";
  return &r.base;
}

static ProtobufCMessage *b_verify(int w) {
  static Shop__Audit__V1__VerifyChainRequest r = SHOP__AUDIT__V1__VERIFY_CHAIN_REQUEST__INIT;
  r.max_rows = 10;
  return &r.base;
}

/* A rebuild replays the whole log: the admin's request is one the handler
 * refuses after the policy (max_differences out of range). */
static ProtobufCMessage *b_rebuild(int w) {
  static Shop__Audit__V1__RebuildOrderProjectionRequest r =
      SHOP__AUDIT__V1__REBUILD_ORDER_PROJECTION_REQUEST__INIT;
  r.max_differences = -1;
  return &r.base;
}

/* ---- The matrix -------------------------------------------------------------------------- */

#define OK STATUS_OK
#define UNAUTH STATUS_UNAUTHENTICATED
#define DENIED STATUS_PERMISSION_DENIED
#define NOTFOUND STATUS_NOT_FOUND
#define INVALID STATUS_INVALID_ARGUMENT
#define PRECOND STATUS_FAILED_PRECONDITION
#define UNIMPL STATUS_UNIMPLEMENTED

typedef struct row {
  const char *service; /* full name */
  const char *method;
  const char *program;       /* who serves it */
  build_fn build;            /* NULL: the empty request */
  status_code expect[N_WHO]; /* none, A, B, admin */
} row;

static const row matrix[] = {
    {"shop.user.v1.UserCommandService",
     "RegisterUser",
     "user-command",
     b_register,
     {OK, OK, OK, OK}},
    {"shop.user.v1.UserCommandService", "Login", "user-command", b_login, {OK, OK, OK, OK}},
    {"shop.user.v1.UserCommandService",
     "RefreshToken",
     "user-command",
     b_refresh,
     {OK, OK, OK, OK}},
    {"shop.user.v1.UserCommandService", "Logout", "user-command", b_logout, {OK, OK, OK, OK}},
    {"shop.user.v1.UserCommandService",
     "UpdateProfile",
     "user-command",
     b_update_profile,
     {UNAUTH, OK, DENIED, OK}},
    {"shop.user.v1.UserCommandService",
     "ChangePassword",
     "user-command",
     b_change_password,
     {UNAUTH, INVALID, INVALID, INVALID}},
    {"shop.user.v1.UserCommandService",
     "SetRole",
     "user-command",
     b_set_role,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.user.v1.UserQueryService", "GetMe", "user-query", NULL, {UNAUTH, OK, OK, OK}},
    {"shop.user.v1.UserQueryService",
     "GetUser",
     "user-query",
     b_get_user,
     {UNAUTH, OK, DENIED, OK}},
    {"shop.user.v1.UserQueryService",
     "ListUsers",
     "user-query",
     NULL,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductCommandService",
     "CreateProduct",
     "product-command",
     b_create_product,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductCommandService",
     "UpdateProduct",
     "product-command",
     b_update_product,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductCommandService",
     "ArchiveProduct",
     "product-command",
     b_archive_product,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductCommandService",
     "SetPrice",
     "product-command",
     b_set_price,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductCommandService",
     "SetInventoryRule",
     "product-command",
     b_set_rule,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductCommandService",
     "Restock",
     "product-command",
     b_restock,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.product.v1.ProductQueryService",
     "GetProduct",
     "product-query",
     b_get_product,
     {OK, OK, OK, OK}},
    {"shop.product.v1.ProductQueryService",
     "GetProducts",
     "product-query",
     b_get_products,
     {OK, OK, OK, OK}},
    {"shop.product.v1.ProductQueryService",
     "ListProducts",
     "product-query",
     b_list_products,
     {DENIED, DENIED, DENIED, OK}},
    {"shop.order.v1.OrderCommandService",
     "CreateOrder",
     "order-command",
     b_create_order,
     {UNAUTH, OK, OK, OK}},
    {"shop.order.v1.OrderCommandService",
     "CancelOrder",
     "order-command",
     b_cancel_order,
     {UNAUTH, OK, NOTFOUND, OK}},
    {"shop.order.v1.OrderCommandService",
     "ShipOrder",
     "order-command",
     b_ship_order,
     {UNAUTH, DENIED, DENIED, PRECOND}},
    {"shop.order.v1.OrderQueryService",
     "GetOrder",
     "order-query",
     b_get_order,
     {UNAUTH, OK, NOTFOUND, OK}},
    {"shop.order.v1.OrderQueryService",
     "ListOrdersByCustomer",
     "order-query",
     b_list_by_customer,
     {UNAUTH, OK, DENIED, OK}},
    {"shop.order.v1.OrderQueryService",
     "ListOrdersByStatus",
     "order-query",
     b_list_by_status,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.order.v1.OrderQueryService",
     "ListStuckOrders",
     "order-query",
     NULL,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.audit.v1.AuditQueryService",
     "ListAuditEvents",
     "audit-worker",
     NULL,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.audit.v1.AuditQueryService",
     "GetOrderTimeline",
     "audit-worker",
     b_timeline,
     {UNAUTH, DENIED, DENIED, NOTFOUND}},
    {"shop.audit.v1.AuditQueryService",
     "VerifyChain",
     "audit-worker",
     b_verify,
     {UNAUTH, DENIED, DENIED, OK}},
    {"shop.audit.v1.AuditQueryService",
     "RebuildOrderProjection",
     "audit-worker",
     b_rebuild,
     {UNAUTH, DENIED, DENIED, INVALID}},
    /* Every server answers these; asked of one. */
    {"grpc.health.v1.Health", "Check", "order-query", NULL, {OK, OK, OK, OK}},
    /* Streaming: not over REQ/REP, for anyone. */
    {"grpc.health.v1.Health", "Watch", "order-query", NULL, {UNIMPL, UNIMPL, UNIMPL, UNIMPL}},
    {"shop.rpc.v1.ServerReflectionService",
     "GetDescriptorSet",
     "order-query",
     NULL,
     {OK, OK, OK, OK}},
};
#define N_ROWS (sizeof matrix / sizeof matrix[0])

/* Services of the registry no Shop program serves. */
static const char *const not_served[] = {
    "shop.testing.v1.EchoService", /* shop-echo, the RPC layer's test server */
};

static bool is_not_served(const char *service) {
  for (size_t i = 0; i < sizeof not_served / sizeof not_served[0]; i++)
    if (strcmp(service, not_served[i]) == 0) return true;
  return false;
}

static const row *row_of(const char *service, const char *method) {
  for (size_t i = 0; i < N_ROWS; i++)
    if (strcmp(matrix[i].service, service) == 0 && strcmp(matrix[i].method, method) == 0)
      return &matrix[i];
  return NULL;
}

static const ProtobufCServiceDescriptor *service_of(const char *name) {
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++)
    if (strcmp(pbjson_service_registry[i]->name, name) == 0) return pbjson_service_registry[i];
  return NULL;
}

Test(authz, every_method_of_every_service_has_a_row) {
  size_t methods = 0;
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++) {
    const ProtobufCServiceDescriptor *d = pbjson_service_registry[i];
    if (is_not_served(d->name)) continue;
    for (unsigned k = 0; k < d->n_methods; k++, methods++)
      cr_expect_not_null(row_of(d->name, d->methods[k].name),
                         "%s/%s has no row in the authorization matrix (tests/authz)", d->name,
                         d->methods[k].name);
  }
  for (size_t i = 0; i < N_ROWS; i++)
    cr_expect_not_null(service_of(matrix[i].service), "row for unknown service %s",
                       matrix[i].service);
  cr_assert_geq(methods, N_ROWS, "rows for methods that do not exist");
}

Test(authz, every_method_answers_each_caller_as_the_matrix_says) {
  fixture();
  int failures = 0;
  for (size_t i = 0; i < N_ROWS; i++) {
    const row *r = &matrix[i];
    const ProtobufCServiceDescriptor *d = service_of(r->service);
    cr_assert_not_null(d, "%s", r->service);
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(d, r->method);
    cr_assert_not_null(m, "%s/%s", r->service, r->method);
    for (int w = 0; w < N_WHO; w++) {
      ProtobufCMessage *empty = NULL, *in;
      if (r->build != NULL) {
        in = r->build(w);
      } else {
        empty = calloc(1, m->input->sizeof_message);
        protobuf_c_message_init(m->input, empty);
        in = empty;
      }
      cr_assert_eq(in->descriptor, m->input, "%s/%s: the request type", r->service, r->method);
      ProtobufCMessage *out = NULL;
      rpc_status st;
      status_code got = stack_call(r->program, d, r->method, in, &out,
                                   w == NONE ? NULL : fx.token[w], stack_key(), &st);
      if (got != r->expect[w]) {
        failures++;
        cr_log_error("%s/%s as %s: %s (%s), expected %s", r->service, r->method, who_name[w],
                     status_name(got), st.message, status_name(r->expect[w]));
      }
      if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
      free(empty);
    }
  }
  for (size_t i = 0; i < fx.n_owned; i++)
    if (fx.owned[i] != NULL) protobuf_c_message_free_unpacked(fx.owned[i], NULL);
  cr_assert_eq(failures, 0, "%d cells of the authorization matrix differ (see above)", failures);
}
