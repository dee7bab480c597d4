/* shopctl's commands: list, describe, call, health, login, logout, events
 * tail, dlt list and dlt replay, reconcile and rebuild-projection. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "events/events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "reconcile/reconcile.h"
#include "rpc/rpc.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

#define MAX_HEADERS 32
#define REFRESH_MARGIN_S 60

typedef struct cli_opts {
  const char *server;
  const char *config_path;
  const char *brokers;
  const char *profile;
  const char *idempotency_key;
  const char *event_id;
  const char *password_file;
  int64_t timeout_ms;
  bool password_stdin;
  bool from_beginning;
  bool json;
  long max;
  int64_t settle_ms;
  const char *since;
  const char *sku_prefix;
  const char *database;
  const char *md[2 * MAX_HEADERS];
  size_t n_md;
  char *md_buf[MAX_HEADERS];
  const char *args[8];
  int n_args;
  shop_cfg *cfg;
} cli_opts;

static void usage(FILE *f) {
  fputs(
      "usage: shopctl [options] <command> [args]\n"
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
      "options:\n"
      "  --server URL  --config PATH  --timeout MS|Ns  -H key:value\n"
      "  --idempotency-key KEY  --profile NAME  --password-stdin  --password-file PATH\n"
      "  --brokers HOST:PORT  --from-beginning  --max N  --event-id ID\n"
      "  --settle SECONDS  --json  --since UNIX_MS|10m  --sku-prefix P  --database NAME\n",
      f);
}

/* ---- helpers ----------------------------------------------------------- */

static void print_status(const rpc_status *st, const char *what) {
  fprintf(stderr, "ERROR: %s%s%s: %s\n", what ? what : "", what ? ": " : "", status_name(st->code),
          st->message[0] ? st->message : status_text(st->code));
  for (size_t i = 0; i < st->n_violations; i++)
    fprintf(stderr, "  %s: %s\n", st->violations[i].field, st->violations[i].description);
  if (st->retry_delay_ms >= 0)
    fprintf(stderr, "  retry after %" PRId64 " ms\n", st->retry_delay_ms);
}

static int fail_code(status_code code, const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "ERROR: %s: ", status_name(code));
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  return status_exit_code(code);
}

static void print_json(const json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (s != NULL) puts(s);
  free(s);
}

static bool str_ends(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const ProtobufCServiceDescriptor *service_find(const char *name, size_t len) {
  for (size_t i = 0; cli_service_registry[i] != NULL; i++) {
    const ProtobufCServiceDescriptor *s = cli_service_registry[i];
    if ((strlen(s->name) == len && strncmp(s->name, name, len) == 0) ||
        (strlen(s->short_name) == len && strncmp(s->short_name, name, len) == 0))
      return s;
  }
  return NULL;
}

/* Accepts "/pkg.Service/Method", "pkg.Service/Method", "Service.Method"
 * and "pkg.Service.Method". */
static bool method_resolve(const char *text, const ProtobufCServiceDescriptor **svc,
                           const ProtobufCMethodDescriptor **m) {
  if (text[0] == '/') text++;
  const char *sep = strrchr(text, '/');
  if (sep == NULL) sep = strrchr(text, '.');
  if (sep == NULL) return false;
  *svc = service_find(text, (size_t)(sep - text));
  if (*svc == NULL) return false;
  *m = protobuf_c_service_descriptor_get_method_by_name(*svc, sep + 1);
  return *m != NULL;
}

/* The configured endpoint of a service, or NULL. */
static const char *service_endpoint(const shop_cfg *cfg, const char *service) {
  if (cfg == NULL) return NULL;
  static const struct {
    const char *svc;
    size_t off;
  } map[] = {
      {"shop.user.v1.UserCommandService", offsetof(shop_cfg, endpoints.user_command)},
      {"shop.user.v1.UserQueryService", offsetof(shop_cfg, endpoints.user_query)},
      {"shop.product.v1.ProductCommandService", offsetof(shop_cfg, endpoints.product_command)},
      {"shop.product.v1.ProductQueryService", offsetof(shop_cfg, endpoints.product_query)},
      {"shop.order.v1.OrderCommandService", offsetof(shop_cfg, endpoints.order_command)},
      {"shop.order.v1.OrderQueryService", offsetof(shop_cfg, endpoints.order_query)},
      {"shop.audit.v1.AuditQueryService", offsetof(shop_cfg, endpoints.audit_query)},
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strcmp(map[i].svc, service) == 0) {
      const char *url = *(char *const *)((const char *)cfg + map[i].off);
      return url != NULL && url[0] ? url : NULL;
    }
  return NULL;
}

static status_code client_open_wait(rpc_client **cli, const cli_opts *o, const char *url,
                                    int wait_ms) {
  rpc_client_opts co;
  char err[256];
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

static status_code client_open(rpc_client **cli, const cli_opts *o, const char *url) {
  return client_open_wait(cli, o, url, 3000);
}

/* Calls method_path with a typed request; on OK *out owns the decoded
 * reply. */
static status_code call_typed(rpc_client *cli, const cli_opts *o, const char *path,
                              const ProtobufCMessage *in, const ProtobufCMessageDescriptor *out_d,
                              ProtobufCMessage **out, const char *token, const char *idem,
                              rpc_status *st) {
  size_t len = protobuf_c_message_get_packed_size(in);
  uint8_t *buf = malloc(len ? len : 1);
  if (buf == NULL) return STATUS_RESOURCE_EXHAUSTED;
  protobuf_c_message_pack(in, buf);
  rpc_call_opts co = {.timeout_ms = o->timeout_ms,
                      .token = token,
                      .idempotency_key = idem,
                      .metadata = o->md,
                      .n_metadata = o->n_md / 2};
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  status_code rc = rpc_client_call_raw(cli, path, buf, len, &resp, &resp_len, &co, st);
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

static void idem_key_new(char out[EVENTS_ID_SIZE]) { events_uuid_v7(out); }

/* ---- credentials ------------------------------------------------------- */

static bool creds_path(char *out, size_t len, bool mkdirs) {
  const char *xdg = getenv("XDG_CONFIG_HOME");
  const char *home = getenv("HOME");
  char dir[1024];
  if (xdg != NULL && xdg[0])
    snprintf(dir, sizeof dir, "%s", xdg);
  else if (home != NULL && home[0])
    snprintf(dir, sizeof dir, "%s/.config", home);
  else
    return false;
  if (mkdirs) {
    mkdir(dir, 0700);
    char shop[1100];
    snprintf(shop, sizeof shop, "%s/shop", dir);
    mkdir(shop, 0700);
  }
  snprintf(out, len, "%s/shop/credentials.json", dir);
  return true;
}

static json_t *creds_load(void) {
  char path[1200];
  if (!creds_path(path, sizeof path, false)) return json_object();
  json_t *j = json_load_file(path, 0, NULL);
  if (!json_is_object(j)) {
    json_decref(j);
    return json_object();
  }
  return j;
}

static bool creds_save(const json_t *all) {
  char path[1200], tmp[1300];
  if (!creds_path(path, sizeof path, true)) return false;
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  fchmod(fd, 0600);
  char *s = json_dumps(all, JSON_INDENT(2) | JSON_SORT_KEYS);
  bool ok = s != NULL && write(fd, s, strlen(s)) == (ssize_t)strlen(s);
  free(s);
  ok = close(fd) == 0 && ok;
  if (ok) ok = rename(tmp, path) == 0;
  if (!ok) unlink(tmp);
  return ok;
}

/* Credentials are kept per profile: --profile, else the user-command
 * endpoint they were obtained from. */
static const char *creds_profile(const cli_opts *o, const char *login_url) {
  return o->profile != NULL ? o->profile : login_url;
}

static void creds_store_tokens(json_t *all, const char *profile, const char *url, const char *email,
                               const Shop__User__V1__AuthTokens *t) {
  json_t *p =
      json_pack("{s:s, s:s, s:s, s:I}", "endpoint", url, "access_token", t->access_token,
                "refresh_token", t->refresh_token, "access_token_expires_at",
                (json_int_t)(t->access_token_expires_at ? t->access_token_expires_at->seconds : 0));
  if (p == NULL) return;
  if (email != NULL)
    json_object_set_new(p, "email", json_string(email));
  else {
    json_t *old = json_object_get(json_object_get(all, profile), "email");
    if (old) json_object_set(p, "email", old);
  }
  json_object_set_new(all, profile, p);
}

static const char *login_url(const cli_opts *o) {
  if (o->server != NULL) return o->server;
  return service_endpoint(o->cfg, "shop.user.v1.UserCommandService");
}

/* The access token of the profile, refreshed first when it expires within
 * REFRESH_MARGIN_S. *token is malloc'd (free()); NULL when not logged in. */
static void creds_token(const cli_opts *o, char **token) {
  *token = NULL;
  json_t *all = creds_load();
  const char *url = login_url(o);
  const char *profile = o->profile;
  json_t *p = profile ? json_object_get(all, profile) : NULL;
  if (p == NULL && url != NULL) p = json_object_get(all, url);
  if (p == NULL && o->profile == NULL) {
    /* The only profile, whatever endpoint it came from (a call to another
     * service than user-command). */
    if (json_object_size(all) == 1) {
      const char *k;
      json_t *v;
      json_object_foreach(all, k, v) { p = v, profile = k; }
    }
  } else if (p != NULL && profile == NULL) {
    profile = url;
  }
  if (p == NULL) goto out;
  const char *access = json_string_value(json_object_get(p, "access_token"));
  const char *refresh = json_string_value(json_object_get(p, "refresh_token"));
  const char *endpoint = json_string_value(json_object_get(p, "endpoint"));
  json_int_t exp = json_integer_value(json_object_get(p, "access_token_expires_at"));
  if (access == NULL) goto out;
  if (exp == 0 || exp - (json_int_t)time(NULL) > REFRESH_MARGIN_S || refresh == NULL ||
      endpoint == NULL) {
    *token = strdup(access);
    goto out;
  }
  /* Near expiry: RefreshToken rotates both tokens. */
  rpc_client *cli;
  if (client_open(&cli, o, endpoint) != STATUS_OK) goto out;
  Shop__User__V1__RefreshTokenRequest req = SHOP__USER__V1__REFRESH_TOKEN_REQUEST__INIT;
  req.refresh_token = (char *)refresh;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  char key[EVENTS_ID_SIZE];
  idem_key_new(key);
  if (call_typed(cli, o, "/shop.user.v1.UserCommandService/RefreshToken", &req.base,
                 &shop__user__v1__refresh_token_response__descriptor, &resp, NULL, key,
                 &st) == STATUS_OK) {
    Shop__User__V1__RefreshTokenResponse *r = (Shop__User__V1__RefreshTokenResponse *)resp;
    if (r->tokens != NULL) {
      *token = strdup(r->tokens->access_token);
      creds_store_tokens(all, profile, endpoint, NULL, r->tokens);
      if (!creds_save(all)) fprintf(stderr, "warning: could not save the refreshed tokens\n");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
  } else {
    print_status(&st, "refreshing the access token (run shopctl login again)");
    if (exp > (json_int_t)time(NULL)) *token = strdup(access);
  }
  rpc_client_destroy(cli);
out:
  json_decref(all);
}

static bool read_password(const cli_opts *o, char *out, size_t len) {
  FILE *in = stdin;
  FILE *tty = NULL;
  struct termios old, quiet;
  bool echo_off = false;
  if (o->password_file != NULL) {
    in = fopen(o->password_file, "r");
    if (in == NULL) return false;
    bool ok = fgets(out, (int)len, in) != NULL;
    fclose(in);
    if (ok) out[strcspn(out, "\r\n")] = '\0';
    return ok;
  }
  if (!o->password_stdin) {
    tty = fopen("/dev/tty", "r+");
    if (tty == NULL) return false;
    in = tty;
    fputs("Password: ", tty);
    fflush(tty);
    if (tcgetattr(fileno(tty), &old) == 0) {
      quiet = old;
      quiet.c_lflag &= ~(tcflag_t)ECHO;
      echo_off = tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0;
    }
  }
  bool ok = fgets(out, (int)len, in) != NULL;
  if (tty != NULL) {
    if (echo_off) tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
  }
  if (ok) out[strcspn(out, "\r\n")] = '\0';
  return ok;
}

static int cmd_login(cli_opts *o) {
  if (o->n_args != 2) return usage(stderr), 2;
  const char *url = login_url(o);
  if (url == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT,
                     "no user-command endpoint: give --server or --config%s%s", "", "");
  char password[1024];
  if (!read_password(o, password, sizeof password))
    return fail_code(STATUS_INVALID_ARGUMENT, "could not read a password%s%s", "", "");
  rpc_client *cli;
  status_code rc = client_open(&cli, o, url);
  if (rc != STATUS_OK) return status_exit_code(rc);
  Shop__User__V1__LoginRequest req = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  req.email = (char *)o->args[1];
  req.password = password;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  char key[EVENTS_ID_SIZE];
  idem_key_new(key);
  rc = call_typed(cli, o, "/shop.user.v1.UserCommandService/Login", &req.base,
                  &shop__user__v1__login_response__descriptor, &resp, NULL,
                  o->idempotency_key ? o->idempotency_key : key, &st);
  memset(password, 0, sizeof password);
  rpc_client_destroy(cli);
  if (rc != STATUS_OK) {
    print_status(&st, NULL);
    return status_exit_code(rc);
  }
  Shop__User__V1__LoginResponse *r = (Shop__User__V1__LoginResponse *)resp;
  int code = 0;
  if (r->tokens == NULL) {
    code = fail_code(STATUS_INTERNAL, "Login returned no tokens%s%s", "", "");
  } else {
    json_t *all = creds_load();
    creds_store_tokens(all, creds_profile(o, url), url, o->args[1], r->tokens);
    if (!creds_save(all))
      code = fail_code(STATUS_INTERNAL, "could not write the credentials%s%s", "", "");
    json_decref(all);
    if (code == 0) {
      const ProtobufCEnumValue *role =
          protobuf_c_enum_descriptor_get_value(&shop__user__v1__role__descriptor, r->role);
      json_t *j = json_pack("{s:s, s:s, s:s}", "userId", r->user_id, "role", role ? role->name : "",
                            "profile", creds_profile(o, url));
      print_json(j);
      json_decref(j);
    }
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

static int cmd_logout(cli_opts *o) {
  json_t *all = creds_load();
  const char *url = login_url(o);
  const char *profile = o->profile ? o->profile : url;
  json_t *p = profile ? json_object_get(all, profile) : NULL;
  if (p == NULL) {
    json_decref(all);
    fprintf(stderr, "not logged in\n");
    return 0;
  }
  const char *refresh = json_string_value(json_object_get(p, "refresh_token"));
  const char *endpoint = json_string_value(json_object_get(p, "endpoint"));
  if (refresh != NULL && endpoint != NULL) {
    rpc_client *cli;
    if (client_open(&cli, o, endpoint) == STATUS_OK) {
      Shop__User__V1__LogoutRequest req = SHOP__USER__V1__LOGOUT_REQUEST__INIT;
      req.refresh_token = (char *)refresh;
      ProtobufCMessage *resp = NULL;
      rpc_status st;
      char key[EVENTS_ID_SIZE];
      idem_key_new(key);
      if (call_typed(cli, o, "/shop.user.v1.UserCommandService/Logout", &req.base,
                     &shop__user__v1__logout_response__descriptor, &resp, NULL, key,
                     &st) == STATUS_OK)
        protobuf_c_message_free_unpacked(resp, NULL);
      else
        print_status(&st, "revoking the refresh token");
      rpc_client_destroy(cli);
    }
  }
  json_object_del(all, profile);
  int code = creds_save(all) ? 0 : 1;
  json_decref(all);
  return code;
}

/* ---- list and describe ------------------------------------------------- */

/* What a server reports through reflection: the names of the services it
 * serves and, from its descriptor set, their methods. */
typedef struct remote {
  json_t *names;    /* ["pkg.Service", ...] */
  json_t *services; /* cli_descriptor_set_services() */
} remote;

static void remote_free(remote *r) {
  json_decref(r->names);
  json_decref(r->services);
}

/* False on error (printed, *code set). */
static bool reflect(const cli_opts *o, remote *out, int *code) {
  *out = (remote){0};
  rpc_client *cli;
  status_code rc = client_open(&cli, o, o->server);
  if (rc != STATUS_OK) {
    *code = status_exit_code(rc);
    return false;
  }
  Shop__Rpc__V1__GetDescriptorSetRequest req = SHOP__RPC__V1__GET_DESCRIPTOR_SET_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  rc = call_typed(cli, o, "/shop.rpc.v1.ServerReflectionService/GetDescriptorSet", &req.base,
                  &shop__rpc__v1__get_descriptor_set_response__descriptor, &resp, NULL, NULL, &st);
  rpc_client_destroy(cli);
  if (rc != STATUS_OK) {
    print_status(&st, o->server);
    *code = status_exit_code(rc);
    return false;
  }
  Shop__Rpc__V1__GetDescriptorSetResponse *r = (Shop__Rpc__V1__GetDescriptorSetResponse *)resp;
  out->names = json_array();
  for (size_t i = 0; i < r->n_services; i++)
    json_array_append_new(out->names, json_string(r->services[i]));
  out->services =
      cli_descriptor_set_services(r->file_descriptor_set.data, r->file_descriptor_set.len);
  protobuf_c_message_free_unpacked(resp, NULL);
  if (out->services == NULL) {
    remote_free(out);
    *code = fail_code(STATUS_INTERNAL, "%s sent a descriptor set that does not decode%s", o->server,
                      "");
    return false;
  }
  return true;
}

/* The served service named by text (full or short name): its full name
 * and methods, or NULL. */
static const char *remote_service(const remote *r, const char *text, size_t len, json_t **methods) {
  size_t i;
  json_t *v;
  json_array_foreach(r->names, i, v) {
    const char *full = json_string_value(v);
    const char *dot = strrchr(full, '.');
    const char *shrt = dot ? dot + 1 : full;
    if ((strlen(full) == len && strncmp(full, text, len) == 0) ||
        (strlen(shrt) == len && strncmp(shrt, text, len) == 0)) {
      *methods = json_object_get(r->services, full);
      return full;
    }
  }
  return NULL;
}

static void print_remote_method(const char *svc, const json_t *m) {
  const char *name = json_string_value(json_object_get(m, "name"));
  const char *shrt = strrchr(svc, '.');
  printf("rpc %s(%s) returns (%s);  // /%s/%s%s\n", name,
         json_string_value(json_object_get(m, "input")),
         json_string_value(json_object_get(m, "output")), svc, name,
         str_ends(shrt ? shrt + 1 : svc, "CommandService") ? ", command" : "");
}

static int cmd_list(cli_opts *o) {
  int code = 0;
  if (o->server != NULL) {
    remote r;
    if (!reflect(o, &r, &code)) return code;
    json_t *methods = NULL;
    size_t i;
    json_t *v;
    if (o->n_args >= 2) {
      const char *full = remote_service(&r, o->args[1], strlen(o->args[1]), &methods);
      if (full == NULL)
        code = fail_code(STATUS_NOT_FOUND, "no service %s on %s", o->args[1], o->server);
      json_array_foreach(methods, i, v)
          printf("%s.%s\n", full, json_string_value(json_object_get(v, "name")));
    } else {
      json_array_foreach(r.names, i, v) puts(json_string_value(v));
    }
    remote_free(&r);
    return code;
  }
  if (o->n_args >= 2) {
    const ProtobufCServiceDescriptor *s = service_find(o->args[1], strlen(o->args[1]));
    if (s == NULL) return fail_code(STATUS_NOT_FOUND, "no service %s%s", o->args[1], "");
    for (unsigned i = 0; i < s->n_methods; i++) printf("%s.%s\n", s->name, s->methods[i].name);
    return 0;
  }
  for (size_t i = 0; cli_service_registry[i] != NULL; i++) puts(cli_service_registry[i]->name);
  return 0;
}

static const char *type_name(const ProtobufCFieldDescriptor *f) {
  static const char *const names[] = {
      [PROTOBUF_C_TYPE_INT32] = "int32",       [PROTOBUF_C_TYPE_SINT32] = "sint32",
      [PROTOBUF_C_TYPE_SFIXED32] = "sfixed32", [PROTOBUF_C_TYPE_INT64] = "int64",
      [PROTOBUF_C_TYPE_SINT64] = "sint64",     [PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
      [PROTOBUF_C_TYPE_UINT32] = "uint32",     [PROTOBUF_C_TYPE_FIXED32] = "fixed32",
      [PROTOBUF_C_TYPE_UINT64] = "uint64",     [PROTOBUF_C_TYPE_FIXED64] = "fixed64",
      [PROTOBUF_C_TYPE_FLOAT] = "float",       [PROTOBUF_C_TYPE_DOUBLE] = "double",
      [PROTOBUF_C_TYPE_BOOL] = "bool",         [PROTOBUF_C_TYPE_STRING] = "string",
      [PROTOBUF_C_TYPE_BYTES] = "bytes",
  };
  if (f->type == PROTOBUF_C_TYPE_MESSAGE)
    return ((const ProtobufCMessageDescriptor *)f->descriptor)->name;
  if (f->type == PROTOBUF_C_TYPE_ENUM)
    return ((const ProtobufCEnumDescriptor *)f->descriptor)->name;
  return names[f->type];
}

static void describe_message(const ProtobufCMessageDescriptor *d) {
  printf("message %s {\n", d->name);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    printf("  %s%s %s = %u;%s\n", f->label == PROTOBUF_C_LABEL_REPEATED ? "repeated " : "",
           type_name(f), f->name, f->id,
           (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ? " // in a oneof" : "");
  }
  puts("}");
}

static void describe_method(const ProtobufCServiceDescriptor *s,
                            const ProtobufCMethodDescriptor *m) {
  printf("rpc %s(%s) returns (%s);  // /%s/%s%s\n", m->name, m->input->name, m->output->name,
         s->name, m->name, str_ends(s->short_name, "CommandService") ? ", command" : "");
}

static void describe_message_named(const char *name) {
  const ProtobufCMessageDescriptor *d = cli_message_find(name);
  if (d != NULL)
    describe_message(d);
  else
    printf("message %s { /* not known to this shopctl */ }\n", name);
}

/* describe with --server: services and methods as the server has them;
 * message fields from the linked descriptors. */
static int describe_remote(cli_opts *o, const char *what) {
  int code = 0;
  remote r;
  if (!reflect(o, &r, &code)) return code;
  const char *text = what[0] == '/' ? what + 1 : what;
  json_t *methods = NULL;
  const char *full = remote_service(&r, text, strlen(text), &methods);
  size_t i;
  json_t *v;
  if (full != NULL) {
    printf("service %s {\n", full);
    json_array_foreach(methods, i, v) {
      fputs("  ", stdout);
      print_remote_method(full, v);
    }
    puts("}");
    goto out;
  }
  const char *sep = strrchr(text, '/');
  if (sep == NULL) sep = strrchr(text, '.');
  if (sep != NULL && (full = remote_service(&r, text, (size_t)(sep - text), &methods)) != NULL) {
    json_array_foreach(methods, i, v) {
      if (strcmp(json_string_value(json_object_get(v, "name")), sep + 1) != 0) continue;
      print_remote_method(full, v);
      describe_message_named(json_string_value(json_object_get(v, "input")));
      describe_message_named(json_string_value(json_object_get(v, "output")));
      goto out;
    }
  }
  const ProtobufCMessageDescriptor *md = cli_message_find(what);
  if (md != NULL)
    describe_message(md);
  else
    code = fail_code(STATUS_NOT_FOUND, "%s serves no service or method %s", o->server, what);
out:
  remote_free(&r);
  return code;
}

static int cmd_describe(cli_opts *o) {
  if (o->n_args != 2) return usage(stderr), 2;
  const char *what = o->args[1];
  if (o->server != NULL) return describe_remote(o, what);
  const char *text = what[0] == '/' ? what + 1 : what;
  const ProtobufCServiceDescriptor *s = service_find(text, strlen(text));
  const ProtobufCMethodDescriptor *m = NULL;
  const ProtobufCMessageDescriptor *md = NULL;
  if (s != NULL) {
    printf("service %s {\n", s->name);
    for (unsigned i = 0; i < s->n_methods; i++) {
      fputs("  ", stdout);
      describe_method(s, &s->methods[i]);
    }
    puts("}");
  } else if (method_resolve(what, &s, &m)) {
    describe_method(s, m);
    describe_message(m->input);
    describe_message(m->output);
  } else if ((md = cli_message_find(what)) != NULL) {
    describe_message(md);
  } else {
    return fail_code(STATUS_NOT_FOUND, "no service, method or message named %s%s", what, "");
  }
  return 0;
}

/* ---- call -------------------------------------------------------------- */

static int cmd_call(cli_opts *o) {
  if (o->n_args < 2 || o->n_args > 3) return usage(stderr), 2;
  const ProtobufCServiceDescriptor *s;
  const ProtobufCMethodDescriptor *m;
  if (!method_resolve(o->args[1], &s, &m))
    return fail_code(STATUS_NOT_FOUND, "no method %s (try shopctl list)%s", o->args[1], "");
  const char *url = o->server ? o->server : service_endpoint(o->cfg, s->name);
  if (url == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "no endpoint for %s: give --server URL%s", s->name,
                     "");
  json_error_t je;
  json_t *in = o->n_args == 3 ? json_loads(o->args[2], 0, &je) : json_loadf(stdin, 0, &je);
  if (in == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "request is not JSON: %s%s", je.text, "");
  char err[512];
  uint8_t *req;
  size_t req_len;
  status_code rc = cli_json_to_bytes(&req, &req_len, m->input, in, err, sizeof err);
  json_decref(in);
  if (rc != STATUS_OK) return fail_code(rc, "%s%s", err, "");
  char *token = NULL;
  creds_token(o, &token);
  char key[EVENTS_ID_SIZE];
  const char *idem = o->idempotency_key;
  if (idem == NULL && str_ends(s->short_name, "CommandService")) {
    idem_key_new(key);
    idem = key;
  }
  char path[512];
  snprintf(path, sizeof path, "/%s/%s", s->name, m->name);
  rpc_client *cli;
  rc = client_open(&cli, o, url);
  if (rc != STATUS_OK) {
    free(req);
    free(token);
    return status_exit_code(rc);
  }
  rpc_call_opts co = {.timeout_ms = o->timeout_ms,
                      .token = token,
                      .idempotency_key = idem,
                      .metadata = o->md,
                      .n_metadata = o->n_md / 2};
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  rpc_status st;
  rc = rpc_client_call_raw(cli, path, req, req_len, &resp, &resp_len, &co, &st);
  free(req);
  free(token);
  rpc_client_destroy(cli);
  if (rc != STATUS_OK) {
    print_status(&st, NULL);
    if (rc == STATUS_UNAVAILABLE || rc == STATUS_DEADLINE_EXCEEDED)
      fprintf(stderr, "  endpoint: %s\n", url);
    return status_exit_code(rc);
  }
  json_t *out;
  rc = cli_json_from_bytes(&out, m->output, resp, resp_len, err, sizeof err);
  free(resp);
  if (rc != STATUS_OK) return fail_code(STATUS_INTERNAL, "%s%s", err, "");
  print_json(out);
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
  rc = call_typed(cli, o, "/grpc.health.v1.Health/Check", &req.base,
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
    return fail_code(STATUS_INVALID_ARGUMENT, "no config: give --server URL or --config PATH%s%s",
                     "", "");
  int worst = 0;
  for (size_t i = 0; cli_service_registry[i] != NULL; i++) {
    const char *url = service_endpoint(o->cfg, cli_service_registry[i]->name);
    if (url == NULL) continue;
    int code = health_one(o, cli_service_registry[i]->name, url);
    if (code != 0) worst = code;
  }
  return worst;
}

/* ---- events ------------------------------------------------------------ */

/* The one signal flag: set by SIGINT/SIGTERM so that tail stops cleanly
 * and frees its consumer. A signal handler can reach nothing else. */
static volatile sig_atomic_t stop_requested;

static void stop_cb(int sig) { stop_requested = sig; }

static const char *brokers_of(const cli_opts *o) {
  if (o->brokers != NULL) return o->brokers;
  return o->cfg != NULL ? o->cfg->kafka.brokers : NULL;
}

static json_t *event_json(const char *type, const void *value, size_t len) {
  const ProtobufCMessageDescriptor *d = type ? cli_message_find(type) : NULL;
  char err[256];
  json_t *j = NULL;
  if (d != NULL && cli_json_from_bytes(&j, d, value, len, err, sizeof err) == STATUS_OK) return j;
  char *b = cli_base64_encode(value, len);
  j = json_pack("{s:s}", "valueBase64", b ? b : "");
  free(b);
  return j;
}

static json_t *bytes_json(const void *p, size_t n) {
  if (p == NULL) return json_null();
  json_t *s = json_stringn_nocheck(p, n);
  return json_string_value(s) != NULL && memchr(p, '\0', n) == NULL ? s : json_null();
}

static void print_record(const rd_kafka_message_t *msg) {
  json_t *j = json_object();
  json_object_set_new(j, "topic", json_string(rd_kafka_topic_name(msg->rkt)));
  json_object_set_new(j, "partition", json_integer(msg->partition));
  json_object_set_new(j, "offset", json_integer(msg->offset));
  rd_kafka_timestamp_type_t tt;
  json_object_set_new(j, "timestampMs", json_integer(rd_kafka_message_timestamp(msg, &tt)));
  json_object_set_new(j, "key", bytes_json(msg->key, msg->key_len));
  json_t *hj = json_object();
  const char *type = NULL;
  char type_buf[256];
  rd_kafka_headers_t *hdrs = NULL;
  if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
      json_object_set_new(hj, name, bytes_json(val, size));
      if (strcmp(name, "ce_type") == 0 && val != NULL && size < sizeof type_buf) {
        memcpy(type_buf, val, size);
        type_buf[size] = '\0';
        type = type_buf;
      }
    }
  }
  json_object_set_new(j, "headers", hj);
  if (type != NULL) json_object_set_new(j, "type", json_string(type));
  json_object_set_new(j, "event", event_json(type, msg->payload, msg->len));
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  fflush(stdout);
  free(s);
  json_decref(j);
}

static int cmd_events_tail(cli_opts *o) {
  if (o->n_args != 3 || strcmp(o->args[1], "tail") != 0) return usage(stderr), 2;
  const char *brokers = brokers_of(o);
  if (brokers == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "no brokers: give --brokers or --config%s%s", "", "");
  const char *topic = o->args[2];
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  /* No group: tail reads without committing anything, by assignment. */
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", "shopctl-tail", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return fail_code(STATUS_INVALID_ARGUMENT, "%s%s", err, "");
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk == NULL) {
    rd_kafka_conf_destroy(conf);
    return fail_code(STATUS_INTERNAL, "%s%s", err, "");
  }
  int code = 0;
  rd_kafka_topic_partition_list_t *parts = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
  rd_kafka_topic_destroy(rkt);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err ||
      md->topics[0].partition_cnt == 0) {
    code = fail_code(STATUS_NOT_FOUND, "topic %s: %s", topic,
                     e ? rd_kafka_err2str(e)
                       : rd_kafka_err2str(md->topics[0].err ? md->topics[0].err
                                                            : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    goto out;
  }
  parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
  for (int i = 0; i < md->topics[0].partition_cnt; i++)
    rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
        o->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
  if ((e = rd_kafka_assign(rk, parts)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    code = fail_code(STATUS_UNAVAILABLE, "assign %s: %s", topic, rd_kafka_err2str(e));
    goto out;
  }
  struct sigaction sa = {.sa_handler = stop_cb};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  long seen = 0;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (!stop_requested && (o->max <= 0 || seen < o->max)) {
    if (o->timeout_ms > 0) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
      if (ms >= o->timeout_ms) {
        code = status_exit_code(STATUS_DEADLINE_EXCEEDED);
        break;
      }
    }
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
    if (msg == NULL) continue;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      /* nothing */
    } else if (msg->err) {
      fprintf(stderr, "warning: %s\n", rd_kafka_message_errstr(msg));
    } else {
      print_record(msg);
      seen++;
    }
    rd_kafka_message_destroy(msg);
  }
out:
  if (md) rd_kafka_metadata_destroy(md);
  if (parts) rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  events_shutdown_wait(5000);
  return code;
}

static int dlt_entry_cb(const events_dlt_entry *e, void *arg) {
  json_t *j = json_object();
  json_object_set_new(j, "dltTopic", json_string(e->dlt_topic));
  json_object_set_new(j, "dltPartition", json_integer(e->dlt_partition));
  json_object_set_new(j, "dltOffset", json_integer(e->dlt_offset));
  json_object_set_new(j, "timestampMs", json_integer(e->timestamp_ms));
  json_object_set_new(j, "originalTopic", json_string(e->original_topic));
  json_object_set_new(j, "originalPartition", json_integer(e->original_partition));
  json_object_set_new(j, "originalOffset", json_integer(e->original_offset));
  json_object_set_new(j, "group", json_string(e->group));
  json_object_set_new(j, "error", json_string(e->error));
  json_object_set_new(j, "attempts", json_integer(e->attempts));
  json_object_set_new(j, "eventId", json_string(e->event_id));
  json_object_set_new(j, "type", json_string(e->event_type));
  json_object_set_new(j, "key", bytes_json(e->key, e->key_len));
  json_object_set_new(j, "replayed", json_boolean(e->replayed));
  json_object_set_new(j, "event",
                      event_json(e->event_type[0] ? e->event_type : NULL, e->value, e->value_len));
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  free(s);
  json_decref(j);
  (*(long *)arg)++;
  return 0;
}

static int cmd_dlt(cli_opts *o) {
  if (o->n_args != 4) return usage(stderr), 2;
  const char *brokers = brokers_of(o);
  if (brokers == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "no brokers: give --brokers or --config%s%s", "", "");
  char err[512] = "";
  status_code rc;
  int timeout = o->timeout_ms > 0 ? (int)o->timeout_ms : 30000;
  if (strcmp(o->args[1], "list") == 0) {
    long n = 0;
    rc = events_dlt_list(brokers, o->args[2], o->args[3], dlt_entry_cb, &n, timeout, err,
                         sizeof err);
  } else if (strcmp(o->args[1], "replay") == 0) {
    events_dlt_replay_opts ro = {.event_id = o->event_id, .timeout_ms = timeout};
    size_t n = 0;
    rc = events_dlt_replay(brokers, o->args[2], o->args[3], &ro, &n, err, sizeof err);
    if (rc == STATUS_OK) printf("{\"replayed\":%zu}\n", n);
  } else {
    return usage(stderr), 2;
  }
  events_shutdown_wait(5000);
  if (rc != STATUS_OK) return fail_code(rc, "%s%s", err, "");
  return 0;
}

/* ---- main -------------------------------------------------------------- */

/* ---- reconcile and rebuild-projection ---------------------------------- */

/* Exit status of reconcile: 0 clean, 1 something is broken, 14 the database
 * cannot be reached, 2 bad usage; other errors as status_exit_code. */
#define RECONCILE_EXIT_BROKEN 1

/* --since: Unix milliseconds, or a duration ago ("90s", "10m", "2h"). */
static bool parse_since(const char *s, int64_t *ms) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || v < 0) return false;
  int64_t unit = 0;
  if (*end == '\0') {
    *ms = v;
    return true;
  }
  if (strcmp(end, "s") == 0)
    unit = 1000;
  else if (strcmp(end, "m") == 0)
    unit = 60000;
  else if (strcmp(end, "h") == 0)
    unit = 3600000;
  else if (strcmp(end, "d") == 0)
    unit = 86400000;
  else
    return false;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  *ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - v * unit;
  return true;
}

static void reconcile_print_json(const reconcile_report *r) {
  json_t *findings = json_array();
  for (size_t i = 0; i < r->findings_count; i++)
    json_array_append_new(
        findings, json_pack("{s:s, s:s, s:s}", "kind", reconcile_kind_name(r->findings[i].kind),
                            "id", r->findings[i].id, "why", r->findings[i].why));
  json_t *j = json_pack(
      "{s:b, s:i, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:o}", "clean",
      r->findings_count == 0, "runs", r->runs, "elapsedMs", (json_int_t)r->elapsed_ms, "orders",
      (json_int_t)r->orders, "ordersByStatus", "PENDING", (json_int_t)r->orders_pending,
      "CONFIRMED", (json_int_t)r->orders_confirmed, "SHIPPED", (json_int_t)r->orders_shipped,
      "CANCELLED", (json_int_t)r->orders_cancelled, "products", (json_int_t)r->products,
      "auditEvents", (json_int_t)r->events, "findings", findings);
  print_json(j);
  json_decref(j);
}

static int cmd_reconcile(cli_opts *o) {
  if (o->n_args != 1) return usage(stderr), 2;
  if (o->cfg == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "no config: give --config PATH%s%s", "", "");
  reconcile_opts ro;
  reconcile_opts_init(&ro);
  ro.settle_ms = (int)o->settle_ms;
  ro.sku_prefix = o->sku_prefix;
  ro.database = o->database;
  if (o->since != NULL && !parse_since(o->since, &ro.since_ms))
    return fprintf(stderr, "shopctl: bad --since %s (Unix ms, or 90s, 10m, 2h, 1d)\n", o->since), 2;
  reconcile_report r;
  char err[512];
  status_code rc = reconcile_run(o->cfg, &ro, &r, err, sizeof err);
  if (rc != STATUS_OK) {
    fprintf(stderr, "ERROR: %s: reconcile: %s\n", status_name(rc), err);
    if (rc == STATUS_UNAVAILABLE)
      fprintf(stderr, "  database: %s:%d\n", o->cfg->mysql.host, o->cfg->mysql.port);
    return status_exit_code(rc);
  }
  if (o->json) {
    reconcile_print_json(&r);
  } else {
    for (size_t i = 0; i < r.findings_count; i++)
      printf("%s %s: %s\n", reconcile_kind_name(r.findings[i].kind), r.findings[i].id,
             r.findings[i].why);
    printf("%s: %" PRId64 " orders (%" PRId64 " pending, %" PRId64 " confirmed, %" PRId64
           " shipped, %" PRId64 " cancelled), %" PRId64 " products, %" PRId64
           " audit events; %d run(s) in %" PRId64 " ms\n",
           r.findings_count == 0 ? "clean" : "BROKEN", r.orders, r.orders_pending,
           r.orders_confirmed, r.orders_shipped, r.orders_cancelled, r.products, r.events, r.runs,
           r.elapsed_ms);
    if (r.findings_count > 0) printf("%zu finding(s)\n", r.findings_count);
  }
  int code = r.findings_count == 0 ? 0 : RECONCILE_EXIT_BROKEN;
  reconcile_report_free(&r);
  return code;
}

static int cmd_rebuild_projection(cli_opts *o) {
  if (o->n_args != 1) return usage(stderr), 2;
  const char *url =
      o->server ? o->server : service_endpoint(o->cfg, "shop.audit.v1.AuditQueryService");
  if (url == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "no endpoint for %s: give --server URL%s",
                     "shop.audit.v1.AuditQueryService", "");
  char *token = NULL;
  creds_token(o, &token);
  rpc_client *cli;
  status_code rc = client_open(&cli, o, url);
  if (rc != STATUS_OK) {
    free(token);
    return status_exit_code(rc);
  }
  Shop__Audit__V1__RebuildOrderProjectionRequest req =
      SHOP__AUDIT__V1__REBUILD_ORDER_PROJECTION_REQUEST__INIT;
  req.max_differences = o->max > 0 ? (int32_t)o->max : 0;
  if (o->timeout_ms == 0) o->timeout_ms = 60000; /* a replay of the whole log */
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  rc = call_typed(cli, o, "/shop.audit.v1.AuditQueryService/RebuildOrderProjection", &req.base,
                  &shop__audit__v1__rebuild_order_projection_response__descriptor, &resp, token,
                  o->idempotency_key, &st);
  rpc_client_destroy(cli);
  free(token);
  if (rc != STATUS_OK) {
    print_status(&st, "RebuildOrderProjection");
    return status_exit_code(rc);
  }
  Shop__Audit__V1__RebuildOrderProjectionResponse *r =
      (Shop__Audit__V1__RebuildOrderProjectionResponse *)resp;
  if (o->json) {
    json_t *j;
    char err[256];
    if (cli_json_from_message(&j, resp, err, sizeof err) == STATUS_OK) {
      print_json(j);
      json_decref(j);
    }
  } else {
    for (size_t i = 0; i < r->n_differences; i++) {
      const Shop__Audit__V1__OrderDifference *d = r->differences[i];
      printf("order %s: %s: rebuilt %s, live %s\n", d->order_id, d->field,
             d->rebuilt[0] ? d->rebuilt : "(missing)", d->live[0] ? d->live : "(missing)");
    }
    printf("%s: replayed %" PRId64 " audit events into %" PRId64 " orders; compared %" PRId64
           " with the live read model; %" PRId64 " difference(s)%s\n",
           r->match ? "match" : "DIFFERENT", r->events_applied, r->orders_rebuilt,
           r->orders_compared, r->difference_count,
           (size_t)r->difference_count > r->n_differences ? " (first ones listed)" : "");
  }
  int code = r->match ? 0 : RECONCILE_EXIT_BROKEN;
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

/* ---- seed -------------------------------------------------------------- */

static int cmd_seed(cli_opts *o) {
  if (o->n_args > 2) return usage(stderr), 2;
  if (o->cfg == NULL)
    return fail_code(STATUS_INVALID_ARGUMENT, "no config: give --config PATH%s%s", "", "");
  if (o->password_file == NULL && !o->password_stdin)
    return fail_code(STATUS_INVALID_ARGUMENT,
                     "give the customer's password: --password-file PATH or --password-stdin%s%s",
                     "", "");
  char password[1024];
  if (!read_password(o, password, sizeof password))
    return fail_code(STATUS_INVALID_ARGUMENT, "could not read a password%s%s", "", "");
  int code = cli_seed(o->cfg, o->n_args == 2 ? o->args[1] : "customer@shop.local", password,
                      o->sku_prefix, stdout);
  memset(password, 0, sizeof password);
  return code;
}

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
    else if (strcmp(a, "--password-stdin") == 0)
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
      usage(stdout);
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
  if (code == 0 && o.n_args == 0) {
    usage(stderr);
    code = 2;
  }
  if (code != 0) goto out;
  /* Config: --config, else $SHOP_CONFIG, else config/shop.yaml if present. */
  const char *path = o.config_path ? o.config_path : getenv("SHOP_CONFIG");
  if (path != NULL && path[0] == '\0') path = NULL;
  if (path == NULL && access("config/shop.yaml", R_OK) == 0) path = "config/shop.yaml";
  if (path != NULL) {
    char err[512];
    if (config_load(&o.cfg, path, err, sizeof err) != 0) {
      fprintf(stderr, "shopctl: %s\n", err);
      code = 2;
      goto out;
    }
  }
  static const struct {
    const char *name;
    int (*run)(cli_opts *o);
  } commands[] = {
      {"list", cmd_list},           {"describe", cmd_describe},
      {"call", cmd_call},           {"health", cmd_health},
      {"login", cmd_login},         {"logout", cmd_logout},
      {"events", cmd_events_tail},  {"dlt", cmd_dlt},
      {"reconcile", cmd_reconcile}, {"rebuild-projection", cmd_rebuild_projection},
      {"seed", cmd_seed},
  };
  const char *cmd = o.args[0];
  size_t k = 0;
  while (k < sizeof commands / sizeof commands[0] && strcmp(cmd, commands[k].name) != 0) k++;
  if (k < sizeof commands / sizeof commands[0]) {
    code = commands[k].run(&o);
  } else {
    fprintf(stderr, "shopctl: unknown command %s\n", cmd);
    usage(stderr);
    code = 2;
  }
out:
  config_free(o.cfg);
  for (size_t i = 0; i < o.n_md / 2; i++) free(o.md_buf[i]);
  return code < 0 ? 0 : code;
}
