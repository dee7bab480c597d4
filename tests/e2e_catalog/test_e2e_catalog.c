/* The users and the catalog together, as a shop's first customers meet
 * them: the four programs (user-command, user-query, product-command,
 * product-query) as real processes over the real RPC layer, Kafka and
 * MariaDB. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"
#include "shop/user/v1/queries.pb-c.h"
#include "support/stack.h"

#define UCMD_SVC (&shop__user__v1__user_command_service__descriptor)
#define UQRY_SVC (&shop__user__v1__user_query_service__descriptor)
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define PASSWORD "first customer's passphrase"
#define NEW_PASSWORD "second customer's passphrase"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  static const char *const programs[] = {"user-command", "user-query", "product-command",
                                         "product-query", NULL};
  stack_up(programs);
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

TestSuite(e2e_catalog, .init = stack_require, .fini = stack_release, .timeout = 90);

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

static status_code create_product(const char *token, const char *sku, const char *name,
                                  const char *category,
                                  Shop__Product__V1__CreateProductResponse **out, rpc_status *st) {
  Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  Shop__Product__V1__ProductDetails d = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  d.name = (char *)name;
  d.description = "Hand-thrown stoneware.";
  d.category = (char *)category;
  price.units = 2450;
  price.currency = "EUR";
  req.sku = (char *)sku;
  req.details = &d;
  req.price = &price;
  req.initial_stock = 12;
  return stack_call("product-command", PCMD_SVC, "CreateProduct", &req.base,
                    (ProtobufCMessage **)out, token, stack_key(), st);
}

Test(e2e_catalog, a_customer_registers_browses_is_refused_the_catalog_then_promoted) {
  rpc_status st;
  char u[96], email[160], sku[96], cat[96], word[96], name[200];
  stack_unique(u, sizeof u, "first");
  snprintf(email, sizeof email, "%s@e2e.shop.test", u);
  stack_unique(sku, sizeof sku, "SKU");
  stack_unique(cat, sizeof cat, "pottery");
  stack_unique(word, sizeof word, "glaze");
  snprintf(name, sizeof name, "Mug with %s", word);

  /* A customer registers and reads their own profile right away. */
  Shop__User__V1__RegisterUserRequest reg = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  reg.email = email;
  reg.password = PASSWORD;
  reg.name = "First Customer";
  Shop__User__V1__RegisterUserResponse *rr = NULL;
  cr_assert_eq(stack_call("user-command", UCMD_SVC, "RegisterUser", &reg.base,
                          (ProtobufCMessage **)&rr, NULL, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  Shop__User__V1__LoginResponse *cust = stack_login(email, PASSWORD);
  Shop__User__V1__GetMeRequest me = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = rr->consistency;
  rc.wait_ms = 10000;
  me.consistency = &rc;
  Shop__User__V1__GetMeResponse *mer = NULL;
  cr_assert_eq(stack_call("user-query", UQRY_SVC, "GetMe", &me.base, (ProtobufCMessage **)&mer,
                          cust->tokens->access_token, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_str_eq(mer->user->email, email);

  /* The customer may not write the catalog. */
  cr_assert_eq(create_product(cust->tokens->access_token, sku, name, cat, NULL, &st),
               STATUS_PERMISSION_DENIED);

  /* The admin may; anyone finds the product, without a token. */
  char pw[256];
  stack_admin_password(pw, sizeof pw);
  Shop__User__V1__LoginResponse *admin = stack_login("admin@shop.test", pw);
  Shop__Product__V1__CreateProductResponse *cp = NULL;
  cr_assert_eq(create_product(admin->tokens->access_token, sku, name, cat, &cp, &st), STATUS_OK,
               "%s", st.message);
  Shop__Product__V1__ListProductsRequest lp = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency prc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  prc.token = cp->consistency;
  prc.wait_ms = 10000;
  lp.consistency = &prc;
  lp.category = cat;
  lp.text = word;
  Shop__Product__V1__ListProductsResponse *lpr = NULL;
  cr_assert_eq(stack_call("product-query", PQRY_SVC, "ListProducts", &lp.base,
                          (ProtobufCMessage **)&lpr, NULL, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(lpr->n_products, 1);
  cr_assert_str_eq(lpr->products[0]->product_id, cp->product_id);
  cr_assert_eq(lpr->products[0]->stock->available, 12);

  /* Promoted, the customer's old session is gone; a new login carries the
   * admin role, which product-command honours. */
  Shop__User__V1__SetRoleRequest sr = SHOP__USER__V1__SET_ROLE_REQUEST__INIT;
  sr.user_id = rr->user_id;
  sr.role = SHOP__USER__V1__ROLE__ROLE_ADMIN;
  cr_assert_eq(stack_call("user-command", UCMD_SVC, "SetRole", &sr.base, NULL,
                          admin->tokens->access_token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  Shop__User__V1__RefreshTokenRequest rt = SHOP__USER__V1__REFRESH_TOKEN_REQUEST__INIT;
  rt.refresh_token = cust->tokens->refresh_token;
  cr_assert_eq(
      stack_call("user-command", UCMD_SVC, "RefreshToken", &rt.base, NULL, NULL, stack_key(), &st),
      STATUS_UNAUTHENTICATED);
  Shop__User__V1__LoginResponse *promoted = stack_login(email, PASSWORD);
  cr_assert_eq(promoted->role, SHOP__USER__V1__ROLE__ROLE_ADMIN);
  char sku2[96];
  stack_unique(sku2, sizeof sku2, "SKU");
  cr_assert_eq(create_product(promoted->tokens->access_token, sku2, "Second mug", cat, NULL, &st),
               STATUS_OK, "%s", st.message);

  free_msg(promoted);
  free_msg(lpr);
  free_msg(cp);
  free_msg(admin);
  free_msg(mer);
  free_msg(cust);
  free_msg(rr);
}

/* True when needle occurs in the n bytes at hay. */
static bool contains(const void *hay, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; k <= n && i + k <= n; i++)
    if (memcmp((const char *)hay + i, needle, k) == 0) return true;
  return false;
}

/* The records of one user, looked through for secrets. */
typedef struct secret_scan {
  const char *key;
  const char *secrets[6];
  int mine;
} secret_scan;

static void scan_cb(const void *msg, void *arg) {
  const rd_kafka_message_t *m = msg;
  secret_scan *s = arg;
  if (m->key_len != strlen(s->key) || memcmp(m->key, s->key, m->key_len) != 0) return;
  s->mine++;
  rd_kafka_headers_t *hs = NULL;
  rd_kafka_message_headers(m, &hs);
  for (size_t k = 0; k < sizeof s->secrets / sizeof s->secrets[0]; k++) {
    cr_assert_not(contains(m->payload, m->len, s->secrets[k]), "a secret in a value");
    const char *name;
    const void *val;
    size_t len;
    for (size_t h = 0; hs != NULL && rd_kafka_header_get_all(hs, h, &name, &val, &len) ==
                                         RD_KAFKA_RESP_ERR_NO_ERROR;
         h++)
      cr_assert_not(contains(val, len, s->secrets[k]), "a secret in header %s", name);
  }
}

Test(e2e_catalog, user_events_carry_no_password_hash_or_token) {
  rpc_status st;
  char u[96], email[160];
  stack_unique(u, sizeof u, "secrets");
  snprintf(email, sizeof email, "%s@e2e.shop.test", u);
  Shop__User__V1__RegisterUserRequest reg = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  reg.email = email;
  reg.password = PASSWORD;
  reg.name = "Secretive";
  Shop__User__V1__RegisterUserResponse *rr = NULL;
  cr_assert_eq(stack_call("user-command", UCMD_SVC, "RegisterUser", &reg.base,
                          (ProtobufCMessage **)&rr, NULL, stack_key(), &st),
               STATUS_OK);
  Shop__User__V1__LoginResponse *l = stack_login(email, PASSWORD);
  Shop__User__V1__ChangePasswordRequest cp = SHOP__USER__V1__CHANGE_PASSWORD_REQUEST__INIT;
  cp.old_password = PASSWORD;
  cp.new_password = NEW_PASSWORD;
  Shop__User__V1__ChangePasswordResponse *cpr = NULL;
  cr_assert_eq(stack_call("user-command", UCMD_SVC, "ChangePassword", &cp.base,
                          (ProtobufCMessage **)&cpr, l->tokens->access_token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  /* Once the projection has both events, they are on the topic. */
  Shop__User__V1__GetMeRequest me = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = cpr->consistency;
  rc.wait_ms = 10000;
  me.consistency = &rc;
  cr_assert_eq(stack_call("user-query", UQRY_SVC, "GetMe", &me.base, NULL, l->tokens->access_token,
                          NULL, &st),
               STATUS_OK, "%s", st.message);

  secret_scan scan = {.key = rr->user_id,
                      .secrets = {PASSWORD, NEW_PASSWORD, "$argon2", "rt1.",
                                  l->tokens->access_token, l->tokens->refresh_token}};
  stack_topic_read("shop.user.events.v1", scan_cb, &scan, 30000);
  cr_assert_eq(scan.mine, 2, "UserRegistered and PasswordChanged");
  free_msg(cpr);
  free_msg(l);
  free_msg(rr);
}
