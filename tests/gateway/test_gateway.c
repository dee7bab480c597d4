/* shop-gateway against real Shop programs (tests/support/stack.h: product, order,
 * inventory and payment programs, plus user-command, user-query,
 * audit-worker and the gateway itself), over HTTP with libcurl and raw
 * sockets: every route, every status mapping, every kind of bad input, the
 * OpenAPI document through a validator from PyPI, and the storefront in
 * headless Chromium (tests/gateway/storefront.py, screenshots in the build
 * folder). Tests run one at a time and make their own users, products and
 * orders. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/gateway.h"
#include "support/stack.h"
#include "support/wait.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

#define WAIT_MS 30000
#define STRICT_BODY 1024

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  stack_up((const char *const[]){STACK_ORDER_PROGRAMS, "user-command", "user-query", "audit-worker",
                                 "shop-gateway", NULL});
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

/* ---- HTTP ------------------------------------------------------------------------------ */

typedef struct resp {
  long code;
  char body[262144];
  size_t len;
  char headers[8192];
  size_t hlen;
  json_t *json;
} resp;

static size_t body_cb(char *p, size_t sz, size_t n, void *arg) {
  resp *r = arg;
  size_t k = sz * n;
  size_t room = sizeof r->body - 1 - r->len;
  memcpy(r->body + r->len, p, k < room ? k : room);
  r->len += k < room ? k : room;
  r->body[r->len] = '\0';
  return k;
}

static size_t header_cb(char *p, size_t sz, size_t n, void *arg) {
  resp *r = arg;
  size_t k = sz * n;
  size_t room = sizeof r->headers - 1 - r->hlen;
  memcpy(r->headers + r->hlen, p, k < room ? k : room);
  r->hlen += k < room ? k : room;
  r->headers[r->hlen] = '\0';
  return k;
}

static int gw_port = 0;

static int port(void) {
  if (gw_port == 0) gw_port = stack_cfg()->gateway.port;
  return gw_port;
}

/* One request. headers: NULL-terminated "Name: value" lines (may be
 * NULL). The reply's JSON, if any, is parsed into r->json (free with
 * resp_free). */
static void http_at(resp *r, int p, const char *method, const char *path, const char *body,
                    const char *const *headers) {
  memset(r, 0, sizeof *r);
  CURL *c = curl_easy_init();
  cr_assert_not_null(c);
  char url[2048];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", p, path);
  struct curl_slist *h = NULL;
  bool typed = false;
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
    h = curl_slist_append(h, headers[i]);
    typed = typed || strncasecmp(headers[i], "Content-Type:", 13) == 0;
  }
  if (body != NULL && !typed) h = curl_slist_append(h, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  if (body != NULL) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
  CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
  if (r->len > 0) r->json = json_loadb(r->body, r->len, 0, NULL);
}

static void http(resp *r, const char *method, const char *path, const char *body,
                 const char *const *headers) {
  http_at(r, port(), method, path, body, headers);
}

static void resp_free(resp *r) {
  json_decref(r->json);
  r->json = NULL;
}

/* The value of a reply header (case-insensitive name), or "". */
static const char *hdr(const resp *r, const char *name, char *out, size_t len) {
  out[0] = '\0';
  size_t n = strlen(name);
  for (const char *line = r->headers; *line;
       line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "") {
    if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
      const char *v = line + n + 1;
      while (*v == ' ') v++;
      size_t k = strcspn(v, "\r\n");
      snprintf(out, len, "%.*s", (int)k, v);
      return out;
    }
  }
  return out;
}

static const char *jstr(json_t *j, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL;
  for (char *k = strtok_r(buf, ".", &save); k != NULL && j != NULL; k = strtok_r(NULL, ".", &save))
    j = json_object_get(j, k);
  return json_is_string(j) ? json_string_value(j) : "";
}

static const char *err_status(const resp *r) { return jstr(r->json, "error.status"); }

/* The first field violation's field of an error reply, or "". */
static const char *violation(const resp *r) {
  json_t *d = json_object_get(json_object_get(r->json, "error"), "details");
  size_t i;
  json_t *e;
  json_array_foreach(d, i, e) {
    json_t *v = json_array_get(json_object_get(e, "fieldViolations"), 0);
    if (v != NULL) return jstr(v, "field");
  }
  return "";
}

static bool has_detail(const resp *r, const char *type) {
  json_t *d = json_object_get(json_object_get(r->json, "error"), "details");
  size_t i;
  json_t *e;
  json_array_foreach(d, i, e) if (strcmp(jstr(e, "@type"), type) == 0) return true;
  return false;
}

/* Makes the request and checks its error reply: the HTTP code, the
 * google.rpc status name and, when field is not NULL, the first field
 * violation. */
static void expect_error(int p, const char *method, const char *path, const char *body,
                         const char *const *headers, long code, const char *status,
                         const char *field) {
  resp r;
  http_at(&r, p, method, path, body, headers);
  cr_assert_eq(r.code, code, "%s %s: %ld %s", method, path, r.code, r.body);
  cr_assert_str_eq(err_status(&r), status, "%s", r.body);
  if (field != NULL) cr_assert_str_eq(violation(&r), field, "%s", r.body);
  resp_free(&r);
}

/* Headers with a bearer token and a fresh idempotency key. */
typedef struct hdrs {
  char auth[AUTH_TOKEN_MAX + 32];
  char key[96];
  const char *list[5];
} hdrs;

static const char *const *with(hdrs *h, const char *token, bool key) {
  size_t n = 0;
  if (token != NULL) {
    snprintf(h->auth, sizeof h->auth, "Authorization: Bearer %s", token);
    h->list[n++] = h->auth;
  }
  if (key) {
    char k[64];
    stack_unique(k, sizeof k, "gw");
    snprintf(h->key, sizeof h->key, "Idempotency-Key: %s", k);
    h->list[n++] = h->key;
  }
  h->list[n] = NULL;
  return h->list;
}

/* One GET of path on the gateway on p: its status code, 0 while nothing
 * answers there. */
static long status_of(int p, const char *path) {
  char url[2048];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", p, path);
  return proc_http("GET", url, 5000, NULL);
}

static void wait_ready(int p) {
  long code = 0;
  WAIT_UNTIL((code = status_of(p, "/readyz")) == 200, WAIT_MS,
             "the gateway on %d ready (/readyz answered %ld)", p, code);
}

static void gw_require(void) {
  stack_require();
  wait_ready(port());
}

TestSuite(gateway, .init = gw_require, .fini = stack_release, .timeout = 240);

/* ---- fixtures made through the gateway ------------------------------------------------- */

typedef struct user {
  char email[128], password[64], id[64], token[AUTH_TOKEN_MAX], refresh[256];
} user;

static void login(user *u) {
  char body[512];
  snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"%s\"}", u->email, u->password);
  hdrs h;
  resp r;
  http(&r, "POST", "/v1/auth:login", body, with(&h, NULL, true));
  cr_assert_eq(r.code, 200, "login %s: %s", u->email, r.body);
  snprintf(u->token, sizeof u->token, "%s", jstr(r.json, "tokens.accessToken"));
  snprintf(u->refresh, sizeof u->refresh, "%s", jstr(r.json, "tokens.refreshToken"));
  snprintf(u->id, sizeof u->id, "%s", jstr(r.json, "userId"));
  resp_free(&r);
}

static void register_user(user *u) {
  char k[64];
  stack_unique(k, sizeof k, "gwuser");
  snprintf(u->email, sizeof u->email, "%s@example.com", k);
  snprintf(u->password, sizeof u->password, "correct horse battery staple");
  char body[512];
  snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"%s\",\"name\":\"Gateway Tester\"}",
           u->email, u->password);
  hdrs h;
  resp r;
  http(&r, "POST", "/v1/users", body, with(&h, NULL, true));
  cr_assert_eq(r.code, 200, "register: %s", r.body);
  resp_free(&r);
  login(u);
}

static void admin(user *u) {
  memset(u, 0, sizeof *u);
  snprintf(u->email, sizeof u->email, "%s", stack_cfg()->auth.admin_email);
  const char *pw = stack_cfg()->auth.admin_password;
  cr_assert(pw != NULL && pw[0], "no admin password in the test config");
  snprintf(u->password, sizeof u->password, "%s", pw);
  login(u);
}

/* A product with a name that contains its SKU (so that a text search finds
 * it), created through the gateway and visible in product-query. */
static void product(const user *adm, int stock, char id[64], char sku[64]) {
  stack_unique(sku, 64, stack_run());
  char body[1024];
  snprintf(body, 1024,
           "{\"sku\":\"%s\",\"details\":{\"name\":\"Gateway mug %s\",\"description\":\"A mug\","
           "\"category\":\"kitchen\"},\"price\":{\"units\":\"1299\",\"currency\":\"EUR\"},"
           "\"initialStock\":\"%d\"}",
           sku, sku, stock);
  hdrs h;
  resp r;
  http(&r, "POST", "/v1/products", body, with(&h, adm->token, true));
  cr_assert_eq(r.code, 200, "create product: %s", r.body);
  snprintf(id, 64, "%s", jstr(r.json, "productId"));
  resp_free(&r);
  char path[256];
  snprintf(path, sizeof path,
           "/v1/products/%s?consistency.token.aggregateId=%s&consistency.token.version=1"
           "&consistency.waitMs=10000",
           id, id);
  http(&r, "GET", path, NULL, NULL);
  cr_assert_eq(r.code, 200, "product-query never saw %s: %s", id, r.body);
  resp_free(&r);
}

static void order(const user *u, const char *product_id, const char *card, char id[64]) {
  char body[1024];
  snprintf(body, sizeof body,
           "{\"lines\":[{\"productId\":\"%s\",\"quantity\":1}],\"paymentToken\":\"%s\","
           "\"shippingAddress\":{\"recipient\":\"Ada\",\"line1\":\"1 Main St\",\"city\":\"Paris\","
           "\"postalCode\":\"75001\",\"country\":\"FR\"}}",
           product_id, card);
  hdrs h;
  resp r;
  http(&r, "POST", "/v1/orders", body, with(&h, u->token, true));
  cr_assert_eq(r.code, 200, "create order: %s", r.body);
  snprintf(id, 64, "%s", jstr(r.json, "orderId"));
  resp_free(&r);
}

/* Waits (one consistency-token wait) for the order's second version and
 * returns its status name. */
static void order_settled(const user *u, const char *id, char *status, size_t len) {
  char path[512];
  snprintf(path, sizeof path,
           "/v1/orders/%s?consistency.token.aggregateId=%s&consistency.token.version=2"
           "&consistency.waitMs=20000",
           id, id);
  hdrs h;
  resp r;
  const char *xt[] = {h.auth, "X-Request-Timeout: 25S", NULL};
  with(&h, u->token, false);
  http(&r, "GET", path, NULL, xt);
  cr_assert_eq(r.code, 200, "order %s never settled: %s", id, r.body);
  snprintf(status, len, "%s", jstr(r.json, "order.status"));
  resp_free(&r);
}

/* ---- every route ------------------------------------------------------------------------ */

/* One request per route: the rpc it must reach, its path with the ids of
 * the fixtures, its body and who calls. */
typedef struct row {
  const char *rpc;
  const char *method;
  char path[512];
  char body[1024];
  const char *token;
  bool key;
} row;

Test(gateway, every_route_reaches_its_rpc_and_answers_200) {
  user adm, cust, other;
  admin(&adm);
  register_user(&cust);
  register_user(&other);
  char p1[64], sku1[64], p2[64], sku2[64], o1[64], o2[64];
  product(&adm, 50, p1, sku1);
  product(&adm, 5, p2, sku2);
  order(&cust, p1, "tok_visa", o1);
  order(&cust, p1, "tok_visa", o2);
  char st[64];
  order_settled(&cust, o2, st, sizeof st);
  cr_assert_str_eq(st, "ORDER_STATUS_CONFIRMED");
  user spare;
  register_user(&spare); /* logs out and changes its password below */

  char reg_email[96];
  stack_unique(reg_email, sizeof reg_email, "gwreg");
  row rows[40];
  size_t n = 0;
#define ROW(r_, m_, tok_, key_, body_, ...)                                                        \
  do {                                                                                             \
    rows[n].rpc = r_;                                                                              \
    rows[n].method = m_;                                                                           \
    rows[n].token = tok_;                                                                          \
    rows[n].key = key_;                                                                            \
    const char *body_p_ = body_;                                                                   \
    snprintf(rows[n].body, sizeof rows[n].body, "%s", body_p_ != NULL ? body_p_ : "");             \
    snprintf(rows[n].path, sizeof rows[n].path, __VA_ARGS__);                                      \
    n++;                                                                                           \
  } while (0)
  char b[1024];
  snprintf(b, sizeof b,
           "{\"email\":\"%s@example.com\",\"password\":\"correct horse battery\",\"name\":\"R\"}",
           reg_email);
  ROW("RegisterUser", "POST", NULL, true, b, "/v1/users");
  snprintf(b, sizeof b, "{\"email\":\"%s\",\"password\":\"%s\"}", cust.email, cust.password);
  ROW("Login", "POST", NULL, true, b, "/v1/auth:login");
  snprintf(b, sizeof b, "{\"refreshToken\":\"%s\"}", other.refresh);
  ROW("RefreshToken", "POST", NULL, true, b, "/v1/auth:refresh");
  snprintf(b, sizeof b, "{\"refreshToken\":\"%s\"}", spare.refresh);
  ROW("Logout", "POST", NULL, true, b, "/v1/auth:logout");
  ROW("UpdateProfile", "PATCH", cust.token, true, "{\"name\":\"Ada Lovelace\"}", "/v1/users/%s",
      cust.id);
  snprintf(b, sizeof b, "{\"oldPassword\":\"%s\",\"newPassword\":\"another long passphrase\"}",
           spare.password);
  ROW("ChangePassword", "POST", spare.token, true, b, "/v1/users/me:changePassword");
  ROW("SetRole", "POST", adm.token, true, "{\"role\":\"ROLE_CUSTOMER\"}", "/v1/users/%s:setRole",
      other.id);
  ROW("GetMe", "GET", cust.token, false, NULL,
      "/v1/users/me?consistency.token.aggregateId=%s&consistency.token.version=1"
      "&consistency.waitMs=10000",
      cust.id);
  ROW("GetUser", "GET", adm.token, false, NULL,
      "/v1/users/%s?consistency.token.aggregateId=%s&consistency.token.version=1"
      "&consistency.waitMs=10000",
      cust.id, cust.id);
  ROW("ListUsers", "GET", adm.token, false, NULL, "/v1/users?page.pageSize=2&role=ROLE_ADMIN");
  char sku3[64];
  stack_unique(sku3, sizeof sku3, stack_run());
  snprintf(b, sizeof b,
           "{\"sku\":\"%s\",\"details\":{\"name\":\"N\",\"description\":\"D\",\"category\":\"c\"},"
           "\"price\":{\"units\":\"100\",\"currency\":\"EUR\"},\"initialStock\":\"1\"}",
           sku3);
  ROW("CreateProduct", "POST", adm.token, true, b, "/v1/products");
  ROW("UpdateProduct", "PATCH", adm.token, true, "{\"description\":\"A large mug\"}",
      "/v1/products/%s", p1);
  ROW("ArchiveProduct", "POST", adm.token, true, "{}", "/v1/products/%s:archive", p2);
  ROW("SetPrice", "POST", adm.token, true, "{\"price\":{\"units\":\"1399\",\"currency\":\"EUR\"}}",
      "/v1/products/%s:setPrice", p1);
  ROW("SetInventoryRule", "POST", adm.token, true,
      "{\"inventoryRule\":{\"lowStockThreshold\":\"2\",\"maxQuantityPerOrder\":9}}",
      "/v1/products/%s:setInventoryRule", p1);
  ROW("Restock", "POST", adm.token, true, "{\"quantity\":\"3\",\"reference\":\"gw\"}",
      "/v1/products/%s:restock", p1);
  ROW("GetProduct", "GET", NULL, false, NULL, "/v1/products/%s", p1);
  ROW("GetProducts", "GET", NULL, false, NULL, "/v1/products:batchGet?productIds=%s&productIds=%s",
      p1, p2);
  ROW("ListProducts", "GET", NULL, false, NULL, "/v1/products?text=%s&page.pageSize=5", sku1);
  snprintf(b, sizeof b,
           "{\"lines\":[{\"productId\":\"%s\",\"quantity\":1}],\"paymentToken\":\"tok_visa\","
           "\"shippingAddress\":{\"recipient\":\"Ada\",\"line1\":\"1 Main St\",\"city\":\"Paris\","
           "\"postalCode\":\"75001\",\"country\":\"FR\"}}",
           p1);
  ROW("CreateOrder", "POST", cust.token, true, b, "/v1/orders");
  ROW("CancelOrder", "POST", cust.token, true, "{\"reason\":\"changed my mind\"}",
      "/v1/orders/%s:cancel", o1);
  ROW("ShipOrder", "POST", adm.token, true, "{\"carrier\":\"UPS\",\"trackingNumber\":\"1Z9\"}",
      "/v1/orders/%s:ship", o2);
  ROW("GetOrder", "GET", cust.token, false, NULL, "/v1/orders/%s", o1);
  ROW("ListOrdersByCustomer", "GET", cust.token, false, NULL, "/v1/customers/%s/orders", cust.id);
  ROW("ListOrdersByStatus", "GET", adm.token, false, NULL,
      "/v1/orders?status=ORDER_STATUS_SHIPPED&page.pageSize=3");
  ROW("ListStuckOrders", "GET", adm.token, false, NULL, "/v1/orders:stuck?olderThanSeconds=3600");
  ROW("ListAuditEvents", "GET", adm.token, false, NULL, "/v1/audit/events?page.pageSize=3");
  ROW("GetOrderTimeline", "GET", adm.token, false, NULL, "/v1/orders/%s/timeline", o2);
  ROW("VerifyChain", "GET", adm.token, false, NULL, "/v1/audit:verifyChain?maxRows=100");
  ROW("RebuildOrderProjection", "POST", adm.token, true, "{\"maxDifferences\":1}",
      "/v1/audit:rebuildOrderProjection");
#undef ROW

  /* Every route of the descriptor set has a row, and every row a route. */
  gateway_routes *routes;
  char err[256];
  cr_assert_eq(
      gateway_routes_load(&routes, shop_descriptor_set, shop_descriptor_set_len, err, sizeof err),
      STATUS_OK, "%s", err);
  for (size_t i = 0; i < gateway_routes_count(routes); i++) {
    const gateway_route *rt = gateway_routes_at(routes, i);
    bool found = false;
    for (size_t k = 0; k < n; k++) found = found || strcmp(rows[k].rpc, rt->rpc) == 0;
    cr_assert(found, "route %s %s (%s) has no row in this test", rt->method, rt->pattern, rt->rpc);
  }
  cr_assert_eq(n, gateway_routes_count(routes));
  gateway_routes_free(routes);

  for (size_t k = 0; k < n; k++) {
    row *w = &rows[k];
    hdrs h;
    resp r;
    /* The audit log follows the order events by a moment: its timeline is
     * NOT_FOUND until then. */
    bool done;
    WAIT_FOR(done,
             (http(&r, w->method, w->path, w->body[0] ? w->body : NULL, with(&h, w->token, w->key)),
              r.code == 200 || strcmp(w->rpc, "GetOrderTimeline") != 0 || (resp_free(&r), false)),
             WAIT_MS);
    (void)done; /* the expectation below says what came */
    cr_expect_eq(r.code, 200, "%s %s %s: %ld %s", w->rpc, w->method, w->path, r.code, r.body);
    cr_expect(json_is_object(r.json), "%s: the reply is not a JSON object: %s", w->rpc, r.body);
    resp_free(&r);
  }
}

/* ---- status mapping ------------------------------------------------------------------- */

Test(gateway, invalid_argument_is_400_with_the_field_violations) {
  resp r;
  http(&r, "GET", "/v1/products/not-an-id", NULL, NULL);
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(err_status(&r), "INVALID_ARGUMENT");
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.json, "error"), "code")), 400);
  cr_assert_str_eq(violation(&r), "product_id");
  resp_free(&r);
}

Test(gateway, unauthenticated_is_401_with_a_bearer_challenge) {
  resp r;
  char v[128];
  http(&r, "GET", "/v1/users/me", NULL, NULL);
  cr_assert_eq(r.code, 401, "%s", r.body);
  cr_assert_str_eq(err_status(&r), "UNAUTHENTICATED");
  cr_assert(strstr(hdr(&r, "WWW-Authenticate", v, sizeof v), "Bearer") != NULL);
  resp_free(&r);
  const char *basic[] = {"Authorization: Basic YWRtaW46eA==", NULL};
  http(&r, "GET", "/v1/users/me", NULL, basic);
  cr_assert_eq(r.code, 401, "%s", r.body);
  cr_assert_str_eq(violation(&r), "Authorization");
  resp_free(&r);
  const char *forged[] = {"Authorization: Bearer not.a.token", NULL};
  http(&r, "GET", "/v1/users/me", NULL, forged);
  cr_assert_eq(r.code, 401, "%s", r.body);
  resp_free(&r);
}

Test(gateway, permission_denied_is_403) {
  user cust;
  register_user(&cust);
  hdrs h;
  expect_error(port(), "GET", "/v1/users", NULL, with(&h, cust.token, false), 403,
               "PERMISSION_DENIED", NULL);
}

Test(gateway, not_found_is_404) {
  expect_error(port(), "GET", "/v1/products/01a00000-0000-7000-8000-000000000000", NULL, NULL, 404,
               "NOT_FOUND", NULL);
}

Test(gateway, already_exists_and_aborted_are_409) {
  user adm;
  admin(&adm);
  char id[64], sku[64], body[512];
  product(&adm, 1, id, sku);
  snprintf(body, sizeof body,
           "{\"sku\":\"%s\",\"details\":{\"name\":\"N\",\"description\":\"D\",\"category\":\"c\"},"
           "\"price\":{\"units\":\"100\",\"currency\":\"EUR\"}}",
           sku);
  hdrs h;
  expect_error(port(), "POST", "/v1/products", body, with(&h, adm.token, true), 409,
               "ALREADY_EXISTS", NULL);
  char path[128];
  snprintf(path, sizeof path, "/v1/products/%s", id);
  expect_error(port(), "PATCH", path, "{\"name\":\"Renamed\",\"expectedVersion\":\"99\"}",
               with(&h, adm.token, true), 409, "ABORTED", "expected_version");
}

Test(gateway, failed_precondition_is_400_and_an_unreached_consistency_token_412) {
  user cust, adm;
  admin(&adm);
  register_user(&cust);
  char p[64], sku[64], o[64], st[64];
  product(&adm, 5, p, sku);
  order(&cust, p, "tok_visa", o);
  order_settled(&cust, o, st, sizeof st);
  char path[512];
  snprintf(path, sizeof path, "/v1/orders/%s:cancel", o);
  hdrs h;
  resp r;
  const char *k1[] = {h.auth, "Idempotency-Key: gw-fp-1", NULL};
  with(&h, cust.token, false);
  http(&r, "POST", path, "{\"reason\":\"one\"}", k1);
  cr_assert_eq(r.code, 200, "%s", r.body);
  resp_free(&r);
  /* The same key with another request. */
  expect_error(port(), "POST", path, "{\"reason\":\"two\"}", k1, 400, "FAILED_PRECONDITION",
               "idempotency_key");
  /* Cancelling a cancelled order. */
  expect_error(port(), "POST", path, "{}", with(&h, cust.token, true), 400, "FAILED_PRECONDITION",
               NULL);
  snprintf(path, sizeof path,
           "/v1/orders/%s?consistency.token.aggregateId=%s&consistency.token.version=99"
           "&consistency.waitMs=100",
           o, o);
  http(&r, "GET", path, NULL, with(&h, cust.token, false));
  cr_assert_eq(r.code, 412, "%s", r.body);
  cr_assert_str_eq(err_status(&r), "FAILED_PRECONDITION");
  cr_assert(has_detail(&r, "type.googleapis.com/google.rpc.PreconditionFailure"), "%s", r.body);
  resp_free(&r);
}

Test(gateway, resource_exhausted_is_429_with_retry_after) {
  user u;
  register_user(&u);
  char body[256], ra[32];
  snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"wrong password!\"}", u.email);
  hdrs h;
  resp r = {0};
  bool throttled = false;
  for (int i = 0; i < stack_cfg()->auth.login_max_failures + 2 && !throttled; i++) {
    resp_free(&r);
    http(&r, "POST", "/v1/auth:login", body, with(&h, NULL, true));
    throttled = r.code == 429;
  }
  cr_assert(throttled, "no 429 after repeated failures: %ld %s", r.code, r.body);
  cr_assert_str_eq(err_status(&r), "RESOURCE_EXHAUSTED");
  cr_assert(atoi(hdr(&r, "Retry-After", ra, sizeof ra)) >= 1, "Retry-After: '%s'", ra);
  cr_assert(has_detail(&r, "type.googleapis.com/google.rpc.RetryInfo"), "%s", r.body);
  resp_free(&r);
}

Test(gateway, deadline_exceeded_is_504_and_a_bad_timeout_400) {
  user adm, cust;
  admin(&adm);
  register_user(&cust);
  char p[64], sku[64], o[64];
  product(&adm, 5, p, sku);
  order(&cust, p, "tok_visa", o);
  char path[512];
  /* A wait for a version that never comes, on a budget of 1 ms (a longer
   * budget ends the wait itself first: 412). */
  snprintf(path, sizeof path,
           "/v1/orders/%s?consistency.token.aggregateId=%s&consistency.token.version=99"
           "&consistency.waitMs=5000",
           o, o);
  hdrs h;
  resp r;
  const char *xt[] = {h.auth, "X-Request-Timeout: 1m", NULL};
  with(&h, cust.token, false);
  int64_t t0 = wait_now_ms();
  http(&r, "GET", path, NULL, xt);
  cr_assert_eq(r.code, 504, "%s", r.body);
  cr_assert_str_eq(err_status(&r), "DEADLINE_EXCEEDED");
  cr_assert_lt(wait_now_ms() - t0, 4000);
  resp_free(&r);
  const char *bad[] = {"X-Request-Timeout: soon", NULL};
  http(&r, "GET", "/v1/products", NULL, bad);
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "X-Request-Timeout");
  resp_free(&r);
}

/* A second gateway with small limits and a backend that is not there. */
static proc *strict_gateway(int *p) {
  *p = proc_free_tcp_port();
  cr_assert_gt(*p, 0);
  char portv[64], nowhere[96];
  snprintf(portv, sizeof portv, "SHOP_GATEWAY__PORT=%d", *p);
  snprintf(nowhere, sizeof nowhere, "SHOP_ENDPOINTS__AUDIT_QUERY=tcp://127.0.0.1:%d",
           proc_free_tcp_port());
  char body[64];
  snprintf(body, sizeof body, "SHOP_GATEWAY__MAX_BODY_BYTES=%d", STRICT_BODY);
  const char *env[] = {portv,
                       nowhere,
                       body,
                       "SHOP_GATEWAY__MAX_CONNECTIONS=2",
                       "SHOP_GATEWAY__CONNECTION_TIMEOUT_S=2",
                       "SHOP_RPC__RETRY_MAX=1",
                       NULL};
  /* Its /readyz stays 503 (a backend is missing): it is started once its
   * HTTP port answers. */
  proc *g = stack_start_with("shop-gateway", &(stack_opts){.env = env, .no_wait = true});
  long code = 0;
  WAIT_UNTIL((code = status_of(*p, "/livez")) == 200, WAIT_MS,
             "the second gateway answering on %d (/livez: %ld)", *p, code);
  return g;
}

Test(gateway, unavailable_is_503_and_readyz_names_the_backend) {
  int p;
  proc *g = strict_gateway(&p);
  user adm;
  admin(&adm);
  hdrs h;
  resp r;
  expect_error(p, "GET", "/v1/audit/events", NULL, with(&h, adm.token, false), 503, "UNAVAILABLE",
               NULL);
  http_at(&r, p, "GET", "/readyz", NULL, NULL);
  cr_assert_eq(r.code, 503, "%s", r.body);
  cr_assert(strstr(r.body, "no connection to tcp://127.0.0.1:") != NULL, "%s", r.body);
  resp_free(&r);
  /* The other backends still serve (once the gateway has seen the two
   * connections above close: it allows two at a time, and a close reaches
   * it after the client has moved on). */
  long code = 0;
  WAIT_UNTIL((code = status_of(p, "/v1/products?page.pageSize=1")) == 200, 5000,
             "products served beside the missing backend (last: %ld)", code);
  cr_assert_eq(stack_stop(g), 0);
}

/* ---- bad HTTP input --------------------------------------------------------------------- */

Test(gateway, a_body_over_the_limit_is_413_and_is_not_read) {
  int p;
  proc *g = strict_gateway(&p);
  char big[STRICT_BODY * 4];
  memset(big, ' ', sizeof big - 3);
  big[0] = '{';
  big[sizeof big - 3] = '}';
  big[sizeof big - 2] = '\0';
  hdrs h;
  resp r;
  http_at(&r, p, "POST", "/v1/auth:login", big, with(&h, NULL, true));
  cr_assert_eq(r.code, 413, "%s", r.body);
  cr_assert_str_eq(violation(&r), "body");
  resp_free(&r);
  /* Chunked, so the size is known only while reading. */
  const char *chunked[] = {"Transfer-Encoding: chunked", h.key, NULL};
  http_at(&r, p, "POST", "/v1/auth:login", big, chunked);
  cr_assert_eq(r.code, 413, "%s", r.body);
  resp_free(&r);
  cr_assert_eq(stack_stop(g), 0);
}

Test(gateway, malformed_json_is_400_with_its_position) {
  hdrs h;
  resp r;
  http(&r, "POST", "/v1/auth:login", "{\n  \"email\": \"a@b.c\",\n  \"password\" \"x\"\n}",
       with(&h, NULL, true));
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "body");
  cr_assert(strstr(jstr(r.json, "error.message"), "line 3, column") != NULL, "%s", r.body);
  resp_free(&r);
  http(&r, "POST", "/v1/auth:login", "[1,2]", with(&h, NULL, true));
  cr_assert_eq(r.code, 400, "%s", r.body);
  resp_free(&r);
}

Test(gateway, unknown_fields_and_parameters_are_400) {
  hdrs h;
  resp r;
  http(&r, "POST", "/v1/auth:login", "{\"emial\":\"a@b.c\"}", with(&h, NULL, true));
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "emial");
  resp_free(&r);
  http(&r, "GET", "/v1/products?colour=red", NULL, NULL);
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "colour");
  resp_free(&r);
  http(&r, "GET", "/v1/products?page.pageSize=ten", NULL, NULL);
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "page.page_size");
  resp_free(&r);
  http(&r, "GET", "/v1/products/x?productId=y", NULL, NULL);
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "productId");
  resp_free(&r);
  http(&r, "GET", "/v1/products", "{}", NULL);
  cr_assert_eq(r.code, 400, "a GET route takes no body: %s", r.body);
  resp_free(&r);
}

Test(gateway, a_body_that_is_not_json_is_415) {
  resp r;
  const char *text[] = {"Content-Type: text/plain", "Idempotency-Key: gw-415", NULL};
  http(&r, "POST", "/v1/auth:login", "email=a@b.c", text);
  cr_assert_eq(r.code, 415, "%s", r.body);
  cr_assert_str_eq(violation(&r), "Content-Type");
  resp_free(&r);
}

Test(gateway, unknown_paths_are_404_and_wrong_methods_405_with_allow) {
  resp r;
  char allow[64];
  expect_error(port(), "GET", "/v1/nothing/here", NULL, NULL, 404, "NOT_FOUND", NULL);
  http(&r, "DELETE", "/v1/products", NULL, NULL);
  cr_assert_eq(r.code, 405, "%s", r.body);
  hdr(&r, "Allow", allow, sizeof allow);
  cr_assert(strstr(allow, "GET") && strstr(allow, "POST"), "Allow: %s", allow);
  resp_free(&r);
}

static int dial(int p) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

typedef struct sock_read {
  int fd;
  char *buf;
  size_t len, n;
  bool closed;
} sock_read;

/* Takes what comes within 100 ms of the last bytes; true once the peer
 * closed or buf is full. */
static bool read_some(sock_read *s) {
  struct pollfd pf = {.fd = s->fd, .events = POLLIN};
  while (s->n + 1 < s->len && poll(&pf, 1, 100) > 0) {
    ssize_t k = recv(s->fd, s->buf + s->n, s->len - 1 - s->n, 0);
    if (k <= 0) {
      s->closed = true;
      break;
    }
    s->n += (size_t)k;
  }
  s->buf[s->n] = '\0';
  return s->closed || s->n + 1 >= s->len;
}

/* Reads until the peer closes or ms pass; returns what came (NUL-ended). */
static size_t read_until_closed(int fd, char *buf, size_t len, int ms, bool *closed) {
  sock_read s = {.fd = fd, .buf = buf, .len = len};
  buf[0] = '\0';
  bool done;
  WAIT_FOR(done, read_some(&s), ms);
  (void)done; /* *closed says */
  *closed = s.closed;
  return s.n;
}

Test(gateway, a_stalled_client_is_cut_off_and_too_many_connections_get_503) {
  int p;
  proc *g = strict_gateway(&p);
  /* Half a request, then nothing: closed after connection_timeout_s (2). */
  int slow = dial(p);
  const char *half = "GET /v1/products HTTP/1.1\r\nHost: x\r\n";
  cr_assert_eq(send(slow, half, strlen(half), 0), (ssize_t)strlen(half));
  char buf[4096];
  bool closed;
  int64_t t0 = wait_now_ms();
  read_until_closed(slow, buf, sizeof buf, 8000, &closed);
  cr_assert(closed, "a stalled connection stayed open 8 s");
  cr_assert_geq(wait_now_ms() - t0, 1500);
  close(slow);

  /* max_connections is 2: the third gets a 503 in JSON and is closed. */
  int a = dial(p), b = dial(p), c = dial(p);
  const char *get = "GET /v1/products HTTP/1.1\r\nHost: x\r\n\r\n";
  cr_assert_eq(send(c, get, strlen(get), 0), (ssize_t)strlen(get));
  read_until_closed(c, buf, sizeof buf, 5000, &closed);
  cr_assert(strncmp(buf, "HTTP/1.1 503", 12) == 0, "%s", buf);
  cr_assert(strstr(buf, "\"UNAVAILABLE\"") != NULL && strstr(buf, "too many connections"), "%s",
            buf);
  cr_assert(strstr(buf, "Retry-After:") != NULL, "%s", buf);
  cr_assert(closed, "the connection over the limit stayed open");
  close(a);
  close(b);
  close(c);
  /* Once they are gone, a new one is served. */
  long code = 0;
  WAIT_UNTIL((code = status_of(p, "/v1/products?page.pageSize=1")) == 200, 5000,
             "a connection served after the others closed (last: %ld)", code);
  cr_assert_eq(stack_stop(g), 0);
}

/* ---- headers ---------------------------------------------------------------------------- */

Test(gateway, traceparent_continues_and_comes_back_with_the_request_id) {
  resp r;
  char tp[128], rid[96];
  const char *in[] = {"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                      "X-Request-Id: gw-trace-1", NULL};
  http(&r, "GET", "/v1/products?page.pageSize=1", NULL, in);
  cr_assert_eq(r.code, 200, "%s", r.body);
  hdr(&r, "traceparent", tp, sizeof tp);
  cr_assert(strncmp(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36) == 0, "traceparent: %s", tp);
  cr_assert(strstr(tp, "00f067aa0ba902b7") == NULL, "the gateway's span is its own: %s", tp);
  cr_assert_str_eq(hdr(&r, "X-Request-Id", rid, sizeof rid), "gw-trace-1");
  resp_free(&r);
  http(&r, "GET", "/v1/products?page.pageSize=1", NULL, NULL);
  hdr(&r, "traceparent", tp, sizeof tp);
  cr_assert_eq(strlen(tp), 55, "a new trace: %s", tp);
  cr_assert_neq(hdr(&r, "X-Request-Id", rid, sizeof rid)[0], '\0');
  resp_free(&r);
}

Test(gateway, commands_need_an_idempotency_key_and_a_repeat_replays) {
  user cust;
  register_user(&cust);
  hdrs h;
  resp r;
  char path[128], first[sizeof((resp *)0)->body];
  snprintf(path, sizeof path, "/v1/users/%s", cust.id);
  http(&r, "PATCH", path, "{\"name\":\"No Key\"}", with(&h, cust.token, false));
  cr_assert_eq(r.code, 400, "%s", r.body);
  cr_assert_str_eq(violation(&r), "idempotency_key");
  resp_free(&r);
  with(&h, cust.token, true);
  http(&r, "PATCH", path, "{\"name\":\"Keyed\"}", h.list);
  cr_assert_eq(r.code, 200, "%s", r.body);
  snprintf(first, sizeof first, "%s", r.body);
  resp_free(&r);
  http(&r, "PATCH", path, "{\"name\":\"Keyed\"}", h.list);
  cr_assert_eq(r.code, 200, "%s", r.body);
  cr_assert_str_eq(r.body, first, "a repeat returns the first reply");
  resp_free(&r);
}

/* ---- OpenAPI and the storefront ------------------------------------------------------ */

static void venv_python(char *out, size_t len) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "%s/scripts/deps.sh --print-venv", SHOP_SOURCE_DIR);
  FILE *f = popen(cmd, "r");
  cr_assert_not_null(f);
  char dir[1024] = "";
  cr_assert_not_null(fgets(dir, sizeof dir, f));
  pclose(f);
  dir[strcspn(dir, "\n")] = '\0';
  snprintf(out, len, "%s/bin/python", dir);
  cr_assert_eq(access(out, X_OK), 0, "no venv python at %s (run scripts/deps.sh)", out);
}

static void build_dir(char *out, size_t len) {
  const char *b = getenv("SHOP_BUILD_DIR");
  snprintf(out, len, "%s", b != NULL && b[0] ? b : "/tmp");
}

Test(gateway, openapi_json_lists_every_route_and_passes_a_validator) {
  resp r;
  http(&r, "GET", "/openapi.json", NULL, NULL);
  cr_assert_eq(r.code, 200);
  cr_assert_str_eq(jstr(r.json, "openapi"), "3.1.0");
  json_t *paths = json_object_get(r.json, "paths");
  gateway_routes *routes;
  char err[256];
  cr_assert_eq(
      gateway_routes_load(&routes, shop_descriptor_set, shop_descriptor_set_len, err, sizeof err),
      STATUS_OK);
  for (size_t i = 0; i < gateway_routes_count(routes); i++) {
    const gateway_route *rt = gateway_routes_at(routes, i);
    char m[8];
    size_t k = 0;
    for (; rt->method[k]; k++) m[k] = (char)(rt->method[k] | 0x20);
    m[k] = '\0';
    cr_assert_not_null(json_object_get(json_object_get(paths, rt->pattern), m), "%s %s missing",
                       rt->method, rt->pattern);
  }
  gateway_routes_free(routes);
  char dir[1024], file[1100], py[1100];
  build_dir(dir, sizeof dir);
  snprintf(file, sizeof file, "%s/openapi-served.json", dir);
  FILE *f = fopen(file, "w");
  cr_assert_not_null(f);
  fwrite(r.body, 1, r.len, f);
  fclose(f);
  resp_free(&r);
  venv_python(py, sizeof py);
  char logp[1200], out[4096];
  snprintf(logp, sizeof logp, "%s/openapi-validate.log", dir);
  const char *argv[] = {"-c",
                        "import sys\n"
                        "from openapi_spec_validator import validate\n"
                        "from openapi_spec_validator.readers import read_from_filename\n"
                        "d, _ = read_from_filename(sys.argv[1])\n"
                        "validate(d)\n"
                        "print('openapi: valid', d['openapi'], len(d['paths']), 'paths')\n",
                        file, NULL};
  proc_opts o = {.path = py, .argv = argv, .log_path = logp};
  int code = -1;
  cr_assert_eq(proc_run(&o, 60000, &code, out, sizeof out, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(code, 0, "the validator refused the document:\n%s", out);
  cr_assert(strstr(out, "openapi: valid 3.1.0") != NULL, "%s", out);
}

Test(gateway, the_storefront_in_chromium_logs_in_orders_and_sees_confirmed, .timeout = 300) {
  user adm, cust;
  admin(&adm);
  register_user(&cust);
  char p[64], sku[64];
  product(&adm, 20, p, sku);
  char py[1100], dir[1024], shots[1100], logp[1200], script[1200], url[64], out[16384], err[256];
  venv_python(py, sizeof py);
  build_dir(dir, sizeof dir);
  snprintf(shots, sizeof shots, "%s/storefront-screenshots", dir);
  snprintf(logp, sizeof logp, "%s/storefront-test.log", dir);
  snprintf(script, sizeof script, "%s/tests/gateway/storefront.py", SHOP_SOURCE_DIR);
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port());
  const char *argv[] = {script,       "--url",         url,           "--email",
                        cust.email,   "--password",    cust.password, "--sku",
                        sku,          "--admin-email", adm.email,     "--admin-password",
                        adm.password, "--shots",       shots,         NULL};
  proc_opts o = {.path = py, .argv = argv, .log_path = logp};
  int code = -1;
  cr_assert_eq(proc_run(&o, 240000, &code, out, sizeof out, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(code, 0, "the browser steps failed (screenshots in %s):\n%s", shots, out);
  cr_assert(strstr(out, "storefront: all steps passed") != NULL, "%s", out);
  char shot[1300];
  snprintf(shot, sizeof shot, "%s/04-confirmed.png", shots);
  cr_assert_eq(access(shot, R_OK), 0, "no screenshot %s", shot);
}
