/* shopctl's commands: options and main, the helpers they share, call and
 * health; the others are in commands_*.c (cli_internal.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "config/config.h"
#include "events/events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "reconcile/reconcile.h"
#include "rpc/rpc.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

void cli_usage(FILE *f) {
  fputs(
      "cli_usage: shopctl [options] <command> [args]\n"
      "commands:\n"
      "  list [service]                 services (or a service's methods)\n"
      "  describe <service|method|message>\n"
      "  call <method> ['<json>']       JSON request (or stdin), JSON reply\n"
      "  health                         Health/Check of every endpoint in config\n"
      "  login <email>                  keep tokens in $XDG_CONFIG_HOME/shop/credentials.json\n"
      "  logout\n"
      "  events tail <topic>            print records decoded as JSON lines\n"
      "  dlt list <topic> <group>       dead letters of a consumer group\n"
      "  dlt replay <topic> <group>     re-publish them to their topic\n"
      "  reconcile                      check money, stock and the audit log (exit 1: broken)\n"
      "  rebuild-projection             rebuild the order read model from the audit log\n"
      "  seed [customer-email]          demo data: a customer, a small catalog (idempotent)\n"
      "  mail list | mail show <id|last>  what make run's mail catcher got (notify.mail_dir)\n"
      "options:\n"
      "  --server URL  --config PATH  --timeout MS|Ns  -H key:value\n"
      "  --idempotency-key KEY  --profile NAME  --password-stdin  --password-file PATH\n"
      "  --brokers HOST:PORT  --from-beginning  --max N  --event-id ID\n"
      "  --settle SECONDS  --json  --since UNIX_MS|10m  --sku-prefix P  --database NAME\n"
      "  --print-config [KEY]           the effective config (or one key's value), then exit\n",
      f);
}

/* ---- helpers ----------------------------------------------------------- */

void cli_print_status(const rpc_status *st, const char *what) {
  fprintf(stderr, "ERROR: %s%s%s: %s\n", what ? what : "", what ? ": " : "", status_name(st->code),
          st->message[0] ? st->message : status_text(st->code));
  for (size_t i = 0; i < st->n_violations; i++)
    fprintf(stderr, "  %s: %s\n", st->violations[i].field, st->violations[i].description);
  if (st->retry_delay_ms >= 0)
    fprintf(stderr, "  retry after %" PRId64 " ms\n", st->retry_delay_ms);
}

int cli_fail_code(status_code code, const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "ERROR: %s: ", status_name(code));
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  return status_exit_code(code);
}

void cli_print_json(const json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (s != NULL) puts(s);
  free(s);
}

const ProtobufCServiceDescriptor *cli_service_find(const char *name, size_t len) {
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++) {
    const ProtobufCServiceDescriptor *s = pbjson_service_registry[i];
    if ((strlen(s->name) == len && strncmp(s->name, name, len) == 0) ||
        (strlen(s->short_name) == len && strncmp(s->short_name, name, len) == 0))
      return s;
  }
  return NULL;
}

/* Accepts "/pkg.Service/Method", "pkg.Service/Method", "Service.Method"
 * and "pkg.Service.Method". */
bool cli_method_resolve(const char *text, const ProtobufCServiceDescriptor **svc,
                        const ProtobufCMethodDescriptor **m) {
  if (text[0] == '/') text++;
  const char *sep = strrchr(text, '/');
  if (sep == NULL) sep = strrchr(text, '.');
  if (sep == NULL) return false;
  *svc = cli_service_find(text, (size_t)(sep - text));
  if (*svc == NULL) return false;
  *m = protobuf_c_service_descriptor_get_method_by_name(*svc, sep + 1);
  return *m != NULL;
}

/* The configured endpoint of a service, or NULL. */
const char *cli_service_endpoint(const shop_cfg *cfg, const char *service) {
  if (cfg == NULL) return NULL;
  const char *url = config_service_endpoint(cfg, service);
  return url != NULL && url[0] ? url : NULL;
}

static status_code client_open_wait(rpc_client **cli, const cli_opts *o, const char *url,
                                    int wait_ms) {
  rpc_client_opts co;
  char err[STATUS_ERRBUF_SIZE];
  if (o->cfg != NULL) {
    rpc_client_opts_from_cfg(&co, o->cfg, url, "shopctl");
  } else {
    co = (rpc_client_opts){.url = url,
                           .caller = "shopctl",
                           .max_message_bytes = 4 << 20,
                           .default_timeout_ms = 5000,
                           .max_timeout_ms = 60000,
                           .retry_max = 2,
                           .retry_backoff_ms = 50};
  }
  if (o->timeout_ms > co.max_timeout_ms) co.max_timeout_ms = (int)o->timeout_ms;
  status_code rc = rpc_client_create(cli, &co, err, sizeof err);
  if (rc != STATUS_OK) {
    fprintf(stderr, "ERROR: %s: %s: %s\n", status_name(rc), url, err);
    return rc;
  }
  if (o->timeout_ms > 0 && o->timeout_ms < wait_ms) wait_ms = (int)o->timeout_ms;
  rpc_client_wait_connected(*cli, wait_ms);
  return STATUS_OK;
}

status_code cli_client_open(rpc_client **cli, const cli_opts *o, const char *url) {
  return client_open_wait(cli, o, url, 3000);
}

/* True when path ("/pkg.Service/Method") names a method of a
 * *CommandService shopctl knows. */
static bool path_is_command(const char *path) {
  const char *sp, *mp;
  size_t sn, mn;
  if (!rpc_method_path_split(path, &sp, &sn, &mp, &mn)) return false;
  const ProtobufCServiceDescriptor *d = cli_service_find(sp, sn);
  return d != NULL && rpc_service_is_command(d);
}

/* rpc_client_call_raw with the command line's options (timeout, -H
 * metadata), token and idempotency key. A command called without a key
 * gets a fresh one (a repeat with --idempotency-key returns the first
 * reply). */
static status_code call_raw(rpc_client *cli, const cli_opts *o, const char *path, const void *req,
                            size_t len, const char *token, const char *idem, uint8_t **resp,
                            size_t *resp_len, rpc_status *st) {
  char key[EVENTS_ID_SIZE];
  if (idem == NULL && path_is_command(path)) {
    cli_idem_key_new(key);
    idem = key;
  }
  rpc_call_opts co = {.timeout_ms = o->timeout_ms,
                      .token = token,
                      .idempotency_key = idem,
                      .metadata = o->md,
                      .n_metadata = o->n_md / 2};
  return rpc_client_call_raw(cli, path, req, len, resp, resp_len, &co, st);
}

/* Calls method_path with a typed request; on OK *out owns the decoded
 * reply. */
status_code cli_call_typed(rpc_client *cli, const cli_opts *o, const char *path,
                           const ProtobufCMessage *in, const ProtobufCMessageDescriptor *out_d,
                           ProtobufCMessage **out, const char *token, const char *idem,
                           rpc_status *st) {
  size_t len = protobuf_c_message_get_packed_size(in);
  uint8_t *buf = malloc(len ? len : 1);
  if (buf == NULL) return STATUS_RESOURCE_EXHAUSTED;
  protobuf_c_message_pack(in, buf);
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  status_code rc = call_raw(cli, o, path, buf, len, token, idem, &resp, &resp_len, st);
  free(buf);
  if (rc != STATUS_OK) return rc;
  *out = protobuf_c_message_unpack(out_d, NULL, resp_len, resp);
  free(resp);
  if (*out == NULL) {
    rpc_status_clear(st);
    st->code = STATUS_INTERNAL;
    snprintf(st->message, sizeof st->message, "reply does not decode as %s", out_d->name);
    return STATUS_INTERNAL;
  }
  return STATUS_OK;
}

void cli_idem_key_new(char out[EVENTS_ID_SIZE]) { events_uuid_v7(out); }

/* ---- call -------------------------------------------------------------- */

static int cmd_call(cli_opts *o) {
  if (o->n_args < 2 || o->n_args > 3) return cli_usage(stderr), 2;
  const ProtobufCServiceDescriptor *s;
  const ProtobufCMethodDescriptor *m;
  if (!cli_method_resolve(o->args[1], &s, &m))
    return cli_fail_code(STATUS_NOT_FOUND, "no method %s (try shopctl list)%s", o->args[1], "");
  const char *url = o->server ? o->server : cli_service_endpoint(o->cfg, s->name);
  if (url == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "no endpoint for %s: give --server URL%s",
                         s->name, "");
  json_error_t je;
  json_t *in = o->n_args == 3 ? json_loads(o->args[2], 0, &je) : json_loadf(stdin, 0, &je);
  if (in == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "request is not JSON: %s%s", je.text, "");
  char err[STATUS_ERRBUF_SIZE];
  uint8_t *req;
  size_t req_len;
  status_code rc = pbjson_to_bytes(&req, &req_len, m->input, in, err, sizeof err);
  json_decref(in);
  if (rc != STATUS_OK) return cli_fail_code(rc, "%s%s", err, "");
  char *token = NULL;
  cli_creds_token(o, &token);
  char path[512];
  snprintf(path, sizeof path, "/%s/%s", s->name, m->name);
  rpc_client *cli;
  rc = cli_client_open(&cli, o, url);
  if (rc != STATUS_OK) {
    free(req);
    free(token);
    return status_exit_code(rc);
  }
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  rpc_status st;
  rc = call_raw(cli, o, path, req, req_len, token, o->idempotency_key, &resp, &resp_len, &st);
  free(req);
  free(token);
  rpc_client_destroy(cli);
  if (rc != STATUS_OK) {
    cli_print_status(&st, NULL);
    if (rc == STATUS_UNAVAILABLE || rc == STATUS_DEADLINE_EXCEEDED)
      fprintf(stderr, "  endpoint: %s\n", url);
    return status_exit_code(rc);
  }
  json_t *out;
  rc = pbjson_from_bytes(&out, m->output, resp, resp_len, err, sizeof err);
  free(resp);
  if (rc != STATUS_OK) return cli_fail_code(STATUS_INTERNAL, "%s%s", err, "");
  cli_print_json(out);
  json_decref(out);
  return 0;
}

/* ---- health ------------------------------------------------------------ */

static int health_one(const cli_opts *o, const char *name, const char *url) {
  rpc_client *cli;
  status_code rc = client_open_wait(&cli, o, url, 1000);
  if (rc != STATUS_OK) return status_exit_code(rc);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  rc = cli_call_typed(cli, o, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, &resp, NULL, NULL, &st);
  rpc_client_destroy(cli);
  const char *state;
  int code = 0;
  if (rc == STATUS_OK) {
    Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)resp;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
        &grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
    state = ev ? ev->name : "UNKNOWN";
    if (r->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
      code = status_exit_code(STATUS_UNAVAILABLE);
    protobuf_c_message_free_unpacked(resp, NULL);
  } else {
    state = status_name(rc);
    code = status_exit_code(rc);
  }
  json_t *j = json_pack("{s:s, s:s, s:s}", "service", name, "endpoint", url, "status", state);
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  puts(s);
  free(s);
  json_decref(j);
  return code;
}

static int cmd_health(cli_opts *o) {
  if (o->server != NULL) return health_one(o, "server", o->server);
  if (o->cfg == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT,
                         "no config: give --server URL or --config PATH%s%s", "", "");
  int worst = 0;
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++) {
    const char *url = cli_service_endpoint(o->cfg, pbjson_service_registry[i]->name);
    if (url == NULL) continue;
    int code = health_one(o, pbjson_service_registry[i]->name, url);
    if (code != 0) worst = code;
  }
  return worst;
}

/* ---- main -------------------------------------------------------------- */

static bool parse_timeout(const char *s, int64_t *ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0) return false;
  if (strcmp(end, "s") == 0)
    v *= 1000;
  else if (strcmp(end, "m") == 0)
    v *= 60000;
  else if (*end != '\0' && strcmp(end, "ms") != 0)
    return false;
  *ms = (int64_t)v;
  return true;
}

static int parse_args(cli_opts *o, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(field)                                                                                \
  do {                                                                                             \
    if (next == NULL) {                                                                            \
      fprintf(stderr, "shopctl: %s needs a value\n", a);                                           \
      return 2;                                                                                    \
    }                                                                                              \
    o->field = next;                                                                               \
    i++;                                                                                           \
  } while (0)
    if (strcmp(a, "--server") == 0 || strcmp(a, "-s") == 0)
      TAKE(server);
    else if (strcmp(a, "--config") == 0)
      TAKE(config_path);
    else if (strcmp(a, "--brokers") == 0)
      TAKE(brokers);
    else if (strcmp(a, "--profile") == 0)
      TAKE(profile);
    else if (strcmp(a, "--idempotency-key") == 0)
      TAKE(idempotency_key);
    else if (strcmp(a, "--event-id") == 0)
      TAKE(event_id);
    else if (strcmp(a, "--password-file") == 0)
      TAKE(password_file);
    else if (strcmp(a, "--print-config") == 0) {
      o->print_config = true;
      if (next != NULL && next[0] != '-') o->print_key = next, i++;
    } else if (strcmp(a, "--password-stdin") == 0)
      o->password_stdin = true;
    else if (strcmp(a, "--from-beginning") == 0)
      o->from_beginning = true;
    else if (strcmp(a, "--json") == 0)
      o->json = true;
    else if (strcmp(a, "--since") == 0)
      TAKE(since);
    else if (strcmp(a, "--sku-prefix") == 0)
      TAKE(sku_prefix);
    else if (strcmp(a, "--database") == 0)
      TAKE(database);
    else if (strcmp(a, "--settle") == 0) {
      char *end;
      double v = next ? strtod(next, &end) : -1;
      if (next == NULL || end == next || *end != '\0' || v < 0 || v > 86400)
        return fprintf(stderr, "shopctl: --settle needs seconds (0..86400)\n"), 2;
      o->settle_ms = (int64_t)(v * 1000);
      i++;
    } else if (strcmp(a, "--timeout") == 0 || strcmp(a, "--max") == 0) {
      if (next == NULL) return fprintf(stderr, "shopctl: %s needs a value\n", a), 2;
      if (a[2] == 't' ? !parse_timeout(next, &o->timeout_ms)
                      : (o->max = strtol(next, NULL, 10)) <= 0)
        return fprintf(stderr, "shopctl: bad %s %s\n", a, next), 2;
      i++;
    } else if (strcmp(a, "-H") == 0 || strcmp(a, "--header") == 0) {
      if (next == NULL || strchr(next, ':') == NULL || o->n_md / 2 >= MAX_HEADERS)
        return fprintf(stderr, "shopctl: -H needs key:value\n"), 2;
      char *kv = strdup(next);
      if (kv == NULL) return 1;
      o->md_buf[o->n_md / 2] = kv;
      char *colon = strchr(kv, ':');
      *colon = '\0';
      const char *v = colon + 1;
      while (*v == ' ') v++;
      o->md[o->n_md++] = kv;
      o->md[o->n_md++] = v;
      i++;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      cli_usage(stdout);
      return -1;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "shopctl: unknown option %s\n", a);
      return 2;
    } else if (o->n_args < (int)(sizeof o->args / sizeof o->args[0])) {
      o->args[o->n_args++] = a;
    } else {
      return fprintf(stderr, "shopctl: too many arguments\n"), 2;
    }
#undef TAKE
  }
  return 0;
}

int cli_main(int argc, char **argv) {
  cli_opts o = {0};
  int code = parse_args(&o, argc, argv);
  if (code == 0 && o.n_args == 0 && !o.print_config) {
    cli_usage(stderr);
    code = 2;
  }
  if (code != 0) goto out;
  /* Config: as every program finds it (config_path_find). */
  const char *path = config_path_find(argc, argv);
  if (path != NULL || o.print_config) {
    char err[STATUS_ERRBUF_SIZE];
    if (config_load(&o.cfg, path, err, sizeof err) != 0) {
      fprintf(stderr, "shopctl: %s\n", err);
      code = 2;
      goto out;
    }
  }
  if (o.print_config) {
    code = config_print(o.cfg, o.print_key, stdout);
    goto out;
  }
  static const struct {
    const char *name;
    int (*run)(cli_opts *o);
  } commands[] = {
      {"list", cli_cmd_list},
      {"describe", cli_cmd_describe},
      {"call", cmd_call},
      {"health", cmd_health},
      {"login", cli_cmd_login},
      {"logout", cli_cmd_logout},
      {"events", cli_cmd_events_tail},
      {"dlt", cli_cmd_dlt},
      {"reconcile", cli_cmd_reconcile},
      {"rebuild-projection", cli_cmd_rebuild_projection},
      {"seed", cli_cmd_seed},
      {"mail", cli_cmd_mail},
  };
  const char *cmd = o.args[0];
  size_t k = 0;
  while (k < sizeof commands / sizeof commands[0] && strcmp(cmd, commands[k].name) != 0) k++;
  if (k < sizeof commands / sizeof commands[0]) {
    code = commands[k].run(&o);
  } else {
    fprintf(stderr, "shopctl: unknown command %s\n", cmd);
    cli_usage(stderr);
    code = 2;
  }
out:
  config_free(o.cfg);
  for (size_t i = 0; i < o.n_md / 2; i++) free(o.md_buf[i]);
  return code < 0 ? 0 : code;
}
