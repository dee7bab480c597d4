/* shopctl seed: the demo data of `make run`, made through the ordinary
 * command path (the admin logs in; RegisterUser and CreateProduct run with
 * their events), so that the read models, the audit log and the inventory
 * see it like anything a user does. Idempotent: a fixed idempotency key per
 * item, and an item that already exists (ALREADY_EXISTS, e.g. once the key
 * has been purged) is looked up instead. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "events/events.h"
#include "rpc/rpc.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

#define SEED_TIMEOUT_MS 15000

/* The demo catalog: a few products with stock and low-stock alerts. */
static const struct seed_product {
  const char *sku, *name, *description, *category;
  int64_t price, stock, low_stock;
  int32_t max_per_order;
} seed_products[] = {
    {"DEMO-MUG", "Shop mug", "A 330 ml stoneware mug with the Shop logo.", "kitchen", 1299, 25, 5,
     5},
    {"DEMO-TEE", "Shop T-shirt", "Organic cotton, unisex, size M.", "apparel", 1999, 40, 8, 3},
    {"DEMO-BOOK", "C11 in practice", "A paperback on writing modern C.", "books", 3450, 10, 3, 2},
    {"DEMO-STICKERS", "Sticker pack", "Ten vinyl stickers.", "misc", 399, 200, 20, 20},
};

typedef struct seed_ctx {
  const shop_cfg *cfg;
  rpc_client *user, *product, *query;
  char token[4096]; /* the admin's access token */
  FILE *out;
} seed_ctx;

static rpc_client *seed_client(const shop_cfg *cfg, const char *url) {
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, cfg, url, "shopctl-seed");
  if (o.max_timeout_ms < SEED_TIMEOUT_MS) o.max_timeout_ms = SEED_TIMEOUT_MS;
  rpc_client *c = NULL;
  char err[STATUS_ERRBUF_SIZE];
  if (rpc_client_create(&c, &o, err, sizeof err) != STATUS_OK) {
    fprintf(stderr, "ERROR: %s: %s\n", url, err);
    return NULL;
  }
  rpc_client_wait_connected(c, 5000);
  return c;
}

static status_code seed_call(rpc_client *c, const ProtobufCServiceDescriptor *svc,
                             const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                             const char *token, const char *key, rpc_status *st) {
  rpc_call_opts o = {.timeout_ms = SEED_TIMEOUT_MS, .token = token, .idempotency_key = key};
  return rpc_client_call_sync(c, svc, method, in, out, &o, st);
}

static int seed_fail(const char *what, const rpc_status *st) {
  fprintf(stderr, "ERROR: %s: %s: %s\n", what, status_name(st->code),
          st->message[0] ? st->message : status_text(st->code));
  return status_exit_code(st->code);
}

static int seed_customer(seed_ctx *s, const char *email, const char *password) {
  Shop__User__V1__RegisterUserRequest req = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  req.email = (char *)email;
  req.password = (char *)password;
  req.name = "Demo Customer";
  char key[300];
  snprintf(key, sizeof key, "demo-seed/customer/%s", email);
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  status_code rc = seed_call(s->user, &shop__user__v1__user_command_service__descriptor,
                             "RegisterUser", &req.base, &resp, NULL, key, &st);
  if (rc == STATUS_OK) {
    fprintf(s->out, "customer %s %s\n", email,
            ((Shop__User__V1__RegisterUserResponse *)resp)->user_id);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
  }
  if (rc == STATUS_ALREADY_EXISTS) {
    fprintf(s->out, "customer %s already-registered\n", email);
    return 0;
  }
  return seed_fail("RegisterUser", &st);
}

/* The id of the product with this SKU, found by its name (every page);
 * false if none. */
static bool seed_find(seed_ctx *s, const struct seed_product *p, const char *sku, char id[64]) {
  Shop__Product__V1__ListProductsRequest req = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  char token[1024] = "";
  page.page_size = 100;
  page.page_token = token;
  req.page = &page;
  req.text = (char *)p->name;
  req.include_archived = true;
  bool found = false, more = true;
  for (int pages = 0; !found && more && pages < 1000; pages++) {
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    if (seed_call(s->query, &shop__product__v1__product_query_service__descriptor, "ListProducts",
                  &req.base, &resp, s->token, NULL, &st) != STATUS_OK)
      return false;
    Shop__Product__V1__ListProductsResponse *r = (Shop__Product__V1__ListProductsResponse *)resp;
    for (size_t i = 0; i < r->n_products && !found; i++)
      if (strcasecmp(r->products[i]->sku, sku) == 0) {
        snprintf(id, 64, "%s", r->products[i]->product_id);
        found = true;
      }
    more = r->page != NULL && r->page->next_page_token[0] != '\0' &&
           strlen(r->page->next_page_token) < sizeof token;
    if (more) snprintf(token, sizeof token, "%s", r->page->next_page_token);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  return found;
}

/* Waits (bounded) until product-query has the product, so that the
 * catalog lists it when seed returns. */
static void seed_wait_listed(seed_ctx *s, const Shop__Common__V1__ConsistencyToken *t) {
  Shop__Product__V1__GetProductRequest req = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = (Shop__Common__V1__ConsistencyToken *)t;
  rc.wait_ms = 10000;
  req.product_id = t->aggregate_id;
  req.consistency = &rc;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  if (seed_call(s->query, &shop__product__v1__product_query_service__descriptor, "GetProduct",
                &req.base, &resp, NULL, NULL, &st) == STATUS_OK)
    protobuf_c_message_free_unpacked(resp, NULL);
  else
    fprintf(stderr, "warning: product-query has not listed %s yet: %s\n", t->aggregate_id,
            st.message);
}

static int seed_product(seed_ctx *s, const struct seed_product *p, const char *prefix) {
  char sku[128], key[300], id[64] = "";
  snprintf(sku, sizeof sku, "%s%s", prefix, p->sku);
  snprintf(key, sizeof key, "demo-seed/product/%s", sku);
  Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  Shop__Product__V1__ProductDetails d = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money m = SHOP__COMMON__V1__MONEY__INIT;
  Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  d.name = (char *)p->name;
  d.description = (char *)p->description;
  d.category = (char *)p->category;
  m.units = p->price;
  m.currency = s->cfg->catalog.currency;
  rule.low_stock_threshold = p->low_stock;
  rule.max_quantity_per_order = p->max_per_order;
  req.sku = sku;
  req.details = &d;
  req.price = &m;
  req.initial_stock = p->stock;
  req.inventory_rule = &rule;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  status_code rc = seed_call(s->product, &shop__product__v1__product_command_service__descriptor,
                             "CreateProduct", &req.base, &resp, s->token, key, &st);
  if (rc == STATUS_OK) {
    Shop__Product__V1__CreateProductResponse *r = (Shop__Product__V1__CreateProductResponse *)resp;
    snprintf(id, sizeof id, "%s", r->product_id);
    if (r->consistency != NULL) seed_wait_listed(s, r->consistency);
    protobuf_c_message_free_unpacked(resp, NULL);
  } else if (rc != STATUS_ALREADY_EXISTS) {
    return seed_fail("CreateProduct", &st);
  } else if (!seed_find(s, p, sku, id)) {
    fprintf(stderr, "ERROR: product %s exists but ListProducts does not show it\n", sku);
    return status_exit_code(STATUS_NOT_FOUND);
  }
  fprintf(s->out,
          "product %s %s \"%s\" %" PRId64 ".%02" PRId64 " %s, initial stock %" PRId64
          ", low-stock alert below %" PRId64 ", at most %d per order\n",
          sku, id, p->name, p->price / 100, p->price % 100, s->cfg->catalog.currency, p->stock,
          p->low_stock, p->max_per_order);
  return 0;
}

static int seed_login_admin(seed_ctx *s) {
  const char *email = s->cfg->auth.admin_email, *pw = s->cfg->auth.admin_password;
  if (email == NULL || email[0] == '\0' || pw == NULL || pw[0] == '\0') {
    fprintf(stderr,
            "ERROR: INVALID_ARGUMENT: the config names no first admin "
            "(auth.admin_email, auth.admin_password_file)\n");
    return status_exit_code(STATUS_INVALID_ARGUMENT);
  }
  Shop__User__V1__LoginRequest req = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  req.email = (char *)email;
  req.password = (char *)pw;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  char key[EVENTS_ID_SIZE];
  events_uuid_v7(key); /* a fresh login each time */
  if (seed_call(s->user, &shop__user__v1__user_command_service__descriptor, "Login", &req.base,
                &resp, NULL, key, &st) != STATUS_OK)
    return seed_fail("admin Login", &st);
  Shop__User__V1__LoginResponse *r = (Shop__User__V1__LoginResponse *)resp;
  int code = 0;
  if (r->tokens == NULL || strlen(r->tokens->access_token) >= sizeof s->token)
    code = status_exit_code(STATUS_INTERNAL);
  else
    snprintf(s->token, sizeof s->token, "%s", r->tokens->access_token);
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

int cli_seed(const shop_cfg *cfg, const char *email, const char *password, const char *sku_prefix,
             FILE *out) {
  seed_ctx s = {.cfg = cfg, .out = out};
  int code = 0;
  s.user = seed_client(cfg, cfg->endpoints.user_command);
  s.product = seed_client(cfg, cfg->endpoints.product_command);
  s.query = seed_client(cfg, cfg->endpoints.product_query);
  if (s.user == NULL || s.product == NULL || s.query == NULL) {
    code = status_exit_code(STATUS_UNAVAILABLE);
    goto out;
  }
  code = seed_login_admin(&s);
  if (code == 0) code = seed_customer(&s, email, password);
  for (size_t i = 0; code == 0 && i < sizeof seed_products / sizeof seed_products[0]; i++)
    code = seed_product(&s, &seed_products[i], sku_prefix ? sku_prefix : "");
out:
  memset(s.token, 0, sizeof s.token);
  rpc_client_destroy(s.user);
  rpc_client_destroy(s.product);
  rpc_client_destroy(s.query);
  return code;
}
