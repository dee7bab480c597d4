/* shopctl's credentials: login, logout and the stored tokens. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
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

#define REFRESH_MARGIN_S 60

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
  return cli_service_endpoint(o->cfg, "shop.user.v1.UserCommandService");
}

/* The access token of the profile, refreshed first when it expires within
 * REFRESH_MARGIN_S. *token is malloc'd (free()); NULL when not logged in. */
void cli_creds_token(const cli_opts *o, char **token) {
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
  if (cli_client_open(&cli, o, endpoint) != STATUS_OK) goto out;
  Shop__User__V1__RefreshTokenRequest req = SHOP__USER__V1__REFRESH_TOKEN_REQUEST__INIT;
  req.refresh_token = (char *)refresh;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  if (cli_call_typed(cli, o, "/shop.user.v1.UserCommandService/RefreshToken", &req.base,
                     &shop__user__v1__refresh_token_response__descriptor, &resp, NULL, NULL,
                     &st) == STATUS_OK) {
    Shop__User__V1__RefreshTokenResponse *r = (Shop__User__V1__RefreshTokenResponse *)resp;
    if (r->tokens != NULL) {
      *token = strdup(r->tokens->access_token);
      creds_store_tokens(all, profile, endpoint, NULL, r->tokens);
      if (!creds_save(all)) fprintf(stderr, "warning: could not save the refreshed tokens\n");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
  } else {
    cli_print_status(&st, "refreshing the access token (run shopctl login again)");
    if (exp > (json_int_t)time(NULL)) *token = strdup(access);
  }
  rpc_client_destroy(cli);
out:
  json_decref(all);
}

bool cli_read_password(const cli_opts *o, char *out, size_t len) {
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

int cli_cmd_login(cli_opts *o) {
  if (o->n_args != 2) return cli_usage(stderr), 2;
  const char *url = login_url(o);
  if (url == NULL)
    return cli_fail_code(STATUS_INVALID_ARGUMENT,
                         "no user-command endpoint: give --server or --config%s%s", "", "");
  char password[1024];
  if (!cli_read_password(o, password, sizeof password))
    return cli_fail_code(STATUS_INVALID_ARGUMENT, "could not read a password%s%s", "", "");
  rpc_client *cli;
  status_code rc = cli_client_open(&cli, o, url);
  if (rc != STATUS_OK) return status_exit_code(rc);
  Shop__User__V1__LoginRequest req = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  req.email = (char *)o->args[1];
  req.password = password;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  rc = cli_call_typed(cli, o, "/shop.user.v1.UserCommandService/Login", &req.base,
                      &shop__user__v1__login_response__descriptor, &resp, NULL, o->idempotency_key,
                      &st);
  memset(password, 0, sizeof password);
  rpc_client_destroy(cli);
  if (rc != STATUS_OK) {
    cli_print_status(&st, NULL);
    return status_exit_code(rc);
  }
  Shop__User__V1__LoginResponse *r = (Shop__User__V1__LoginResponse *)resp;
  int code = 0;
  if (r->tokens == NULL) {
    code = cli_fail_code(STATUS_INTERNAL, "Login returned no tokens%s%s", "", "");
  } else {
    json_t *all = creds_load();
    creds_store_tokens(all, creds_profile(o, url), url, o->args[1], r->tokens);
    if (!creds_save(all))
      code = cli_fail_code(STATUS_INTERNAL, "could not write the credentials%s%s", "", "");
    json_decref(all);
    if (code == 0) {
      const ProtobufCEnumValue *role =
          protobuf_c_enum_descriptor_get_value(&shop__user__v1__role__descriptor, r->role);
      json_t *j = json_pack("{s:s, s:s, s:s}", "userId", r->user_id, "role", role ? role->name : "",
                            "profile", creds_profile(o, url));
      cli_print_json(j);
      json_decref(j);
    }
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

int cli_cmd_logout(cli_opts *o) {
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
    if (cli_client_open(&cli, o, endpoint) == STATUS_OK) {
      Shop__User__V1__LogoutRequest req = SHOP__USER__V1__LOGOUT_REQUEST__INIT;
      req.refresh_token = (char *)refresh;
      ProtobufCMessage *resp = NULL;
      rpc_status st;
      if (cli_call_typed(cli, o, "/shop.user.v1.UserCommandService/Logout", &req.base,
                         &shop__user__v1__logout_response__descriptor, &resp, NULL, NULL,
                         &st) == STATUS_OK)
        protobuf_c_message_free_unpacked(resp, NULL);
      else
        cli_print_status(&st, "revoking the refresh token");
      rpc_client_destroy(cli);
    }
  }
  json_object_del(all, profile);
  int code = creds_save(all) ? 0 : 1;
  json_decref(all);
  return code;
}
