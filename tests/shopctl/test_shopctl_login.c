/* shopctl login, token refresh, authenticated calls and logout against the
 * real user-command and user-query of the test profile; shopctl seed (the
 * demo data of `make run`) against them and the product programs. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shopctl_run.h"
#include "support/stack.h"

static const char *const programs[] = {"user-command", "user-query", "product-command",
                                       "product-query", NULL};

ReportHook(PRE_ALL)(struct criterion_test_set *s) { stack_up(programs); }
ReportHook(POST_ALL)(struct criterion_global_stats *s) { stack_down(); }

static shopctl_dir d;
static char bin[1024], creds[400];

static void setup(void) {
  stack_require();
  stack_bin(bin, sizeof bin, "shopctl");
  shopctl_dir_make(&d, "shopctl-login", bin, stack_config());
  snprintf(creds, sizeof creds, "%s/xdg/shop/credentials.json", d.path);
}

static void teardown(void) {
  shopctl_dir_remove(&d);
  stack_release();
}

#define shopctl(out, outlen, ...) shopctl_run(&d, out, outlen, __VA_ARGS__)

static char out[65536];

Test(shopctl_login, login_keeps_tokens_that_later_calls_send_and_refresh, .init = setup,
     .fini = teardown) {
  char password[256], pwfile[300];
  stack_admin_password(password, sizeof password);
  snprintf(pwfile, sizeof pwfile, "%s/pw", d.path);
  FILE *f = fopen(pwfile, "w");
  fprintf(f, "%s\n", password);
  fclose(f);

  cr_assert_eq(shopctl(out, sizeof out, "call", "UserQueryService.GetMe", "{}", NULL), 16, "%s",
               out);
  cr_assert_eq(
      shopctl(out, sizeof out, "login", "admin@shop.test", "--password-file", pwfile, NULL), 0,
      "%s", out);
  cr_assert_not_null(strstr(out, "\"role\": \"ROLE_ADMIN\""), "%s", out);
  struct stat st;
  cr_assert_eq(stat(creds, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0600);

  cr_assert_eq(shopctl(out, sizeof out, "call", "UserQueryService.GetMe", "{}", NULL), 0, "%s",
               out);
  cr_assert_not_null(strstr(out, "admin@shop.test"), "%s", out);

  /* Near expiry: the next call refreshes (the refresh token rotates). */
  json_t *all = json_load_file(creds, 0, NULL);
  cr_assert_not_null(all);
  const char *key;
  json_t *prof;
  char old_refresh[512] = "";
  json_object_foreach(all, key, prof) {
    snprintf(old_refresh, sizeof old_refresh, "%s",
             json_string_value(json_object_get(prof, "refresh_token")));
    json_object_set_new(prof, "access_token_expires_at", json_integer(time(NULL) + 5));
  }
  cr_assert_eq(json_dump_file(all, creds, 0), 0);
  json_decref(all);
  cr_assert_eq(shopctl(out, sizeof out, "call", "UserQueryService.GetMe", "{}", NULL), 0, "%s",
               out);
  all = json_load_file(creds, 0, NULL);
  json_object_foreach(all, key, prof) {
    cr_assert_str_neq(json_string_value(json_object_get(prof, "refresh_token")), old_refresh);
    cr_assert_gt(json_integer_value(json_object_get(prof, "access_token_expires_at")),
                 time(NULL) + 30);
  }
  json_decref(all);

  cr_assert_eq(shopctl(out, sizeof out, "logout", NULL), 0, "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "call", "UserQueryService.GetMe", "{}", NULL), 16, "%s",
               out);
}

Test(shopctl_login, health_checks_every_configured_endpoint, .init = setup, .fini = teardown) {
  /* Only the user programs run here: the others are UNAVAILABLE, and the
   * exit code says so. */
  cr_assert_eq(shopctl(out, sizeof out, "--timeout", "300", "health", NULL), 14, "%s", out);
  cr_assert_not_null(strstr(out, "\"service\":\"shop.user.v1.UserCommandService\",\"endpoint\":"),
                     "%s", out);
  cr_assert_not_null(strstr(out, "UserQueryService"), "%s", out);
  const char *uc = strstr(out, "UserCommandService");
  cr_assert_not_null(strstr(uc, "\"status\":\"SERVING\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"status\":\"UNAVAILABLE\""), "%s", out);
}

/* The output line of seed that starts with head, copied into line. */
static void seed_line(const char *text, const char *head, char *line, size_t len) {
  const char *p = strstr(text, head);
  cr_assert_not_null(p, "no \"%s\" in:\n%s", head, text);
  size_t n = strcspn(p, "\n");
  cr_assert_lt(n, len);
  memcpy(line, p, n);
  line[n] = '\0';
}

Test(shopctl_seed, seed_registers_the_customer_and_the_catalog_once_and_keeps_them, .init = setup,
     .fini = teardown) {
  char email[128], prefix[64], pwfile[300], apwfile[300], password[256];
  snprintf(email, sizeof email, "seed-%d-%ld@shop.test", (int)getpid(), (long)time(NULL));
  snprintf(prefix, sizeof prefix, "S%d-%ld-", (int)getpid(), (long)time(NULL));
  snprintf(pwfile, sizeof pwfile, "%s/customer.pw", d.path);
  FILE *f = fopen(pwfile, "w");
  fputs("demo customer password 42\n", f);
  fclose(f);

  /* One product of the catalog exists already, made by an admin with
   * another key: seed finds it instead of failing. */
  stack_admin_password(password, sizeof password);
  snprintf(apwfile, sizeof apwfile, "%s/admin.pw", d.path);
  f = fopen(apwfile, "w");
  fprintf(f, "%s\n", password);
  fclose(f);
  cr_assert_eq(
      shopctl(out, sizeof out, "login", "admin@shop.test", "--password-file", apwfile, NULL), 0,
      "%s", out);
  char req[512];
  snprintf(
      req, sizeof req,
      "{\"sku\":\"%sDEMO-TEE\",\"details\":{\"name\":\"Shop T-shirt\",\"category\":\"apparel\"},"
      "\"price\":{\"units\":\"1999\",\"currency\":\"EUR\"},\"initialStock\":\"40\"}",
      prefix);
  cr_assert_eq(shopctl(out, sizeof out, "call", "ProductCommandService.CreateProduct", req, NULL),
               0, "%s", out);
  char tee_id[64] = "";
  const char *q = strstr(out, "\"productId\": \"");
  cr_assert_not_null(q, "%s", out);
  snprintf(tee_id, sizeof tee_id, "%.36s", q + strlen("\"productId\": \""));

  static char first[8192];
  cr_assert_eq(shopctl(first, sizeof first, "seed", email, "--password-file", pwfile,
                       "--sku-prefix", prefix, NULL),
               0, "%s", first);
  char head[200], line[400];
  snprintf(head, sizeof head, "customer %s ", email);
  seed_line(first, head, line, sizeof line);
  cr_assert_null(strstr(line, "already"), "%s", line);
  const char *skus[] = {"DEMO-MUG", "DEMO-TEE", "DEMO-BOOK", "DEMO-STICKERS"};
  for (size_t i = 0; i < 4; i++) {
    snprintf(head, sizeof head, "product %s%s ", prefix, skus[i]);
    seed_line(first, head, line, sizeof line);
  }
  snprintf(head, sizeof head, "product %sDEMO-TEE %s ", prefix, tee_id);
  seed_line(first, head, line, sizeof line);

  /* A second seed changes nothing and says the same. */
  cr_assert_eq(shopctl(out, sizeof out, "seed", email, "--password-file", pwfile, "--sku-prefix",
                       prefix, NULL),
               0, "%s", out);
  cr_assert_str_eq(out, first);

  /* The customer logs in with the seeded password; the catalog lists the
   * mug (seed waited for product-query). */
  cr_assert_eq(shopctl(out, sizeof out, "login", email, "--password-file", pwfile, NULL), 0, "%s",
               out);
  cr_assert_not_null(strstr(out, "\"role\": \"ROLE_CUSTOMER\""), "%s", out);
  snprintf(head, sizeof head, "product %sDEMO-MUG ", prefix);
  seed_line(first, head, line, sizeof line);
  snprintf(req, sizeof req, "{\"productId\":\"%.36s\"}", line + strlen(head));
  cr_assert_eq(shopctl(out, sizeof out, "call", "ProductQueryService.GetProduct", req, NULL), 0,
               "%s", out);
  snprintf(head, sizeof head, "\"sku\": \"%sDEMO-MUG\"", prefix);
  cr_assert_not_null(strstr(out, head), "%s", out);
}
