/* Users end to end: user-command and user-query as real processes, through
 * the RPC layer, the outbox, Kafka and the projection in MariaDB. Every
 * test makes its own users (unique emails); they run one at a time. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/auth.h"
#include "config/config.h"
#include "shop/user/v1/commands.pb-c.h"
#include "shop/user/v1/queries.pb-c.h"
#include "support/stack.h"

#define CMD "user-command"
#define QRY "user-query"
#define CMD_SVC (&shop__user__v1__user_command_service__descriptor)
#define QRY_SVC (&shop__user__v1__user_query_service__descriptor)
#define PASSWORD "correct horse battery staple"
#define WAIT_MS 10000

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  static const char *const programs[] = {CMD, QRY, NULL};
  stack_up(programs);
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

TestSuite(users, .init = stack_require, .fini = stack_release, .timeout = 60);

/* ---- helpers ----------------------------------------------------------------------- */

typedef Shop__User__V1__LoginResponse login_resp;

static void unique_email(char *out, size_t len, const char *who) {
  char u[96];
  stack_unique(u, sizeof u, who);
  snprintf(out, len, "%s@e2e.shop.test", u);
}

/* Registers a user; returns the status; user_id (may be NULL) gets the id. */
static status_code try_register(const char *email, const char *password, const char *name,
                                const char *phone, const char *k, char *user_id, rpc_status *st) {
  Shop__User__V1__RegisterUserRequest req = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  req.email = (char *)email;
  req.password = (char *)password;
  req.name = (char *)name;
  req.phone = (char *)phone;
  Shop__User__V1__RegisterUserResponse *resp = NULL;
  status_code code =
      stack_call(CMD, CMD_SVC, "RegisterUser", &req.base, (ProtobufCMessage **)&resp, NULL, k, st);
  if (code == STATUS_OK) {
    cr_assert_not_null(resp->consistency);
    cr_assert_str_eq(resp->consistency->aggregate_id, resp->user_id);
    cr_assert_eq(resp->consistency->version, 1);
    if (user_id != NULL) snprintf(user_id, 40, "%s", resp->user_id);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return code;
}

static void do_register(const char *email, char *user_id) {
  rpc_status st;
  cr_assert_eq(try_register(email, PASSWORD, "E2E User", "", stack_key(), user_id, &st), STATUS_OK,
               "RegisterUser: %s %s", status_name(st.code), st.message);
}

static status_code try_login(const char *email, const char *password, const char *k,
                             login_resp **out, rpc_status *st) {
  Shop__User__V1__LoginRequest req = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  req.email = (char *)email;
  req.password = (char *)password;
  return stack_call(CMD, CMD_SVC, "Login", &req.base, (ProtobufCMessage **)out, NULL, k, st);
}

static login_resp *do_login(const char *email, const char *password) {
  login_resp *r = NULL;
  rpc_status st;
  cr_assert_eq(try_login(email, password, stack_key(), &r, &st), STATUS_OK, "Login: %s %s",
               status_name(st.code), st.message);
  cr_assert_not_null(r->tokens);
  cr_assert_neq(r->tokens->access_token[0], '\0');
  cr_assert_neq(r->tokens->refresh_token[0], '\0');
  return r;
}

/* A fresh user (email from who), registered and logged in. */
static login_resp *new_user(char email[128], const char *who) {
  unique_email(email, 128, who);
  do_register(email, NULL);
  return do_login(email, PASSWORD);
}

static login_resp *admin_login(void) {
  char pw[256];
  stack_admin_password(pw, sizeof pw);
  login_resp *r = do_login("admin@shop.test", pw);
  cr_assert_eq(r->role, SHOP__USER__V1__ROLE__ROLE_ADMIN);
  return r;
}

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

static status_code try_refresh(const char *refresh, const char *k,
                               Shop__User__V1__RefreshTokenResponse **out, rpc_status *st) {
  Shop__User__V1__RefreshTokenRequest req = SHOP__USER__V1__REFRESH_TOKEN_REQUEST__INIT;
  req.refresh_token = (char *)refresh;
  return stack_call(CMD, CMD_SVC, "RefreshToken", &req.base, (ProtobufCMessage **)out, NULL, k, st);
}

/* A refresh with key (NULL: a fresh one) that must succeed; the caller
 * frees the reply. */
static Shop__User__V1__RefreshTokenResponse *refresh_ok(const char *refresh, const char *k) {
  Shop__User__V1__RefreshTokenResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(try_refresh(refresh, k != NULL ? k : stack_key(), &r, &st), STATUS_OK,
               "RefreshToken: %s %s", status_name(st.code), st.message);
  return r;
}

/* A refresh token that no longer works; st (may be NULL) gets why. */
static void refresh_refused(const char *refresh, rpc_status *st) {
  rpc_status local;
  cr_assert_eq(try_refresh(refresh, stack_key(), NULL, st != NULL ? st : &local),
               STATUS_UNAUTHENTICATED);
}

static Shop__User__V1__GetMeResponse *get_me(const char *token,
                                             const Shop__Common__V1__ConsistencyToken *ct,
                                             status_code want, rpc_status *st) {
  Shop__User__V1__GetMeRequest req = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  Shop__Common__V1__ConsistencyToken tok = SHOP__COMMON__V1__CONSISTENCY_TOKEN__INIT;
  if (ct != NULL) {
    tok.aggregate_id = ct->aggregate_id;
    tok.version = ct->version;
    rc.token = &tok;
    rc.wait_ms = WAIT_MS;
    req.consistency = &rc;
  }
  Shop__User__V1__GetMeResponse *r = NULL;
  status_code code =
      stack_call(QRY, QRY_SVC, "GetMe", &req.base, (ProtobufCMessage **)&r, token, NULL, st);
  cr_assert_eq(code, want, "GetMe: %s %s (wanted %s)", status_name(code), st->message,
               status_name(want));
  return r;
}

/* ---- registration, login, read your writes ------------------------------------------- */

Test(users, register_then_login_then_get_me_with_the_token_right_after) {
  char email[128], id[40];
  unique_email(email, sizeof email, "reg");
  do_register(email, id);
  login_resp *l = do_login(email, PASSWORD);
  cr_assert_str_eq(l->user_id, id);
  cr_assert_eq(l->role, SHOP__USER__V1__ROLE__ROLE_CUSTOMER);
  cr_assert_str_eq(l->consistency->aggregate_id, id);
  cr_assert_eq(l->consistency->version, 1);
  rpc_status st;
  Shop__User__V1__GetMeResponse *me =
      get_me(l->tokens->access_token, l->consistency, STATUS_OK, &st);
  cr_assert_str_eq(me->user->user_id, id);
  cr_assert_str_eq(me->user->email, email);
  cr_assert_str_eq(me->user->profile->name, "E2E User");
  cr_assert_eq(me->user->role, SHOP__USER__V1__ROLE__ROLE_CUSTOMER);
  cr_assert_eq(me->user->version, 1);
  cr_assert(me->user->profile->notification_preferences->email, "email is on by default");
  cr_assert_not(me->user->profile->notification_preferences->sms);
  cr_assert_gt(me->user->registered_at->seconds, 0);
  free_msg(me);
  free_msg(l);
}

Test(users, a_token_ahead_of_the_projection_is_failed_precondition) {
  char email[128], id[40];
  unique_email(email, sizeof email, "ahead");
  do_register(email, id);
  login_resp *l = do_login(email, PASSWORD);
  Shop__User__V1__GetMeRequest req = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  Shop__Common__V1__ConsistencyToken tok = SHOP__COMMON__V1__CONSISTENCY_TOKEN__INIT;
  tok.aggregate_id = id;
  tok.version = 99;
  rc.token = &tok;
  rc.wait_ms = 200;
  req.consistency = &rc;
  rpc_status st;
  cr_assert_eq(
      stack_call(QRY, QRY_SVC, "GetMe", &req.base, NULL, l->tokens->access_token, NULL, &st),
      STATUS_FAILED_PRECONDITION);
  cr_assert(stack_has_violation(&st, "consistency.token.version"));
  cr_assert_not_null(strstr(st.message, "token asks for 99"), "%s", st.message);
  cr_assert_str_eq(st.projection_id, id, "Status.projection names the aggregate");
  cr_assert_eq(st.projection_version, 1, "and the version the projection has");
  /* A token naming someone else is refused: their version is not ours. */
  tok.aggregate_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  STACK_ASSERT_INVALID(
      stack_call(QRY, QRY_SVC, "GetMe", &req.base, NULL, l->tokens->access_token, NULL, &st), st,
      "consistency.token.aggregate_id");
  free_msg(l);
}

Test(users, duplicate_email_is_already_exists_whatever_its_case) {
  char email[128], upper[160];
  unique_email(email, sizeof email, "dup");
  do_register(email, NULL);
  rpc_status st;
  cr_assert_eq(try_register(email, PASSWORD, "Second", "", stack_key(), NULL, &st),
               STATUS_ALREADY_EXISTS);
  cr_assert(stack_has_violation(&st, "email"));
  /* The same address typed with other capitals and spaces around it. */
  snprintf(upper, sizeof upper, "  %s  ", email);
  for (char *p = upper; *p != '\0'; p++)
    if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
  cr_assert_eq(try_register(upper, PASSWORD, "Third", "", stack_key(), NULL, &st),
               STATUS_ALREADY_EXISTS);
}

Test(users, wrong_password_and_unknown_email_are_the_same_unauthenticated) {
  char email[128], unknown[128];
  unique_email(email, sizeof email, "wrong");
  unique_email(unknown, sizeof unknown, "nobody");
  do_register(email, NULL);
  rpc_status st1, st2;
  cr_assert_eq(try_login(email, "not the password at all", stack_key(), NULL, &st1),
               STATUS_UNAUTHENTICATED);
  cr_assert_eq(try_login(unknown, PASSWORD, stack_key(), NULL, &st2), STATUS_UNAUTHENTICATED);
  cr_assert_str_eq(st1.message, st2.message, "the answer must not tell which one was wrong");
}

Test(users, text_that_looks_like_sql_is_stored_verbatim) {
  char email[128];
  unique_email(email, sizeof email, "sql");
  const char *name = "Robert'); DROP TABLE users;-- \" OR 1=1 #";
  rpc_status st;
  cr_assert_eq(try_register(email, PASSWORD, name, "+4915112345678", stack_key(), NULL, &st),
               STATUS_OK, "%s", st.message);
  login_resp *l = do_login(email, PASSWORD);
  Shop__User__V1__GetMeResponse *me =
      get_me(l->tokens->access_token, l->consistency, STATUS_OK, &st);
  cr_assert_str_eq(me->user->profile->name, name);
  cr_assert_str_eq(me->user->profile->phone, "+4915112345678");
  free_msg(me);
  free_msg(l);
}

/* ---- refresh tokens ---------------------------------------------------------------- */

Test(users, refresh_rotates_and_logout_revokes_the_refresh_token) {
  char email[128];
  login_resp *l = new_user(email, "refresh");
  Shop__User__V1__RefreshTokenResponse *r = refresh_ok(l->tokens->refresh_token, NULL);
  rpc_status st;
  cr_assert_str_neq(r->tokens->refresh_token, l->tokens->refresh_token, "rotated");
  cr_assert_str_eq(r->user_id, l->user_id);
  /* The new access token works. */
  free_msg(get_me(r->tokens->access_token, r->consistency, STATUS_OK, &st));
  /* The spent refresh token does not. */
  refresh_refused(l->tokens->refresh_token, &st);

  Shop__User__V1__LoginResponse *l2 = do_login(email, PASSWORD);
  Shop__User__V1__LogoutRequest lo = SHOP__USER__V1__LOGOUT_REQUEST__INIT;
  lo.refresh_token = l2->tokens->refresh_token;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "Logout", &lo.base, NULL, NULL, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  refresh_refused(l2->tokens->refresh_token, &st);
  cr_assert_not_null(strstr(st.message, "revoked"), "%s", st.message);
  /* Logging out again succeeds. */
  cr_assert_eq(stack_call(CMD, CMD_SVC, "Logout", &lo.base, NULL, NULL, stack_key(), &st),
               STATUS_OK);
  free_msg(l2);
  free_msg(r);
  free_msg(l);
}

Test(users, a_repeated_refresh_with_the_same_key_returns_the_same_tokens) {
  char email[128];
  login_resp *l = new_user(email, "refrep");
  const char *k = stack_key();
  Shop__User__V1__RefreshTokenResponse *a = refresh_ok(l->tokens->refresh_token, k);
  Shop__User__V1__RefreshTokenResponse *b = refresh_ok(l->tokens->refresh_token, k);
  cr_assert_str_eq(a->tokens->refresh_token, b->tokens->refresh_token);
  /* ...and that token is live. */
  free_msg(refresh_ok(b->tokens->refresh_token, NULL));
  free_msg(a);
  free_msg(b);
  free_msg(l);
}

Test(users, a_spent_refresh_token_presented_again_revokes_its_family) {
  char email[128];
  login_resp *l = new_user(email, "theft");
  Shop__User__V1__RefreshTokenResponse *a = refresh_ok(l->tokens->refresh_token, NULL);
  refresh_refused(l->tokens->refresh_token, NULL);
  /* The thief's replay also cost the legitimate successor its session. */
  refresh_refused(a->tokens->refresh_token, NULL);
  free_msg(a);
  free_msg(l);
}

Test(users, change_password_revokes_the_old_refresh_token) {
  char email[128];
  login_resp *l = new_user(email, "chpw");
  Shop__User__V1__ChangePasswordRequest req = SHOP__USER__V1__CHANGE_PASSWORD_REQUEST__INIT;
  req.old_password = PASSWORD;
  req.new_password = "a much better passphrase";
  Shop__User__V1__ChangePasswordResponse *resp = NULL;
  rpc_status st;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "ChangePassword", &req.base, (ProtobufCMessage **)&resp,
                          l->tokens->access_token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(resp->consistency->version, 2);
  refresh_refused(l->tokens->refresh_token, &st);
  cr_assert_eq(try_login(email, PASSWORD, stack_key(), NULL, &st), STATUS_UNAUTHENTICATED);
  login_resp *l2 = do_login(email, "a much better passphrase");
  /* The projection saw PasswordChanged: version 2. */
  Shop__User__V1__GetMeResponse *me =
      get_me(l2->tokens->access_token, resp->consistency, STATUS_OK, &st);
  cr_assert_eq(me->user->version, 2);
  free_msg(me);
  free_msg(l2);
  free_msg(resp);
  free_msg(l);
}

Test(users, change_password_with_a_wrong_old_password_is_unauthenticated) {
  char email[128];
  login_resp *l = new_user(email, "chpwbad");
  Shop__User__V1__ChangePasswordRequest req = SHOP__USER__V1__CHANGE_PASSWORD_REQUEST__INIT;
  req.old_password = "this is not it at all";
  req.new_password = "a much better passphrase";
  rpc_status st;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "ChangePassword", &req.base, NULL, l->tokens->access_token,
                          stack_key(), &st),
               STATUS_UNAUTHENTICATED);
  /* The refresh token still works: nothing changed. */
  free_msg(refresh_ok(l->tokens->refresh_token, NULL));
  free_msg(l);
}

/* ---- throttling --------------------------------------------------------------------- */

Test(users, repeated_failures_throttle_the_account_across_a_restart_of_user_command) {
  /* A second user-command of our own, so that restarting it disturbs no
   * other test; it shares the database with the first. */
  int port = proc_free_tcp_port();
  cr_assert_gt(port, 0);
  char url[64];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  proc *p = stack_start(CMD, url, NULL);

  char err[512];
  rpc_client_opts o;
  const shop_cfg *cfg = stack_cfg();
  rpc_client_opts_from_cfg(&o, cfg, url, "e2e-test");
  rpc_client *c = NULL;
  cr_assert_eq(rpc_client_create(&c, &o, err, sizeof err), STATUS_OK);
  cr_assert(rpc_client_wait_connected(c, 10000));

  char email[128], other[128];
  unique_email(email, sizeof email, "throttle");
  unique_email(other, sizeof other, "bystander");
  do_register(email, NULL);
  do_register(other, NULL);
  Shop__User__V1__LoginRequest bad = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  bad.email = email;
  bad.password = "definitely wrong password";
  rpc_status st;
  ProtobufCMessage *none = NULL; /* every call below fails: no reply */
  int failures = cfg->auth.login_max_failures;
  for (int i = 0; i < failures; i++) {
    rpc_call_opts co = {.idempotency_key = stack_key()};
    cr_assert_eq(rpc_client_call_sync(c, CMD_SVC, "Login", &bad.base, &none, &co, &st),
                 STATUS_UNAUTHENTICATED, "failure %d: %s", i + 1, status_name(st.code));
  }
  /* Locked now, even with the right password, and on the other instance. */
  Shop__User__V1__LoginRequest good = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  good.email = email;
  good.password = PASSWORD;
  rpc_call_opts co = {.idempotency_key = stack_key()};
  cr_assert_eq(rpc_client_call_sync(c, CMD_SVC, "Login", &good.base, &none, &co, &st),
               STATUS_RESOURCE_EXHAUSTED);
  cr_assert_gt(st.retry_delay_ms, 0, "RetryInfo says when to come back");
  cr_assert_eq(try_login(email, PASSWORD, stack_key(), NULL, &st), STATUS_RESOURCE_EXHAUSTED);
  /* Another account is not slowed. */
  free_msg(do_login(other, PASSWORD));

  /* Restart our user-command: the lock is in MariaDB, not in the process. */
  rpc_client_destroy(c);
  cr_assert_eq(stack_stop(p), 0, "user-command must exit 0 on SIGTERM");
  p = stack_start(CMD, url, NULL);
  cr_assert_eq(rpc_client_create(&c, &o, err, sizeof err), STATUS_OK);
  cr_assert(rpc_client_wait_connected(c, 10000));
  rpc_call_opts co2 = {.idempotency_key = stack_key()};
  cr_assert_eq(rpc_client_call_sync(c, CMD_SVC, "Login", &good.base, &none, &co2, &st),
               STATUS_RESOURCE_EXHAUSTED);
  cr_assert_gt(st.retry_delay_ms, 0);
  rpc_client_destroy(c);
  cr_assert_eq(stack_stop(p), 0);
}

/* ---- tokens ------------------------------------------------------------------------- */

static auth_keys *test_keys(void) {
  char err[512];
  const shop_cfg *cfg = stack_cfg();
  auth_keys *k = NULL;
  cr_assert_eq(auth_keys_create(&k, cfg->auth.jwt_key, strlen(cfg->auth.jwt_key), cfg->auth.issuer,
                                cfg->auth.access_ttl_s, err, sizeof err),
               STATUS_OK, "%s", err);
  return k;
}

static void b64(char *out, size_t len, const char *in) {
  sodium_bin2base64(out, len, (const unsigned char *)in, strlen(in),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* Each bad token is refused by both sides (a command and a query). */
static void assert_refused(const char *token) {
  rpc_status st;
  get_me(token, NULL, STATUS_UNAUTHENTICATED, &st);
  Shop__User__V1__UpdateProfileRequest req = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  req.name_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME;
  req.name = "Mallory";
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &req.base, NULL, token, stack_key(), &st),
               STATUS_UNAUTHENTICATED, "%s", status_name(st.code));
}

Test(users, tampered_expired_and_alg_none_tokens_are_refused) {
  char email[128];
  login_resp *l = new_user(email, "tokens");
  char tok[AUTH_TOKEN_MAX];

  /* Tampered: the payload says admin, the signature is the customer's. */
  snprintf(tok, sizeof tok, "%s", l->tokens->access_token);
  char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
  char claims[512], payload[700];
  snprintf(claims, sizeof claims,
           "{\"sub\":\"%s\",\"role\":\"admin\",\"iss\":\"shop\",\"iat\":%lld,\"exp\":%lld,"
           "\"jti\":\"0123456789abcdef0123456789abcdef\"}",
           l->user_id, (long long)time(NULL), (long long)time(NULL) + 600);
  b64(payload, sizeof payload, claims);
  char forged[AUTH_TOKEN_MAX * 2];
  snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(dot1 - tok), tok, payload, dot2);
  assert_refused(forged);
  /* Tampered: one character of the signature changed. */
  snprintf(tok, sizeof tok, "%s", l->tokens->access_token);
  size_t n = strlen(tok);
  tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
  assert_refused(tok);

  /* Expired: correctly signed, but an hour old with a 15-minute life. */
  auth_keys *k = test_keys();
  char err[256];
  cr_assert_eq(auth_token_sign(k, l->user_id, AUTH_ROLE_CUSTOMER, (int64_t)time(NULL) - 3600, tok,
                               sizeof tok, err, sizeof err),
               STATUS_OK, "%s", err);
  assert_refused(tok);
  auth_keys_destroy(k);

  /* alg: none, no signature. */
  char header[128];
  b64(header, sizeof header, "{\"alg\":\"none\",\"typ\":\"JWT\"}");
  snprintf(forged, sizeof forged, "%s.%s.", header, payload);
  assert_refused(forged);
  free_msg(l);
}

/* ---- authorization ---------------------------------------------------------------- */

Test(users, missing_token_is_unauthenticated_and_wrong_role_permission_denied) {
  char email[128], other_email[128], other[40];
  unique_email(email, sizeof email, "authz");
  unique_email(other_email, sizeof other_email, "authz-other");
  do_register(email, NULL);
  do_register(other_email, other);
  rpc_status st;
  get_me(NULL, NULL, STATUS_UNAUTHENTICATED, &st);
  login_resp *l = do_login(email, PASSWORD);
  Shop__User__V1__GetUserRequest gu = SHOP__USER__V1__GET_USER_REQUEST__INIT;
  gu.user_id = other;
  cr_assert_eq(
      stack_call(QRY, QRY_SVC, "GetUser", &gu.base, NULL, l->tokens->access_token, NULL, &st),
      STATUS_PERMISSION_DENIED);
  Shop__User__V1__ListUsersRequest lu = SHOP__USER__V1__LIST_USERS_REQUEST__INIT;
  cr_assert_eq(
      stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, NULL, l->tokens->access_token, NULL, &st),
      STATUS_PERMISSION_DENIED);
  Shop__User__V1__SetRoleRequest sr = SHOP__USER__V1__SET_ROLE_REQUEST__INIT;
  sr.user_id = l->user_id;
  sr.role = SHOP__USER__V1__ROLE__ROLE_ADMIN;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "SetRole", &sr.base, NULL, l->tokens->access_token,
                          stack_key(), &st),
               STATUS_PERMISSION_DENIED);
  Shop__User__V1__UpdateProfileRequest up = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  up.user_id = other;
  up.name_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME;
  up.name = "Not yours";
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, NULL, l->tokens->access_token,
                          stack_key(), &st),
               STATUS_PERMISSION_DENIED);
  free_msg(l);
}

Test(users, admin_reads_and_lists_users_and_sets_roles) {
  char email[128], id[40];
  unique_email(email, sizeof email, "promote");
  do_register(email, id);
  login_resp *user = do_login(email, PASSWORD);
  login_resp *admin = admin_login();
  rpc_status st;

  Shop__User__V1__SetRoleRequest sr = SHOP__USER__V1__SET_ROLE_REQUEST__INIT;
  sr.user_id = id;
  sr.role = SHOP__USER__V1__ROLE__ROLE_ADMIN;
  Shop__User__V1__SetRoleResponse *srr = NULL;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "SetRole", &sr.base, (ProtobufCMessage **)&srr,
                          admin->tokens->access_token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(srr->consistency->version, 2);
  /* The role change revoked the user's refresh token. */
  refresh_refused(user->tokens->refresh_token, &st);

  Shop__User__V1__GetUserRequest gu = SHOP__USER__V1__GET_USER_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = srr->consistency;
  rc.wait_ms = WAIT_MS;
  gu.user_id = id;
  gu.consistency = &rc;
  Shop__User__V1__GetUserResponse *gur = NULL;
  cr_assert_eq(stack_call(QRY, QRY_SVC, "GetUser", &gu.base, (ProtobufCMessage **)&gur,
                          admin->tokens->access_token, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(gur->user->role, SHOP__USER__V1__ROLE__ROLE_ADMIN);
  cr_assert_eq(gur->user->version, 2);

  Shop__User__V1__ListUsersRequest lu = SHOP__USER__V1__LIST_USERS_REQUEST__INIT;
  lu.text = email;
  Shop__User__V1__ListUsersResponse *lur = NULL;
  cr_assert_eq(stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, (ProtobufCMessage **)&lur,
                          admin->tokens->access_token, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(lur->n_users, 1);
  cr_assert_eq(lur->page->total_size, 1);
  cr_assert_str_eq(lur->users[0]->user_id, id);
  free_msg(lur);

  /* An admin may change another user's profile. */
  Shop__User__V1__UpdateProfileRequest up = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  up.user_id = id;
  up.name_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME;
  up.name = "Renamed by an admin";
  Shop__User__V1__UpdateProfileResponse *upr = NULL;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, (ProtobufCMessage **)&upr,
                          admin->tokens->access_token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_str_eq(upr->user_id, id);
  cr_assert_eq(upr->consistency->version, 3);
  free_msg(upr);
  free_msg(gur);
  free_msg(srr);
  free_msg(admin);
  free_msg(user);
}

Test(users, list_users_pages_newest_first) {
  char tag[64], email[3][128], id[3][40];
  stack_unique(tag, sizeof tag, "page");
  for (int i = 0; i < 3; i++) {
    snprintf(email[i], sizeof email[i], "%s-%d@e2e.shop.test", tag, i);
    do_register(email[i], id[i]);
  }
  login_resp *admin = admin_login();
  rpc_status st;
  /* The three users live on different partitions: a consistency token
   * covers one aggregate, so wait for each before listing. */
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  Shop__Common__V1__ConsistencyToken tok = SHOP__COMMON__V1__CONSISTENCY_TOKEN__INIT;
  rc.token = &tok;
  rc.wait_ms = WAIT_MS;
  tok.version = 1;
  for (int i = 0; i < 3; i++) {
    Shop__User__V1__GetUserRequest gu = SHOP__USER__V1__GET_USER_REQUEST__INIT;
    gu.user_id = id[i];
    tok.aggregate_id = id[i];
    gu.consistency = &rc;
    cr_assert_eq(
        stack_call(QRY, QRY_SVC, "GetUser", &gu.base, NULL, admin->tokens->access_token, NULL, &st),
        STATUS_OK, "%s", st.message);
  }
  Shop__User__V1__ListUsersRequest lu = SHOP__USER__V1__LIST_USERS_REQUEST__INIT;
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  page.page_size = 2;
  lu.page = &page;
  lu.text = tag;
  Shop__User__V1__ListUsersResponse *a = NULL, *b = NULL;
  cr_assert_eq(stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, (ProtobufCMessage **)&a,
                          admin->tokens->access_token, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(a->n_users, 2);
  cr_assert_eq(a->page->total_size, 3);
  cr_assert_str_eq(a->users[0]->user_id, id[2], "newest first");
  cr_assert_str_eq(a->users[1]->user_id, id[1]);
  cr_assert_neq(a->page->next_page_token[0], '\0');
  page.page_token = a->page->next_page_token;
  cr_assert_eq(stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, (ProtobufCMessage **)&b,
                          admin->tokens->access_token, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(b->n_users, 1);
  cr_assert_str_eq(b->users[0]->user_id, id[0]);
  cr_assert_str_eq(b->page->next_page_token, "");
  /* A token is bound to its filters. */
  lu.text = "something else";
  STACK_ASSERT_INVALID(
      stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, NULL, admin->tokens->access_token, NULL, &st),
      st, "page.page_token");
  free_msg(a);
  free_msg(b);
  free_msg(admin);
}

Test(users, update_profile_is_read_back_with_its_token) {
  char email[128];
  login_resp *l = new_user(email, "profile");
  Shop__User__V1__UpdateProfileRequest up = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  Shop__User__V1__NotificationPreferences np = SHOP__USER__V1__NOTIFICATION_PREFERENCES__INIT;
  np.sms = true;
  np.push = true;
  up.phone_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__PHONE_UPDATE_PHONE;
  up.phone = "+14155550123";
  up.notification_preferences = &np;
  up.expected_version = 1;
  Shop__User__V1__UpdateProfileResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, (ProtobufCMessage **)&r,
                          l->tokens->access_token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(r->consistency->version, 2);
  Shop__User__V1__GetMeResponse *me =
      get_me(l->tokens->access_token, r->consistency, STATUS_OK, &st);
  cr_assert_str_eq(me->user->profile->phone, "+14155550123");
  cr_assert_str_eq(me->user->profile->name, "E2E User", "the name was not given: kept");
  cr_assert_not(me->user->profile->notification_preferences->email);
  cr_assert(me->user->profile->notification_preferences->sms);
  /* A stale expected version is ABORTED. */
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, NULL, l->tokens->access_token,
                          stack_key(), &st),
               STATUS_ABORTED);
  free_msg(me);
  free_msg(r);
  free_msg(l);
}

/* ---- idempotency ----------------------------------------------------------------------- */

Test(users, a_repeated_command_with_the_same_key_changes_nothing) {
  char email[128], id1[40], id2[40];
  unique_email(email, sizeof email, "idem");
  const char *k = stack_key();
  rpc_status st;
  cr_assert_eq(try_register(email, PASSWORD, "Idem", "", k, id1, &st), STATUS_OK);
  cr_assert_eq(try_register(email, PASSWORD, "Idem", "", k, id2, &st), STATUS_OK,
               "a repeat answers like the first time: %s", st.message);
  cr_assert_str_eq(id1, id2);
  /* The same key with another request is refused. */
  cr_assert_eq(try_register(email, PASSWORD, "Other name", "", k, NULL, &st),
               STATUS_FAILED_PRECONDITION);
  cr_assert(stack_has_violation(&st, "idempotency_key"));

  login_resp *l = do_login(email, PASSWORD);
  Shop__User__V1__UpdateProfileRequest up = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  up.name_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME;
  up.name = "Renamed once";
  const char *k2 = stack_key();
  Shop__User__V1__UpdateProfileResponse *a = NULL, *b = NULL;
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, (ProtobufCMessage **)&a,
                          l->tokens->access_token, k2, &st),
               STATUS_OK);
  cr_assert_eq(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, (ProtobufCMessage **)&b,
                          l->tokens->access_token, k2, &st),
               STATUS_OK);
  cr_assert_eq(a->consistency->version, 2);
  cr_assert_eq(b->consistency->version, 2, "the repeat made no new version");

  /* A login repeated with its key hands out the same refresh token. */
  const char *k3 = stack_key();
  login_resp *x = NULL, *y = NULL;
  cr_assert_eq(try_login(email, PASSWORD, k3, &x, &st), STATUS_OK);
  cr_assert_eq(try_login(email, PASSWORD, k3, &y, &st), STATUS_OK);
  cr_assert_str_eq(x->tokens->refresh_token, y->tokens->refresh_token);

  /* The admin sees one user with that email, at version 2. */
  login_resp *admin = admin_login();
  Shop__User__V1__ListUsersRequest lu = SHOP__USER__V1__LIST_USERS_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = b->consistency;
  rc.wait_ms = WAIT_MS;
  lu.text = email;
  lu.consistency = &rc;
  Shop__User__V1__ListUsersResponse *lur = NULL;
  cr_assert_eq(stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, (ProtobufCMessage **)&lur,
                          admin->tokens->access_token, NULL, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(lur->page->total_size, 1);
  cr_assert_eq(lur->users[0]->version, 2);
  cr_assert_str_eq(lur->users[0]->profile->name, "Renamed once");
  free_msg(lur);
  free_msg(admin);
  free_msg(x);
  free_msg(y);
  free_msg(a);
  free_msg(b);
  free_msg(l);
}

/* ---- validation ---------------------------------------------------------------------------- */

static void assert_register_invalid(const char *email, const char *password, const char *name,
                                    const char *phone, const char *field) {
  rpc_status st;
  cr_assert_eq(try_register(email, password, name, phone, stack_key(), NULL, &st),
               STATUS_INVALID_ARGUMENT, "%s: got %s", field, status_name(st.code));
  cr_assert(stack_has_violation(&st, field), "no violation on %s (%s)", field, st.message);
}

Test(users, register_validates_the_email) {
  char long_local[100], long_email[300];
  memset(long_local, 'a', 65);
  long_local[65] = '\0';
  snprintf(long_email, sizeof long_email, "%s@example.com", long_local);
  const char *bad[] = {"",
                       "   ",
                       "no-at-sign",
                       "@example.com",
                       "user@",
                       "user@localhost",
                       "us..er@example.com",
                       ".user@example.com",
                       "user@-example.com",
                       "user@exa_mple.com",
                       "üser@example.com",
                       long_email};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_register_invalid(bad[i], PASSWORD, "Name", "", "email");
}

Test(users, register_validates_the_password_policy) {
  char email[128];
  unique_email(email, sizeof email, "pwpolicy");
  char longpw[200];
  memset(longpw, 'x', 129);
  longpw[0] = 'y';
  longpw[129] = '\0';
  assert_register_invalid(email, "", "Name", "", "password");
  assert_register_invalid(email, "short pw", "Name", "", "password");
  assert_register_invalid(email, longpw, "Name", "", "password");
  assert_register_invalid(email, "aaaaaaaaaaaaaaaa", "Name", "", "password");
  assert_register_invalid(email, email, "Name", "", "password");
  assert_register_invalid(email, "\xff\xfe not utf-8 at all", "Name", "", "password");
}

Test(users, register_validates_name_and_phone) {
  char email[128], longname[300];
  unique_email(email, sizeof email, "namephone");
  memset(longname, 'n', 201);
  longname[201] = '\0';
  assert_register_invalid(email, PASSWORD, "", "", "name");
  assert_register_invalid(email, PASSWORD, "   ", "", "name");
  assert_register_invalid(email, PASSWORD, longname, "", "name");
  assert_register_invalid(email, PASSWORD, "Tab\there", "", "name");
  assert_register_invalid(email, PASSWORD, "Name", "12345678", "phone");
  assert_register_invalid(email, PASSWORD, "Name", "+0123456789", "phone");
  assert_register_invalid(email, PASSWORD, "Name", "+12ab567890", "phone");
  assert_register_invalid(email, PASSWORD, "Name", "+1234567", "phone");
  /* Every violation is reported at once. */
  rpc_status st;
  cr_assert_eq(try_register("bad", "short", "", "x", stack_key(), NULL, &st),
               STATUS_INVALID_ARGUMENT);
  cr_assert_eq(st.n_violations, 4);
}

Test(users, other_commands_and_queries_validate_their_fields) {
  char email[128];
  login_resp *l = new_user(email, "valid");
  login_resp *admin = admin_login();
  rpc_status st;
  /* Login */
  STACK_ASSERT_INVALID(try_login(email, "", stack_key(), NULL, &st), st, "password");
  STACK_ASSERT_INVALID(try_login("not-an-email", PASSWORD, stack_key(), NULL, &st), st, "email");
  /* RefreshToken */
  STACK_ASSERT_INVALID(try_refresh("", stack_key(), NULL, &st), st, "refresh_token");
  refresh_refused("not-a-refresh-token", &st);
  /* Logout: the same checks */
  Shop__User__V1__LogoutRequest lo = SHOP__USER__V1__LOGOUT_REQUEST__INIT;
  lo.refresh_token = "";
  STACK_ASSERT_INVALID(stack_call(CMD, CMD_SVC, "Logout", &lo.base, NULL, NULL, stack_key(), &st),
                       st, "refresh_token");
  lo.refresh_token = "not-a-refresh-token";
  cr_assert_eq(stack_call(CMD, CMD_SVC, "Logout", &lo.base, NULL, NULL, stack_key(), &st),
               STATUS_UNAUTHENTICATED);
  /* UpdateProfile */
  Shop__User__V1__UpdateProfileRequest up = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__INIT;
  up.phone_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__PHONE_UPDATE_PHONE;
  up.phone = "0049 151";
  STACK_ASSERT_INVALID(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, NULL,
                                  l->tokens->access_token, stack_key(), &st),
                       st, "phone");
  up.phone_update_case = 0;
  up.name_update_case = SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME;
  up.name = "";
  STACK_ASSERT_INVALID(stack_call(CMD, CMD_SVC, "UpdateProfile", &up.base, NULL,
                                  l->tokens->access_token, stack_key(), &st),
                       st, "name");
  /* ChangePassword */
  Shop__User__V1__ChangePasswordRequest cp = SHOP__USER__V1__CHANGE_PASSWORD_REQUEST__INIT;
  cp.old_password = PASSWORD;
  cp.new_password = "short";
  STACK_ASSERT_INVALID(stack_call(CMD, CMD_SVC, "ChangePassword", &cp.base, NULL,
                                  l->tokens->access_token, stack_key(), &st),
                       st, "new_password");
  /* SetRole */
  Shop__User__V1__SetRoleRequest sr = SHOP__USER__V1__SET_ROLE_REQUEST__INIT;
  sr.user_id = l->user_id;
  sr.role = SHOP__USER__V1__ROLE__ROLE_UNSPECIFIED;
  STACK_ASSERT_INVALID(stack_call(CMD, CMD_SVC, "SetRole", &sr.base, NULL,
                                  admin->tokens->access_token, stack_key(), &st),
                       st, "role");
  sr.user_id = "not-a-user-id";
  sr.role = SHOP__USER__V1__ROLE__ROLE_ADMIN;
  STACK_ASSERT_INVALID(stack_call(CMD, CMD_SVC, "SetRole", &sr.base, NULL,
                                  admin->tokens->access_token, stack_key(), &st),
                       st, "user_id");
  /* A command without an idempotency key. */
  STACK_ASSERT_INVALID(try_register(email, PASSWORD, "Name", "", NULL, NULL, &st), st,
                       "idempotency_key");
  /* ListUsers page sizes */
  Shop__User__V1__ListUsersRequest lu = SHOP__USER__V1__LIST_USERS_REQUEST__INIT;
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  lu.page = &page;
  int32_t sizes[] = {-1, 501};
  for (size_t i = 0; i < 2; i++) {
    page.page_size = sizes[i];
    STACK_ASSERT_INVALID(stack_call(QRY, QRY_SVC, "ListUsers", &lu.base, NULL,
                                    admin->tokens->access_token, NULL, &st),
                         st, "page.page_size");
  }
  /* GetUser */
  Shop__User__V1__GetUserRequest gu = SHOP__USER__V1__GET_USER_REQUEST__INIT;
  gu.user_id = "nope";
  STACK_ASSERT_INVALID(
      stack_call(QRY, QRY_SVC, "GetUser", &gu.base, NULL, admin->tokens->access_token, NULL, &st),
      st, "user_id");
  free_msg(admin);
  free_msg(l);
}
