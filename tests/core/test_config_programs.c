/* Every program finds its config the same way (config_path_find: --config,
 * $SHOP_CONFIG, else config/shop.yaml in the current folder), prints it
 * with --print-config, and a missing or short signing key names the file
 * it read (issue 15: shop-loadgen after `make run` read no config at all).
 * The programs run for real, in a folder of the test's own; none of them
 * gets as far as a database or a broker. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "support/proc.h"

static char dir[64];
static char here[4096];

/* A checkout-like folder: config/shop.yaml with a level only this test
 * uses and a signing key that is too short; admin ports ephemeral, so a
 * program that gets as far as its admin server clashes with nothing. */
static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/shop-cfgfind-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  cr_assert_not_null(getcwd(here, sizeof here));
  cr_assert_eq(chdir(dir), 0);
  cr_assert_eq(mkdir("config", 0700), 0);
  FILE *f = fopen("config/shop.yaml", "w");
  cr_assert_not_null(f);
  fputs("log:\n  level: error\nauth:\n  jwt_key: too-short\nadmin:\n  port_base: 1\n", f);
  size_t n;
  const config_program *p = config_programs(&n);
  for (size_t i = 0; i < n; i++) fprintf(f, "  %s: 0\n", p[i].key);
  fclose(f);
  /* What the suite exports must not decide for the programs. */
  unsetenv("SHOP_CONFIG");
  unsetenv("SHOP_LOG__LEVEL");
  unsetenv("SHOP_AUTH__JWT_KEY");
  unsetenv("SHOP_AUTH__JWT_KEY_FILE");
  unsetenv("SHOP_ADMIN__PORT_BASE");
}

static void teardown(void) {
  cr_assert_eq(chdir(here), 0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert_eq(system(cmd), 0);
}

TestSuite(config_find, .init = setup, .fini = teardown);

/* Runs SHOP_BIN_DIR/name with args in the test's folder; returns its exit
 * status, its output in out. */
static int run(const char *name, const char *const *args, char *out, size_t outlen) {
  char path[4200], log[128];
  snprintf(path, sizeof path, "%s/%s", SHOP_BIN_DIR, name);
  snprintf(log, sizeof log, "%s/%s.out", dir, name);
  unlink(log);
  proc_opts o = {.path = path, .argv = args, .log_path = log};
  int code = -1;
  char err[256];
  cr_assert_eq(proc_run(&o, 20000, &code, out, outlen, err, sizeof err), STATUS_OK, "%s", err);
  return code;
}

Test(config_find, every_program_reads_config_shop_yaml_of_the_current_folder) {
  const char *names[16];
  size_t k = 0, n;
  const config_program *p = config_programs(&n);
  for (size_t i = 0; i < n; i++) names[k++] = p[i].name;
  names[k++] = "shopctl";
  names[k++] = "shop-admin";
  names[k++] = "shop-loadgen";
  const char *args[] = {"--print-config", "log.level", NULL};
  for (size_t i = 0; i < k; i++) {
    char out[4096];
    int code = run(names[i], args, out, sizeof out);
    cr_expect_eq(code, 0, "%s: exit %d: %s", names[i], code, out);
    cr_expect_str_eq(out, "error\n", "%s read another config: %s", names[i], out);
  }
}

Test(config_find, the_config_flag_comes_before_the_current_folder) {
  FILE *f = fopen("other.yaml", "w");
  cr_assert_not_null(f);
  fputs("log:\n  level: warn\n", f);
  fclose(f);
  const char *args[] = {"--config", "other.yaml", "--print-config", "log.level", NULL};
  char out[4096];
  cr_assert_eq(run("shop-loadgen", args, out, sizeof out), 0, "%s", out);
  cr_assert_str_eq(out, "warn\n");
  cr_assert_eq(run("payment-worker", args, out, sizeof out), 0, "%s", out);
  cr_assert_str_eq(out, "warn\n");
}

Test(config_find, a_short_signing_key_names_the_file_it_came_from) {
  const char *args[] = {"--customers", "1", "--no-reconcile", NULL};
  char out[4096];
  int code = run("shop-loadgen", args, out, sizeof out);
  cr_assert_neq(code, 0);
  cr_assert_not_null(strstr(out, "at least 32 bytes"), "%s", out);
  cr_assert_not_null(strstr(out, "config/shop.yaml"), "the message names no file: %s", out);

  code = run("payment-worker", NULL, out, sizeof out);
  cr_assert_eq(code, 2, "%s", out);
  cr_assert_not_null(strstr(out, "config/shop.yaml"), "the message names no file: %s", out);
}

Test(config_find, without_any_config_the_message_says_so) {
  cr_assert_eq(unlink("config/shop.yaml"), 0);
  const char *args[] = {"--customers", "1", "--no-reconcile", NULL};
  char out[4096];
  int code = run("shop-loadgen", args, out, sizeof out);
  cr_assert_neq(code, 0);
  cr_assert_not_null(strstr(out, "auth.jwt_key is not set"), "%s", out);
  cr_assert_not_null(strstr(out, "no config file"), "%s", out);
}

/* Every profile's file in config/ (shop, test, cluster...) is one every
 * program reads: a key a program no longer knows fails it at start-up
 * (cluster.yaml kept notify.retry_max after the mail queue removed it, and
 * only make test-cluster, outside make test, started from it). */
Test(config_find, every_program_reads_every_file_of_config) {
  const char *profiles[] = {"shop.yaml", "test.yaml", "cluster.yaml"};
  /* The secrets the files name live under $SHOP_RUN_DIR: the test's own. */
  cr_assert_eq(setenv("SHOP_RUN_DIR", dir, 1), 0);
  cr_assert_eq(mkdir("secrets", 0700), 0);
  const char *secrets[] = {"secrets/jwt.key", "secrets/admin.password"};
  for (size_t i = 0; i < 2; i++) {
    FILE *s = fopen(secrets[i], "w");
    cr_assert_not_null(s);
    fputs("a-secret-of-forty-bytes-for-this-test-01\n", s);
    fclose(s);
  }
  size_t n;
  const config_program *p = config_programs(&n);
  for (size_t f = 0; f < sizeof profiles / sizeof *profiles; f++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", SHOP_CONFIG_DIR, profiles[f]);
    cr_assert_eq(access(path, R_OK), 0, "%s is not there", path);
    const char *args[] = {"--config", path, "--print-config", "log.level", NULL};
    for (size_t i = 0; i < n; i++) {
      char out[4096];
      int code = run(p[i].name, args, out, sizeof out);
      cr_expect_eq(code, 0, "%s --config %s: exit %d: %s", p[i].name, profiles[f], code, out);
    }
  }
}
