#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "money/money.h"
#include "status/status.h"

/* Where a program in a checkout finds its config without being told. */
#define CONFIG_DEFAULT_PATH "config/shop.yaml"

extern char **environ;

typedef enum cfg_type { CFG_STR, CFG_INT } cfg_type;

/* One key of the table: "section.key", its type, where it lives in shop_cfg,
 * its bounds (ints) and default. secret keys also accept "<key>_file". */
typedef struct cfg_key {
  const char *path;
  cfg_type type;
  size_t offset;
  long long min, max;
  const char *def;
  bool secret;
  const char *const *choices;              /* NULL-terminated, for enumerated strings */
  const char *(*check)(const char *value); /* NULL, or why a string value is bad */
} cfg_key;

#define S(path, field, def)                                                                        \
  { path, CFG_STR, offsetof(shop_cfg, field), 0, 0, def, false, NULL, NULL }
#define SECRET(path, field)                                                                        \
  { path, CFG_STR, offsetof(shop_cfg, field), 0, 0, "", true, NULL, NULL }
#define I(path, field, min, max, def)                                                              \
  { path, CFG_INT, offsetof(shop_cfg, field), min, max, #def, false, NULL, NULL }

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

static const cfg_key cfg_table[] = {
    {"log.level", CFG_STR, offsetof(shop_cfg, log.level), 0, 0, "info", false, log_levels, NULL},

    S("mysql.host", mysql.host, "127.0.0.1"),
    I("mysql.port", mysql.port, 1, 65535, 13306),
    S("mysql.socket", mysql.socket, ""),
    S("mysql.secrets_dir", mysql.secrets_dir, "${SHOP_RUN_DIR:-.shop/run}/secrets/mysql"),
    SECRET("mysql.password", mysql.password),
    I("mysql.connect_timeout_ms", mysql.connect_timeout_ms, 100, 600000, 5000),
    I("mysql.connect_retry_ms", mysql.connect_retry_ms, 0, 3600000, 30000),
    I("mysql.pool_size", mysql.pool_size, 1, 256, 8),
    S("mysql.read_host", mysql.read_host, ""),
    I("mysql.read_port", mysql.read_port, 0, 65535, 0),

    S("kafka.brokers", kafka.brokers, "127.0.0.1:19092"),
    I("kafka.session_timeout_ms", kafka.session_timeout_ms, 1000, 300000, 45000),
    I("kafka.heartbeat_ms", kafka.heartbeat_ms, 100, 60000, 3000),
    I("kafka.max_retries", kafka.max_retries, 1, 100, 5),
    I("kafka.retry_backoff_ms", kafka.retry_backoff_ms, 1, 600000, 200),
    I("kafka.batch_size", kafka.batch_size, 1, 10000, 256),
    I("kafka.fetch_wait_max_ms", kafka.fetch_wait_max_ms, 0, 10000, 100),
    I("kafka.fetch_min_bytes", kafka.fetch_min_bytes, 1, 104857600, 1),
    I("kafka.batch_linger_ms", kafka.batch_linger_ms, 0, 1000, 0),
    I("kafka.statistics_interval_ms", kafka.statistics_interval_ms, 0, 3600000, 5000),
    I("kafka.outbox_retention_s", kafka.outbox_retention_s, 1, 31536000, 604800),
    I("kafka.processed_retention_s", kafka.processed_retention_s, 1, 31536000, 604800),

    /* The programs' endpoints and admin ports (programs.list): empty and
     * -1 are resolved from port_base after loading (resolve_programs). */
    S("endpoints.host", endpoints.host, "127.0.0.1"),
    I("endpoints.port_base", endpoints.port_base, 1, 65535, 17001),
#define X(key, name, service) S("endpoints." #key, endpoints.key, ""),
    SHOP_ENDPOINT_LIST(X)
#undef X

    /* Admin HTTP: /metrics, /livez, /readyz (internal/app). */
    S("admin.host", admin.host, "127.0.0.1"),
    I("admin.port_base", admin.port_base, 1, 65535, 19101),
#define X(key, name, endpoint, service) I("admin." #key, admin.key, -1, 65535, -1),
    SHOP_PROGRAM_LIST(X)
#undef X

    /* The HTTP/JSON gateway (internal/gateway). */
    S("gateway.host", gateway.host, "127.0.0.1"),
    I("gateway.port", gateway.port, 0, 65535, 18080),
    I("gateway.max_body_bytes", gateway.max_body_bytes, 1024, 67108864, 1048576),
    I("gateway.max_connections", gateway.max_connections, 1, 10000, 256),
    I("gateway.connection_timeout_s", gateway.connection_timeout_s, 1, 3600, 10),

    I("rpc.workers", rpc.workers, 1, 1024, 16),
    I("rpc.queue_size", rpc.queue_size, 1, 1000000, 1024),
    I("rpc.max_message_bytes", rpc.max_message_bytes, 1024, 1073741824, 4194304),
    I("rpc.default_timeout_ms", rpc.default_timeout_ms, 1, 3600000, 5000),
    I("rpc.max_timeout_ms", rpc.max_timeout_ms, 1, 3600000, 60000),
    I("rpc.drain_grace_ms", rpc.drain_grace_ms, 0, 600000, 10000),
    I("rpc.retry_max", rpc.retry_max, 0, 100, 3),
    I("rpc.retry_backoff_ms", rpc.retry_backoff_ms, 1, 60000, 50),
    I("rpc.idempotency_retention_s", rpc.idempotency_retention_s, 1, 31536000, 86400),

    SECRET("auth.jwt_key", auth.jwt_key),
    S("auth.issuer", auth.issuer, "shop"),
    I("auth.access_ttl_s", auth.access_ttl_s, 1, 86400, 900),
    I("auth.refresh_ttl_s", auth.refresh_ttl_s, 60, 31536000, 2592000),
    S("auth.admin_email", auth.admin_email, ""),
    SECRET("auth.admin_password", auth.admin_password),
    S("auth.admin_name", auth.admin_name, "Administrator"),
    I("auth.login_max_failures", auth.login_max_failures, 1, 1000, 5),
    I("auth.login_lockout_s", auth.login_lockout_s, 1, 86400, 300),
    I("auth.password_opslimit", auth.password_opslimit, 1, 64, 2),
    I("auth.password_memlimit_kib", auth.password_memlimit_kib, 8, 4194304, 19456),

    /* Checked here, so that no program starts with a currency no price
     * can have. */
    {"catalog.currency", CFG_STR, offsetof(shop_cfg, catalog.currency), 0, 0, "EUR", false, NULL,
     money_currency_check},

    /* Orders, inventory and payment (issue 6; see internal/order, inventory, payment). */
    I("order.deadline_s", order.deadline_s, 1, 604800, 900),
    I("order.sweep_interval_ms", order.sweep_interval_ms, 50, 3600000, 1000),
    I("order.catalog_cache_ms", order.catalog_cache_ms, 0, 3600000, 5000),
    I("inventory.unknown_product_wait_ms", inventory.unknown_product_wait_ms, 0, 86400000, 30000),
    I("payment.latency_ms", payment.latency_ms, 0, 60000, 0),
    I("payment.failure_permille", payment.failure_permille, 0, 1000, 0),
    I("payment.amount_limit", payment.amount_limit, 1, 2147483647, 100000000),
    S("payment.currencies", payment.currencies, "EUR,USD,GBP,CHF,JPY"),
    S("payment.state_dir", payment.state_dir, "${SHOP_RUN_DIR:-.shop/run}/payment-gateway"),
    I("payment.retry_max", payment.retry_max, 0, 100, 5),
    I("payment.retry_backoff_ms", payment.retry_backoff_ms, 1, 60000, 100),

    /* Notifications (issue 7; see internal/notification). */
    S("notify.smtp_url", notify.smtp_url, "smtp://127.0.0.1:2525"),
    S("notify.smtp_from", notify.smtp_from, "shop@shop.local"),
    S("notify.smtp_tls", notify.smtp_tls, "none"),
    S("notify.sms_url", notify.sms_url, ""),
    S("notify.push_url", notify.push_url, ""),
    /* The queue of waiting messages (issue 19): Postfix's defaults are
     * 300 s, 4000 s and 5 days. */
    I("notify.retry_backoff_ms", notify.retry_backoff_ms, 1, 3600000, 60000),
    I("notify.retry_backoff_max_ms", notify.retry_backoff_max_ms, 1, 86400000, 1800000),
    I("notify.give_up_s", notify.give_up_s, 1, 31536000, 432000),
    I("notify.timeout_ms", notify.timeout_ms, 100, 600000, 10000),
    S("notify.admin_email", notify.admin_email, "admin@shop.local"),
    S("notify.mail_dir", notify.mail_dir, "${SHOP_RUN_DIR:-.shop/run}/mail"),
};

#define CFG_COUNT (sizeof cfg_table / sizeof cfg_table[0])

static char **str_slot(shop_cfg *cfg, const cfg_key *k) {
  return (char **)((char *)cfg + k->offset);
}
static int *int_slot(shop_cfg *cfg, const cfg_key *k) { return (int *)((char *)cfg + k->offset); }

/* Expands ${VAR} and ${VAR:-default} from the environment. Returns a new
 * string or NULL on a malformed reference. */
static char *expand_env(const char *in) {
  size_t cap = strlen(in) + 1, len = 0;
  char *out = malloc(cap);
  if (out == NULL) return NULL;
  for (const char *p = in; *p != '\0';) {
    const char *piece = p;
    size_t plen = 1;
    char *owned = NULL;
    if (p[0] == '$' && p[1] == '{') {
      const char *end = strchr(p + 2, '}');
      if (end == NULL) {
        free(out);
        return NULL;
      }
      size_t rlen = (size_t)(end - (p + 2));
      owned = strndup(p + 2, rlen);
      if (owned == NULL) {
        free(out);
        return NULL;
      }
      char *dflt = strstr(owned, ":-");
      if (dflt != NULL) {
        *dflt = '\0';
        dflt += 2;
      }
      const char *val = getenv(owned);
      if (val == NULL || val[0] == '\0') val = dflt != NULL ? dflt : "";
      piece = val;
      plen = strlen(val);
      p = end + 1;
    } else {
      p++;
    }
    if (len + plen + 1 > cap) {
      cap = (len + plen + 1) * 2;
      char *grown = realloc(out, cap);
      if (grown == NULL) {
        free(owned);
        free(out);
        return NULL;
      }
      out = grown;
    }
    memcpy(out + len, piece, plen);
    len += plen;
    free(owned);
  }
  out[len] = '\0';
  return out;
}

static char *read_secret_file(const char *path, char *why, size_t whylen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(why, whylen, "cannot read secret file %s: %s", path, strerror(errno));
    return NULL;
  }
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
  return strdup(buf);
}

/* Sets one key from text. where is "file:line" or "environment VAR". */
static int set_value(shop_cfg *cfg, const cfg_key *k, bool from_file_suffix, const char *raw,
                     const char *where, char *errbuf, size_t errlen) {
  char *val = expand_env(raw);
  if (val == NULL) {
    status_seterr(errbuf, errlen, "%s: %s: malformed ${...} reference", where, k->path);
    return -1;
  }
  if (from_file_suffix) {
    char why[STATUS_ERRBUF_SIZE];
    char *secret = read_secret_file(val, why, sizeof why);
    free(val);
    if (secret == NULL) {
      status_seterr(errbuf, errlen, "%s: %s_file: %s", where, k->path, why);
      return -1;
    }
    val = secret;
  }
  if (k->type == CFG_INT) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    bool bad = errno != 0 || end == val || *end != '\0';
    if (bad) {
      status_seterr(errbuf, errlen, "%s: %s: \"%s\" is not an integer", where, k->path, val);
      free(val);
      return -1;
    }
    if (v < k->min || v > k->max) {
      status_seterr(errbuf, errlen, "%s: %s: %lld is out of range [%lld, %lld]", where, k->path, v,
                    k->min, k->max);
      free(val);
      return -1;
    }
    *int_slot(cfg, k) = (int)v;
    free(val);
    return 0;
  }
  if (k->choices != NULL) {
    bool ok = false;
    for (const char *const *c = k->choices; *c != NULL; c++) ok = ok || strcmp(*c, val) == 0;
    if (!ok) {
      status_seterr(errbuf, errlen, "%s: %s: \"%s\" is not one of the allowed values", where,
                    k->path, val);
      free(val);
      return -1;
    }
  }
  const char *why = k->check != NULL ? k->check(val) : NULL;
  if (why != NULL) {
    status_seterr(errbuf, errlen, "%s: %s: \"%s\" %s", where, k->path, val, why);
    free(val);
    return -1;
  }
  char **slot = str_slot(cfg, k);
  free(*slot);
  *slot = val;
  return 0;
}

/* Finds the key for "section.key" or, for secrets, "section.key_file". */
static const cfg_key *find_key(const char *path, bool *file_suffix) {
  *file_suffix = false;
  for (size_t i = 0; i < CFG_COUNT; i++) {
    if (strcmp(cfg_table[i].path, path) == 0) return &cfg_table[i];
  }
  size_t n = strlen(path);
  if (n > 5 && strcmp(path + n - 5, "_file") == 0) {
    for (size_t i = 0; i < CFG_COUNT; i++) {
      if (cfg_table[i].secret && strlen(cfg_table[i].path) == n - 5 &&
          strncmp(cfg_table[i].path, path, n - 5) == 0) {
        *file_suffix = true;
        return &cfg_table[i];
      }
    }
  }
  return NULL;
}

static int load_yaml(shop_cfg *cfg, const char *path, char *errbuf, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    status_seterr(errbuf, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  yaml_parser_t parser;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_file(&parser, f);

  int rc = -1;
  int depth = 0; /* mapping depth */
  char section[128] = "";
  char key[128] = "";
  bool want_key = true; /* at the current depth, the next scalar is a key */
  bool done = false;

  while (!done) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&parser, &ev)) {
      status_seterr(errbuf, errlen, "%s:%zu: %s", path, parser.problem_mark.line + 1,
                    parser.problem != NULL ? parser.problem : "YAML syntax error");
      goto out;
    }
    size_t line = ev.start_mark.line + 1;
    switch (ev.type) {
    case YAML_STREAM_END_EVENT:
      done = true;
      break;
    case YAML_MAPPING_START_EVENT:
      if (depth >= 2) {
        status_seterr(errbuf, errlen, "%s:%zu: %s.%s: nesting deeper than section.key", path, line,
                      section, key);
        yaml_event_delete(&ev);
        goto out;
      }
      if (depth == 1 && want_key) {
        status_seterr(errbuf, errlen, "%s:%zu: a mapping cannot be a key", path, line);
        yaml_event_delete(&ev);
        goto out;
      }
      depth++;
      want_key = true;
      break;
    case YAML_MAPPING_END_EVENT:
      depth--;
      want_key = true;
      break;
    case YAML_SEQUENCE_START_EVENT:
      status_seterr(errbuf, errlen, "%s:%zu: lists are not supported here", path, line);
      yaml_event_delete(&ev);
      goto out;
    case YAML_SCALAR_EVENT: {
      const char *text = (const char *)ev.data.scalar.value;
      if (depth == 1) {
        if (want_key) {
          snprintf(section, sizeof section, "%s", text);
          want_key = false;
        } else {
          status_seterr(errbuf, errlen, "%s:%zu: %s: expected a mapping of keys, not a value", path,
                        line, section);
          yaml_event_delete(&ev);
          goto out;
        }
      } else if (depth == 2) {
        if (want_key) {
          snprintf(key, sizeof key, "%s", text);
          want_key = false;
        } else {
          char full[300];
          snprintf(full, sizeof full, "%s.%s", section, key);
          bool file_suffix;
          const cfg_key *k = find_key(full, &file_suffix);
          char where[512];
          snprintf(where, sizeof where, "%s:%zu", path, line);
          if (k == NULL) {
            status_seterr(errbuf, errlen, "%s: %s: unknown key", where, full);
            yaml_event_delete(&ev);
            goto out;
          }
          if (set_value(cfg, k, file_suffix, text, where, errbuf, errlen) != 0) {
            yaml_event_delete(&ev);
            goto out;
          }
          want_key = true;
        }
      }
      break;
    }
    default:
      break;
    }
    yaml_event_delete(&ev);
  }
  rc = 0;
out:
  yaml_parser_delete(&parser);
  fclose(f);
  return rc;
}

/* SHOP_<SECTION>__<KEY>[_FILE] -> section.key[_file]. */
static int load_env(shop_cfg *cfg, char *errbuf, size_t errlen) {
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    if (strncmp(*e, "SHOP_", 5) != 0) continue;
    const char *eq = strchr(*e, '=');
    const char *sep = strstr(*e, "__");
    if (eq == NULL || sep == NULL || sep > eq) continue;
    char name[256];
    size_t nlen = (size_t)(eq - *e);
    if (nlen >= sizeof name) continue;
    memcpy(name, *e, nlen);
    name[nlen] = '\0';
    char path[256];
    size_t o = 0;
    for (const char *p = name + 5; *p != '\0' && o + 1 < sizeof path; p++) {
      if (p[0] == '_' && p[1] == '_') {
        path[o++] = '.';
        p++;
      } else {
        path[o++] = (char)tolower((unsigned char)*p);
      }
    }
    path[o] = '\0';
    bool file_suffix;
    const cfg_key *k = find_key(path, &file_suffix);
    char where[300];
    snprintf(where, sizeof where, "environment %s", name);
    if (k == NULL) {
      status_seterr(errbuf, errlen, "%s: %s: unknown key", where, path);
      return -1;
    }
    if (set_value(cfg, k, file_suffix, eq + 1, where, errbuf, errlen) != 0) return -1;
  }
  return 0;
}

/* Gives each program whose endpoint is empty tcp://host:port_base+i, and
 * each admin port of -1 port_base+i (i: its place in programs.list). */
static int resolve_programs(shop_cfg *cfg, char *errbuf, size_t errlen) {
  int i = 0;
#define X(key, name, service)                                                                      \
  if (cfg->endpoints.key[0] == '\0') {                                                             \
    int port = cfg->endpoints.port_base + i;                                                       \
    if (port > 65535) {                                                                            \
      status_seterr(errbuf, errlen, "endpoints.port_base: %d leaves no port for endpoints." #key,  \
                    cfg->endpoints.port_base);                                                     \
      return -1;                                                                                   \
    }                                                                                              \
    char url[300];                                                                                 \
    snprintf(url, sizeof url, "tcp://%s:%d", cfg->endpoints.host, port);                           \
    char *dup = strdup(url);                                                                       \
    if (dup == NULL) {                                                                             \
      status_seterr(errbuf, errlen, "out of memory");                                              \
      return -1;                                                                                   \
    }                                                                                              \
    free(cfg->endpoints.key);                                                                      \
    cfg->endpoints.key = dup;                                                                      \
  }                                                                                                \
  i++;
  SHOP_ENDPOINT_LIST(X)
#undef X
  i = 0;
#define X(key, name, endpoint, service)                                                            \
  if (cfg->admin.key < 0) {                                                                        \
    cfg->admin.key = cfg->admin.port_base + i;                                                     \
    if (cfg->admin.key > 65535) {                                                                  \
      status_seterr(errbuf, errlen, "admin.port_base: %d leaves no port for admin." #key,          \
                    cfg->admin.port_base);                                                         \
      return -1;                                                                                   \
    }                                                                                              \
  }                                                                                                \
  i++;
  SHOP_PROGRAM_LIST(X)
#undef X
  return 0;
}

int config_load(shop_cfg **out, const char *path, char *errbuf, size_t errlen) {
  shop_cfg *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < CFG_COUNT; i++) {
    if (set_value(cfg, &cfg_table[i], false, cfg_table[i].def, "default", errbuf, errlen) != 0) {
      config_free(cfg);
      return -1;
    }
  }
  if (path != NULL && load_yaml(cfg, path, errbuf, errlen) != 0) {
    config_free(cfg);
    return -1;
  }
  if (load_env(cfg, errbuf, errlen) != 0 || resolve_programs(cfg, errbuf, errlen) != 0) {
    config_free(cfg);
    return -1;
  }
  if (path != NULL && (cfg->source = strdup(path)) == NULL) {
    config_free(cfg);
    status_seterr(errbuf, errlen, "out of memory");
    return -1;
  }
  *out = cfg;
  return 0;
}

void config_free(shop_cfg *cfg) {
  if (cfg == NULL) return;
  for (size_t i = 0; i < CFG_COUNT; i++) {
    if (cfg_table[i].type == CFG_STR) free(*str_slot(cfg, &cfg_table[i]));
  }
  free(cfg->source);
  free(cfg);
}

const char *config_path_find(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--config") == 0) return argv[i + 1];
  }
  const char *env = getenv("SHOP_CONFIG");
  if (env != NULL && env[0] != '\0') return env;
  return access(CONFIG_DEFAULT_PATH, R_OK) == 0 ? CONFIG_DEFAULT_PATH : NULL;
}

const char *config_source_text(const shop_cfg *cfg) {
  return cfg != NULL && cfg->source != NULL
             ? cfg->source
             : "no config file (give --config PATH or $SHOP_CONFIG, or run in the folder that "
               "holds " CONFIG_DEFAULT_PATH ")";
}

size_t config_dump(const shop_cfg *cfg, char *buf, size_t len) {
  size_t need = 0;
  const char *prev_section = "";
  size_t prev_len = 0;
  for (size_t i = 0; i < CFG_COUNT; i++) {
    const cfg_key *k = &cfg_table[i];
    const char *dot = strchr(k->path, '.');
    size_t slen = (size_t)(dot - k->path);
    char line[1024];
    int n = 0;
    if (slen != prev_len || strncmp(prev_section, k->path, slen) != 0) {
      n += snprintf(line + n, sizeof line - (size_t)n, "%.*s:\n", (int)slen, k->path);
      prev_section = k->path;
      prev_len = slen;
    }
    if (k->type == CFG_INT) {
      n += snprintf(line + n, sizeof line - (size_t)n, "  %s: %d\n", dot + 1,
                    *int_slot((shop_cfg *)cfg, k));
    } else {
      const char *v = *str_slot((shop_cfg *)cfg, k);
      if (k->secret) v = (v != NULL && v[0] != '\0') ? "***" : "";
      n += snprintf(line + n, sizeof line - (size_t)n, "  %s: \"%s\"\n", dot + 1, v);
    }
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    if (need < len) snprintf(buf + need, len - need, "%s", line);
    need += (size_t)n;
  }
  return need;
}

int config_print(const shop_cfg *cfg, const char *key, FILE *f) {
  if (key == NULL) {
    size_t n = config_dump(cfg, NULL, 0);
    char *buf = malloc(n + 1);
    if (buf == NULL) {
      fprintf(stderr, "--print-config: out of memory\n");
      return 2;
    }
    config_dump(cfg, buf, n + 1);
    fputs(buf, f);
    free(buf);
    return 0;
  }
  bool file_suffix;
  const cfg_key *k = find_key(key, &file_suffix);
  if (k == NULL || file_suffix) {
    fprintf(stderr, "--print-config: %s: unknown key\n", key);
    return 2;
  }
  if (k->type == CFG_INT) {
    fprintf(f, "%d\n", *int_slot((shop_cfg *)cfg, k));
  } else {
    const char *v = *str_slot((shop_cfg *)cfg, k);
    if (k->secret) v = (v != NULL && v[0] != '\0') ? "***" : "";
    fprintf(f, "%s\n", v != NULL ? v : "");
  }
  return 0;
}

bool config_print_arg(int argc, char **argv, const char **key) {
  *key = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--print-config") != 0) continue;
    if (i + 1 < argc && argv[i + 1][0] != '-') *key = argv[i + 1];
    return true;
  }
  return false;
}
