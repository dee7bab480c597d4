#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

static char tmpdir[64];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/shop-cfg-XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
  /* Tests must not see the suite's own overrides. */
  unsetenv("SHOP_MYSQL__PORT");
  unsetenv("SHOP_LOG__LEVEL");
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  cr_assert_eq(system(cmd), 0);
}

static const char *write_file(const char *name, const char *text) {
  static char path[128];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

TestSuite(config, .init = setup, .fini = teardown);

Test(config, defaults_apply_without_a_file) {
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_eq(cfg->rpc.workers, 16);
  cr_assert_str_eq(cfg->log.level, "info");
  cr_assert_str_eq(cfg->mysql.host, "127.0.0.1");
  cr_assert_eq(cfg->kafka.session_timeout_ms, 45000);
  config_free(cfg);
}

Test(config, yaml_values_override_defaults) {
  const char *path = write_file("a.yaml", "rpc:\n  workers: 4\nlog:\n  level: debug\n");
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(cfg->rpc.workers, 4);
  cr_assert_str_eq(cfg->log.level, "debug");
  config_free(cfg);
}

Test(config, environment_overrides_the_file) {
  const char *path = write_file("b.yaml", "mysql:\n  port: 1111\n");
  setenv("SHOP_MYSQL__PORT", "2222", 1);
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(cfg->mysql.port, 2222);
  config_free(cfg);
  unsetenv("SHOP_MYSQL__PORT");
}

Test(config, an_out_of_range_value_names_file_line_and_key) {
  const char *path = write_file("c.yaml", "# comment\nrpc:\n  queue_size: 8\n  workers: 0\n");
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_null(cfg);
  char want[200];
  snprintf(want, sizeof want, "%s:4: rpc.workers: 0 is out of range [1, 1024]", path);
  cr_assert_str_eq(err, want);
}

Test(config, an_unknown_key_is_an_error) {
  const char *path = write_file("d.yaml", "rpc:\n  wrokers: 4\n");
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, ":2: rpc.wrokers: unknown key"), "%s", err);
}

Test(config, a_non_integer_is_an_error) {
  const char *path = write_file("e.yaml", "mysql:\n  port: lots\n");
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, "mysql.port: \"lots\" is not an integer"), "%s", err);
}

Test(config, an_unknown_environment_key_is_an_error) {
  setenv("SHOP_RPC__WROKERS", "3", 1);
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), -1);
  cr_assert_str_eq(err, "environment SHOP_RPC__WROKERS: rpc.wrokers: unknown key");
  unsetenv("SHOP_RPC__WROKERS");
}

Test(config, a_disallowed_choice_is_an_error) {
  const char *path = write_file("f.yaml", "log:\n  level: loud\n");
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, ":2: log.level: \"loud\" is not one of"), "%s", err);
}

Test(config, yaml_syntax_errors_name_the_line) {
  const char *path = write_file("g.yaml", "rpc:\n  workers: 4\n bad: [\n");
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, path), "%s", err);
  cr_assert_not_null(strstr(err, ":3"), "%s", err);
}

Test(config, environment_references_expand_with_defaults) {
  setenv("SHOP_TEST_DIR_X", "/srv/x", 1);
  const char *path = write_file(
      "h.yaml", "mysql:\n  secrets_dir: ${SHOP_TEST_DIR_X}/s\n  host: ${NOPE_UNSET:-db.local}\n");
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(cfg->mysql.secrets_dir, "/srv/x/s");
  cr_assert_str_eq(cfg->mysql.host, "db.local");
  config_free(cfg);
  unsetenv("SHOP_TEST_DIR_X");
}

Test(config, a_secret_comes_from_a_file_and_is_masked_in_dumps) {
  const char *key = write_file("jwt.key", "s3cret-key-material\n");
  char yaml[256];
  snprintf(yaml, sizeof yaml, "auth:\n  jwt_key_file: %s\n", key);
  const char *path = write_file("i.yaml", yaml);
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(cfg->auth.jwt_key, "s3cret-key-material");
  char dump[8192];
  config_dump(cfg, dump, sizeof dump);
  cr_assert_null(strstr(dump, "s3cret"), "%s", dump);
  cr_assert_not_null(strstr(dump, "jwt_key: \"***\""), "%s", dump);
  config_free(cfg);
}

Test(config, a_secret_comes_from_the_environment) {
  setenv("SHOP_AUTH__JWT_KEY", "from-env", 1);
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(cfg->auth.jwt_key, "from-env");
  config_free(cfg);
  unsetenv("SHOP_AUTH__JWT_KEY");
}

Test(config, a_missing_secret_file_is_an_error) {
  const char *path = write_file("j.yaml", "auth:\n  jwt_key_file: /nonexistent/key\n");
  shop_cfg *cfg = NULL;
  char err[256] = "";
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, ":2: auth.jwt_key_file: cannot read secret file /nonexistent/key"),
                     "%s", err);
}

Test(config, the_path_comes_from_the_command_line_before_the_environment) {
  char *argv[] = {"prog", "--config", "/etc/a.yaml", NULL};
  setenv("SHOP_CONFIG", "/etc/b.yaml", 1);
  cr_assert_str_eq(config_path_from_args(3, argv), "/etc/a.yaml");
  cr_assert_str_eq(config_path_from_args(1, argv), "/etc/b.yaml");
  unsetenv("SHOP_CONFIG");
}
