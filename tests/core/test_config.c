#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

static char tmpdir[64];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/shop-cfg-XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
  /* Tests must not see the suite's own overrides. */
  unsetenv("SHOP_MYSQL__PORT");
  unsetenv("SHOP_LOG__LEVEL");
  unsetenv("SHOP_ENDPOINTS__HOST");
  unsetenv("SHOP_ENDPOINTS__PORT_BASE");
  unsetenv("SHOP_ADMIN__PORT_BASE");
  unsetenv("SHOP_ENDPOINTS__ORDER_QUERY");
  unsetenv("SHOP_ADMIN__AUDIT_WORKER");
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
  cr_assert_str_eq(config_path_find(3, argv), "/etc/a.yaml");
  cr_assert_str_eq(config_path_find(1, argv), "/etc/b.yaml");
  unsetenv("SHOP_CONFIG");
}

Test(config, the_path_falls_back_to_config_shop_yaml_in_the_current_folder) {
  char *argv[] = {"prog", NULL};
  unsetenv("SHOP_CONFIG");
  char here[4096];
  cr_assert_not_null(getcwd(here, sizeof here));
  cr_assert_eq(chdir(tmpdir), 0);
  cr_assert_null(config_path_find(1, argv), "no config/shop.yaml here yet");
  cr_assert_eq(mkdir("config", 0700), 0);
  FILE *f = fopen("config/shop.yaml", "w");
  cr_assert_not_null(f);
  fclose(f);
  cr_assert_str_eq(config_path_find(1, argv), "config/shop.yaml");
  setenv("SHOP_CONFIG", "/etc/b.yaml", 1);
  cr_assert_str_eq(config_path_find(1, argv), "/etc/b.yaml", "$SHOP_CONFIG comes first");
  unsetenv("SHOP_CONFIG");
  cr_assert_eq(chdir(here), 0);
}

Test(config, the_config_remembers_the_file_it_read) {
  const char *path = write_file("src.yaml", "log:\n  level: warn\n");
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(config_source_text(cfg), path);
  config_free(cfg);
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_not_null(strstr(config_source_text(cfg), "no config file"));
  config_free(cfg);
}

Test(config, program_ports_follow_from_their_place_in_programs_list) {
  const char *path = write_file("ports.yaml",
                                "endpoints:\n  port_base: 30001\nadmin:\n  port_base: "
                                "30101\n  order_query: 0\n");
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(cfg->endpoints.user_command, "tcp://127.0.0.1:30001");
  cr_assert_str_eq(cfg->endpoints.order_query, "tcp://127.0.0.1:30006");
  cr_assert_str_eq(cfg->endpoints.audit_query, "tcp://127.0.0.1:30007");
  cr_assert_eq(cfg->admin.user_command, 30101);
  cr_assert_eq(cfg->admin.order_query, 0, "a key of its own wins (0: ephemeral)");
  cr_assert_eq(cfg->admin.audit_worker, 30110);
  config_free(cfg);
}

Test(config, a_program_key_in_the_environment_overrides_the_derived_port) {
  setenv("SHOP_ENDPOINTS__ORDER_QUERY", "tcp://127.0.0.1:1234", 1);
  setenv("SHOP_ADMIN__AUDIT_WORKER", "4321", 1);
  setenv("SHOP_ADMIN__PORT_BASE", "40000", 1);
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(cfg->endpoints.order_query, "tcp://127.0.0.1:1234");
  cr_assert_str_eq(cfg->endpoints.order_command, "tcp://127.0.0.1:17005");
  cr_assert_eq(cfg->admin.audit_worker, 4321);
  cr_assert_eq(cfg->admin.payment_worker, 40007);
  config_free(cfg);
}

Test(config, a_port_base_that_runs_past_65535_is_an_error) {
  const char *path = write_file("hi.yaml", "admin:\n  port_base: 65530\n");
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, "admin.port_base"), "%s", err);
}

Test(config, every_program_of_the_list_has_its_keys) {
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  size_t n;
  const config_program *p = config_programs(&n);
  cr_assert_eq(n, 11); /* the ten of DESIGN.md and shop-gateway */
  int rpc = 0;
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(config_program_find(p[i].name), &p[i]);
    cr_assert_eq(config_program_admin_port(cfg, &p[i]), 19101 + (int)i, "%s", p[i].name);
    const char *url = config_program_endpoint(cfg, &p[i]);
    if (p[i].service == NULL) {
      cr_assert_null(url, "%s serves no RPC", p[i].name);
      continue;
    }
    char want[64];
    snprintf(want, sizeof want, "tcp://127.0.0.1:%d", 17001 + rpc++);
    cr_assert_str_eq(url, want, "%s", p[i].name);
    cr_assert_eq(config_service_endpoint(cfg, p[i].service), url);
  }
  cr_assert_eq(rpc, 7);
  cr_assert_str_eq(config_program_find("audit-worker")->service, "shop.audit.v1.AuditQueryService");
  cr_assert_null(config_program_find("shop-echo"));
  cr_assert_null(config_service_endpoint(cfg, "shop.nothing.v1.NoService"));
  config_free(cfg);
}

Test(config, print_config_gives_one_value_or_the_whole_yaml_with_secrets_masked) {
  setenv("SHOP_AUTH__JWT_KEY", "a-secret-that-must-not-be-printed-0123456789", 1);
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  unsetenv("SHOP_AUTH__JWT_KEY");
  char buf[16384];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  cr_assert_eq(config_print(cfg, "admin.order_command", f), 0);
  cr_assert_eq(config_print(cfg, "auth.jwt_key", f), 0);
  cr_assert_eq(config_print(cfg, "endpoints.user_query", f), 0);
  fclose(f);
  cr_assert_str_eq(buf, "19105\n***\ntcp://127.0.0.1:17002\n");
  f = fmemopen(buf, sizeof buf, "w");
  cr_assert_eq(config_print(cfg, NULL, f), 0);
  fclose(f);
  cr_assert_not_null(
      strstr(buf, "admin:\n  host: \"127.0.0.1\"\n  port_base: 19101\n  user_command: 19101\n"),
      "%s", buf);
  cr_assert_null(strstr(buf, "a-secret"));
  cr_assert_eq(config_print(cfg, "no.such_key", stderr), 2);
  config_free(cfg);
}

Test(config, print_config_is_found_with_or_without_a_key) {
  const char *key = "x";
  char *a[] = {"prog", "--config", "c.yaml", "--print-config", "admin.host", NULL};
  cr_assert(config_print_arg(5, a, &key));
  cr_assert_str_eq(key, "admin.host");
  char *b[] = {"prog", "--print-config", "--config", "c.yaml", NULL};
  cr_assert(config_print_arg(4, b, &key));
  cr_assert_null(key);
  char *c[] = {"prog", "--config", "c.yaml", NULL};
  cr_assert_not(config_print_arg(3, c, &key));
}

Test(config, a_currency_that_is_no_iso_4217_code_stops_loading) {
  const char *path = write_file("cur.yaml", "catalog:\n  currency: eur\n");
  shop_cfg *cfg;
  char err[256];
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), -1);
  cr_assert_not_null(strstr(err, "cur.yaml:2: catalog.currency: \"eur\" must be an ISO 4217 code"),
                     "%s", err);
}
