/* user-command: the handlers of shop.user.v1.UserCommandService, the first
 * admin, housekeeping. Every state change commits with its outbox rows and
 * idempotency record in one transaction (svc_command_run). See user.h. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "events/events.h"
#include "log/log.h"
#include "topology/topology.h"
#include "user/user.h"

typedef Shop__User__V1__RegisterUserRequest register_req;
typedef Shop__User__V1__RegisterUserResponse register_resp;
typedef Shop__User__V1__LoginRequest login_req;
typedef Shop__User__V1__LoginResponse login_resp;
typedef Shop__User__V1__RefreshTokenRequest refresh_req;
typedef Shop__User__V1__RefreshTokenResponse refresh_resp;
typedef Shop__User__V1__LogoutRequest logout_req;
typedef Shop__User__V1__LogoutResponse logout_resp;
typedef Shop__User__V1__UpdateProfileRequest profile_req;
typedef Shop__User__V1__UpdateProfileResponse profile_resp;
typedef Shop__User__V1__ChangePasswordRequest password_req;
typedef Shop__User__V1__ChangePasswordResponse password_resp;
typedef Shop__User__V1__SetRoleRequest role_req;
typedef Shop__User__V1__SetRoleResponse role_resp;
typedef Shop__User__V1__UserCommandService_Service user_cmd_service;

#define ROLE_CUSTOMER SHOP__USER__V1__ROLE__ROLE_CUSTOMER
#define ROLE_ADMIN SHOP__USER__V1__ROLE__ROLE_ADMIN

/* Sessions made by Login and by RefreshToken (refresh_tokens.origin). */
#define ORIGIN_LOGIN 1
#define ORIGIN_REFRESH 2

/* Longest password a login accepts before argon2 sees it (a longer one
 * cannot have been registered). */

/* The log context of a call, as a pointer to a compound literal. */
#define CALL_LOG(call)                                                                             \
  (&(log_ctx){.request_id = rpc_call_request_id(call), .trace_id = rpc_call_trace_id(call)})

/* ---- users rows ----------------------------------------------------------------- */

typedef struct user_row {
  char user_id[SVC_ID_SIZE];
  char email[USER_EMAIL_MAX + 1];
  char email_key[USER_EMAIL_MAX + 1];
  char hash[USER_HASH_MAX];
  int role;
  char name[USER_NAME_MAX * 4 + 1];
  char phone[USER_PHONE_MAX + 1];
  bool notify_email, notify_sms, notify_push;
  int64_t version;
} user_row;

#define USER_COLS                                                                                  \
  "user_id, email, email_key, password_hash, role, name, phone, notify_email, notify_sms, "        \
  "notify_push, version"

static const char *const SQL_USER_BY_ID_LOCK =
    "SELECT " USER_COLS " FROM users WHERE user_id = ? FOR UPDATE";
static const char *const SQL_USER_BY_KEY = "SELECT " USER_COLS " FROM users WHERE email_key = ?";
static const char *const SQL_USER_BY_KEY_LOCK =
    "SELECT " USER_COLS " FROM users WHERE email_key = ? FOR UPDATE";

static void copy_col(char *dst, size_t len, const db_rows *r, unsigned col) {
  snprintf(dst, len, "%s", db_rows_str(r, col, NULL));
}

/* Loads one user with sql (one parameter). NOT_FOUND when there is none. */
static status_code user_load(db_conn *c, const char *sql, const char *arg, user_row *u,
                             char *errbuf, size_t errlen) {
  db_value p[1] = {DB_STR(arg)};
  db_rows *r = NULL;
  status_code st = db_query(c, sql, p, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  copy_col(u->user_id, sizeof u->user_id, r, 0);
  copy_col(u->email, sizeof u->email, r, 1);
  copy_col(u->email_key, sizeof u->email_key, r, 2);
  copy_col(u->hash, sizeof u->hash, r, 3);
  u->role = (int)db_rows_i64(r, 4);
  copy_col(u->name, sizeof u->name, r, 5);
  copy_col(u->phone, sizeof u->phone, r, 6);
  u->notify_email = db_rows_i64(r, 7) != 0;
  u->notify_sms = db_rows_i64(r, 8) != 0;
  u->notify_push = db_rows_i64(r, 9) != 0;
  u->version = db_rows_i64(r, 10);
  db_rows_free(r);
  return STATUS_OK;
}

/* The event's profile, borrowing u. */
typedef struct profile_pb {
  Shop__User__V1__UserProfile profile;
  Shop__User__V1__NotificationPreferences prefs;
} profile_pb;

static void profile_fill(profile_pb *p, const user_row *u) {
  shop__user__v1__user_profile__init(&p->profile);
  shop__user__v1__notification_preferences__init(&p->prefs);
  p->profile.name = (char *)u->name;
  p->profile.phone = (char *)u->phone;
  p->prefs.email = u->notify_email;
  p->prefs.sms = u->notify_sms;
  p->prefs.push = u->notify_push;
  p->profile.notification_preferences = &p->prefs;
}

/* Revokes every live refresh token of a user. */
static status_code sessions_revoke_all(db_conn *tx, const char *user_id, int64_t now, char *errbuf,
                                       size_t errlen) {
  db_value p[2] = {DB_I64(now), DB_STR(user_id)};
  return db_exec(tx,
                 "UPDATE refresh_tokens SET revoked_ms = ? WHERE user_id = ? AND revoked_ms IS "
                 "NULL",
                 p, 2, NULL, NULL, errbuf, errlen);
}

/* Inserts a new user at version 1 and appends UserRegistered: the one way
 * users come to exist (RegisterUser and the first admin). ALREADY_EXISTS
 * when the email key is taken. */
static status_code user_insert(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                               user_row *u, const char *actor, char *errbuf, size_t errlen) {
  int64_t now = svc_now_ms();
  u->version = 1;
  db_value p[12] = {
      DB_STR(u->user_id),    DB_STR(u->email),       DB_STR(u->email_key), DB_STR(u->hash),
      DB_I64(u->role),       DB_STR(u->name),        DB_STR(u->phone),     DB_I64(u->notify_email),
      DB_I64(u->notify_sms), DB_I64(u->notify_push), DB_I64(now),          DB_I64(now)};
  status_code st = db_exec(tx,
                           "INSERT INTO users (user_id, email, email_key, password_hash, role, "
                           "name, phone, notify_email, notify_sms, notify_push, version, "
                           "created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                           p, 12, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  profile_pb pp;
  profile_fill(&pp, u);
  Shop__User__V1__UserRegistered ev = SHOP__USER__V1__USER_REGISTERED__INIT;
  ev.user_id = u->user_id;
  ev.email = u->email;
  ev.role = (Shop__User__V1__Role)u->role;
  ev.profile = &pp.profile;
  return svc_event_append(tx, call, ctx->program, TOPOLOGY_TOPIC_USER, u->user_id, 1, &ev.base,
                          actor, errbuf, errlen);
}

/* Sets a user's role (u locked, role different), revokes the user's
 * refresh tokens, appends UserRoleChanged. */
static status_code user_set_role(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                                 user_row *u, int role, char *errbuf, size_t errlen) {
  int64_t now = svc_now_ms();
  db_value p[3] = {DB_I64(role), DB_I64(now), DB_STR(u->user_id)};
  status_code st = db_exec(tx,
                           "UPDATE users SET role = ?, version = version + 1, updated_ms = ? "
                           "WHERE user_id = ?",
                           p, 3, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if ((st = sessions_revoke_all(tx, u->user_id, now, errbuf, errlen)) != STATUS_OK) return st;
  int previous = u->role;
  u->role = role;
  u->version++;
  Shop__User__V1__UserRoleChanged ev = SHOP__USER__V1__USER_ROLE_CHANGED__INIT;
  ev.user_id = u->user_id;
  ev.role = (Shop__User__V1__Role)role;
  ev.previous_role = (Shop__User__V1__Role)previous;
  return svc_event_append(tx, call, ctx->program, TOPOLOGY_TOPIC_USER, u->user_id, u->version,
                          &ev.base, NULL, errbuf, errlen);
}

/* ---- login throttle --------------------------------------------------------------- */

static status_code throttle_read(db_conn *c, const char *email_key, bool lock, user_throttle *t,
                                 char *errbuf, size_t errlen) {
  memset(t, 0, sizeof *t);
  db_value p[1] = {DB_STR(email_key)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            lock ? "SELECT failures, last_failure_ms, locked_until_ms FROM "
                                   "login_throttle WHERE email_key = ? FOR UPDATE"
                                 : "SELECT failures, last_failure_ms, locked_until_ms FROM "
                                   "login_throttle WHERE email_key = ?",
                            p, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (db_rows_next(r)) {
    t->failures = (int)db_rows_i64(r, 0);
    t->last_failure_ms = db_rows_i64(r, 1);
    t->locked_until_ms = db_rows_i64(r, 2);
  }
  db_rows_free(r);
  return STATUS_OK;
}

/* Counts one failed login of email_key in tx. */
static status_code throttle_fail(db_conn *tx, const user_cmd_ctx *ctx, const char *email_key,
                                 char *errbuf, size_t errlen) {
  /* The row must exist for FOR UPDATE to lock it; a concurrent first
   * failure then waits here instead of racing. */
  db_value k[1] = {DB_STR(email_key)};
  status_code st = db_exec(tx,
                           "INSERT INTO login_throttle (email_key, failures, last_failure_ms, "
                           "locked_until_ms) VALUES (?, 0, 0, 0) ON DUPLICATE KEY UPDATE "
                           "email_key = email_key",
                           k, 1, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  user_throttle t;
  if ((st = throttle_read(tx, email_key, true, &t, errbuf, errlen)) != STATUS_OK) return st;
  user_throttle_fail(&t, svc_now_ms(), ctx->cfg->auth.login_max_failures,
                     ctx->cfg->auth.login_lockout_s);
  db_value p[4] = {DB_I64(t.failures), DB_I64(t.last_failure_ms), DB_I64(t.locked_until_ms),
                   DB_STR(email_key)};
  return db_exec(tx,
                 "UPDATE login_throttle SET failures = ?, last_failure_ms = ?, locked_until_ms = ? "
                 "WHERE email_key = ?",
                 p, 4, NULL, NULL, errbuf, errlen);
}

static status_code throttle_reset(db_conn *tx, const char *email_key, char *errbuf, size_t errlen) {
  db_value p[1] = {DB_STR(email_key)};
  return db_exec(tx, "DELETE FROM login_throttle WHERE email_key = ?", p, 1, NULL, NULL, errbuf,
                 errlen);
}

static void throttle_outcome(svc_outcome *out, int64_t locked_ms) {
  int64_t s = (locked_ms + 999) / 1000;
  svc_fail(out, STATUS_RESOURCE_EXHAUSTED, NULL,
           "too many failed logins for this account; try again in %lld s", (long long)s);
  out->retry_delay_ms = locked_ms;
}

/* ---- sessions (refresh tokens) ------------------------------------------------------- */

typedef struct session_row {
  char token_id[SVC_ID_SIZE];
  char user_id[SVC_ID_SIZE];
  char family_id[SVC_ID_SIZE];
  int64_t expires_ms;
  bool revoked;
  char replaced_by[SVC_ID_SIZE];
  char idem_key[RPC_IDEMPOTENCY_KEY_MAX + 1];
  unsigned char request_mac[32];
  size_t request_mac_len;
} session_row;

#define SESSION_COLS                                                                               \
  "token_id, user_id, family_id, expires_ms, revoked_ms IS NOT NULL, COALESCE(replaced_by, "       \
  "''), COALESCE(idem_key, ''), COALESCE(request_mac, '')"

static status_code session_load(db_conn *c, const char *sql, db_value arg, session_row *s,
                                char *errbuf, size_t errlen) {
  db_rows *r = NULL;
  status_code st = db_query(c, sql, &arg, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  copy_col(s->token_id, sizeof s->token_id, r, 0);
  copy_col(s->user_id, sizeof s->user_id, r, 1);
  copy_col(s->family_id, sizeof s->family_id, r, 2);
  s->expires_ms = db_rows_i64(r, 3);
  s->revoked = db_rows_i64(r, 4) != 0;
  copy_col(s->replaced_by, sizeof s->replaced_by, r, 5);
  copy_col(s->idem_key, sizeof s->idem_key, r, 6);
  size_t n = 0;
  const char *mac = db_rows_str(r, 7, &n);
  s->request_mac_len = n <= sizeof s->request_mac ? n : 0;
  memcpy(s->request_mac, mac, s->request_mac_len);
  db_rows_free(r);
  return STATUS_OK;
}

/* A keyed digest of the request payload, for the idempotency of Login and
 * RefreshToken. Keyed, because a Login payload holds a password: a plain
 * SHA-256 of it would be a fast, crackable hash of that password. */
static void request_mac(const user_cmd_ctx *ctx, const rpc_call *call, unsigned char out[32]) {
  size_t n = 0;
  const void *p = rpc_call_payload(call, &n);
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, ctx->refresh_key, sizeof ctx->refresh_key);
  crypto_auth_hmacsha256_update(&st, (const unsigned char *)"request", 7);
  if (n > 0) crypto_auth_hmacsha256_update(&st, p, n);
  crypto_auth_hmacsha256_final(&st, out);
}

/* Inserts a session of user, with its idempotency key and request MAC. */
static status_code session_insert(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                                  const char *user_id, const char *family_id, int origin,
                                  char token_id[SVC_ID_SIZE], int64_t *expires_ms, char *errbuf,
                                  size_t errlen) {
  events_uuid_v7(token_id);
  char token[USER_REFRESH_TOKEN_MAX];
  user_refresh_token_make(ctx->refresh_key, token_id, token);
  unsigned char hash[USER_REFRESH_HASH_BYTES];
  user_refresh_token_hash(token, hash);
  sodium_memzero(token, sizeof token);
  unsigned char mac[32];
  request_mac(ctx, call, mac);
  int64_t now = svc_now_ms();
  *expires_ms = now + (int64_t)ctx->cfg->auth.refresh_ttl_s * 1000;
  db_value p[9] = {DB_STR(token_id),        DB_BLOB(hash, sizeof hash),
                   DB_STR(user_id),         DB_STR(family_id != NULL ? family_id : token_id),
                   DB_I64(origin),          DB_I64(now),
                   DB_I64(*expires_ms),     DB_STR(rpc_call_idempotency_key(call)),
                   DB_BLOB(mac, sizeof mac)};
  return db_exec(tx,
                 "INSERT INTO refresh_tokens (token_id, token_hash, user_id, family_id, origin, "
                 "created_ms, expires_ms, idem_key, request_mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                 "?)",
                 p, 9, NULL, NULL, errbuf, errlen);
}

static bool session_same_request(const user_cmd_ctx *ctx, const rpc_call *call,
                                 const session_row *s) {
  unsigned char mac[32];
  request_mac(ctx, call, mac);
  return strcmp(s->idem_key, rpc_call_idempotency_key(call)) == 0 &&
         s->request_mac_len == sizeof mac && sodium_memcmp(mac, s->request_mac, sizeof mac) == 0;
}

/* The tokens of a session: a freshly signed access token and the session's
 * refresh token (derived from its id). */
typedef struct tokens_pb {
  Shop__User__V1__AuthTokens tokens;
  Shop__Common__V1__Timestamp access_exp, refresh_exp;
  char access[AUTH_TOKEN_MAX];
  char refresh[USER_REFRESH_TOKEN_MAX];
} tokens_pb;

static status_code tokens_fill(tokens_pb *t, const user_cmd_ctx *ctx, const char *user_id, int role,
                               const char *token_id, int64_t refresh_expires_ms, char *errbuf,
                               size_t errlen) {
  int64_t now_s = svc_now_ms() / 1000;
  status_code st =
      auth_token_sign(ctx->keys, user_id, user_role_to_auth((Shop__User__V1__Role)role), now_s,
                      t->access, sizeof t->access, errbuf, errlen);
  if (st != STATUS_OK) return st;
  user_refresh_token_make(ctx->refresh_key, token_id, t->refresh);
  shop__user__v1__auth_tokens__init(&t->tokens);
  svc_timestamp_set(&t->access_exp, (now_s + ctx->cfg->auth.access_ttl_s) * 1000);
  svc_timestamp_set(&t->refresh_exp, refresh_expires_ms);
  t->tokens.access_token = t->access;
  t->tokens.access_token_expires_at = &t->access_exp;
  t->tokens.refresh_token = t->refresh;
  t->tokens.refresh_token_expires_at = &t->refresh_exp;
  return STATUS_OK;
}

static void tokens_wipe(tokens_pb *t) { sodium_memzero(t, sizeof *t); }

/* ---- RegisterUser ---------------------------------------------------------------------- */

typedef struct register_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  user_row u;
  register_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} register_job;

static status_code register_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                  size_t errlen) {
  register_job *j = arg;
  events_uuid_v7(j->u.user_id);
  /* Self-registration: the new user is the actor. */
  status_code st =
      user_insert(tx, j->ctx, j->call, &j->u, rpc_call_authenticated(j->call) ? NULL : j->u.user_id,
                  errbuf, errlen);
  if (st == STATUS_ALREADY_EXISTS) {
    svc_fail(out, STATUS_ALREADY_EXISTS, "email", "an account with this email already exists");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  svc_token_set(&j->token, j->u.user_id, 1);
  shop__user__v1__register_user_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

/* Hashes a password for a command (argon2id, tens of milliseconds: before
 * the transaction). False with INTERNAL on the call when it cannot. */
static bool hash_for_call(rpc_call *call, const user_cmd_ctx *ctx, const char *password,
                          char out[USER_HASH_MAX]) {
  if (user_password_hash(&ctx->pwhash, password, out) == STATUS_OK) return true;
  log_error(CALL_LOG(call), "argon2id hashing failed");
  rpc_call_set_status(call, STATUS_INTERNAL, "internal error");
  return false;
}

static void user_cmd_register_user(user_cmd_service *svc, const register_req *in,
                                   Shop__User__V1__RegisterUserResponse_Closure closure,
                                   void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  register_job j = {.ctx = ctx, .call = call};
  svc_vlist v = {0};
  user_validate_register_user(in, j.u.email, &v);
  if (svc_vlist_apply(call, &v) > 0) return;
  user_email_key(j.u.email, j.u.email_key, sizeof j.u.email_key);
  snprintf(j.u.name, sizeof j.u.name, "%s", in->name);
  snprintf(j.u.phone, sizeof j.u.phone, "%s", in->phone);
  j.u.role = ROLE_CUSTOMER;
  const Shop__User__V1__NotificationPreferences *np = in->notification_preferences;
  j.u.notify_email = np != NULL ? np->email : true;
  j.u.notify_sms = np != NULL && np->sms;
  j.u.notify_push = np != NULL && np->push;
  /* Hashing costs tens of milliseconds: done before the transaction. */
  if (!hash_for_call(call, ctx, in->password, j.u.hash)) return;
  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = ctx->relay,
                     .apply = register_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = true};
  if (svc_command_run(&cmd)) {
    log_info(CALL_LOG(call), "user %s registered", j.u.user_id);
    closure(&j.reply, data);
  }
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- Login ---------------------------------------------------------------------------- */

typedef struct login_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  const char *email_key;
  const char *verified_hash; /* the hash the password was checked against */
  const char *new_hash;      /* a rehash at the configured cost, or NULL */
  user_row u;
  tokens_pb tok;
  login_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} login_job;

static status_code login_fail_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                    size_t errlen) {
  login_job *j = arg;
  status_code st = throttle_fail(tx, j->ctx, j->email_key, errbuf, errlen);
  if (st != STATUS_OK) return st;
  svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "wrong email or password");
  return STATUS_OK;
}

static status_code login_ok_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                  size_t errlen) {
  login_job *j = arg;
  const user_cmd_ctx *ctx = j->ctx;
  char user_id[SVC_ID_SIZE];
  snprintf(user_id, sizeof user_id, "%s", j->u.user_id);
  status_code st = user_load(tx, SQL_USER_BY_ID_LOCK, user_id, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND || (st == STATUS_OK && strcmp(j->u.hash, j->verified_hash) != 0)) {
    /* Gone, or the password changed while it was being checked. */
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "wrong email or password");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  /* A repeat of this login (same key): the session it made. */
  session_row s;
  db_value k[2] = {DB_STR(user_id), DB_STR(rpc_call_idempotency_key(j->call))};
  db_rows *r = NULL;
  st = db_query(tx,
                "SELECT token_id FROM refresh_tokens WHERE user_id = ? AND idem_key = ? AND "
                "origin = 1",
                k, 2, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  char prev[SVC_ID_SIZE] = "";
  if (db_rows_next(r)) copy_col(prev, sizeof prev, r, 0);
  db_rows_free(r);
  char token_id[SVC_ID_SIZE];
  int64_t expires = 0;
  if (prev[0] != '\0') {
    st = session_load(tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_id = ?",
                      DB_STR(prev), &s, errbuf, errlen);
    if (st != STATUS_OK) return st == STATUS_NOT_FOUND ? STATUS_ABORTED : st;
    if (!session_same_request(ctx, j->call, &s)) {
      svc_fail(out, STATUS_FAILED_PRECONDITION, "idempotency_key",
               "idempotency key reused with a different request");
      return STATUS_OK;
    }
    snprintf(token_id, sizeof token_id, "%s", s.token_id);
    expires = s.expires_ms;
  } else {
    st = session_insert(tx, ctx, j->call, user_id, NULL, ORIGIN_LOGIN, token_id, &expires, errbuf,
                        errlen);
    if (st != STATUS_OK) return st;
  }
  if ((st = throttle_reset(tx, j->email_key, errbuf, errlen)) != STATUS_OK) return st;
  if (j->new_hash != NULL) {
    db_value p[2] = {DB_STR(j->new_hash), DB_STR(user_id)};
    st = db_exec(tx, "UPDATE users SET password_hash = ? WHERE user_id = ?", p, 2, NULL, NULL,
                 errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if ((st = tokens_fill(&j->tok, ctx, user_id, j->u.role, token_id, expires, errbuf, errlen)) !=
      STATUS_OK)
    return st;
  svc_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__login_response__init(&j->reply);
  j->reply.tokens = &j->tok.tokens;
  j->reply.user_id = j->u.user_id;
  j->reply.role = (Shop__User__V1__Role)j->u.role;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

static void user_cmd_login(user_cmd_service *svc, const login_req *in,
                           Shop__User__V1__LoginResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  char email[USER_EMAIL_MAX + 1], key[USER_EMAIL_MAX + 1];
  svc_vlist v = {0};
  user_validate_login(in, email, &v);
  if (svc_vlist_apply(call, &v) > 0) return;
  user_email_key(email, key, sizeof key);

  char err[512];
  db_conn *c = NULL;
  if (!svc_db_get(call, ctx->db, &c)) return;
  status_code st;
  login_job j = {.ctx = ctx, .call = call, .email_key = key};
  user_throttle t;
  st = throttle_read(c, key, false, &t, err, sizeof err);
  bool known = false;
  if (st == STATUS_OK) {
    int64_t locked = user_throttle_locked_ms(&t, svc_now_ms());
    if (locked > 0) {
      db_pool_put(ctx->db, c);
      svc_outcome o = {.retry_delay_ms = -1};
      throttle_outcome(&o, locked);
      rpc_call_set_status(call, o.code, "%s", o.message);
      rpc_call_set_retry_delay(call, o.retry_delay_ms);
      return;
    }
    st = user_load(c, SQL_USER_BY_KEY, key, &j.u, err, sizeof err);
    known = st == STATUS_OK;
    if (st == STATUS_NOT_FOUND) st = STATUS_OK;
  }
  db_pool_put(ctx->db, c);
  if (st != STATUS_OK) {
    svc_db_failed(call, st, "reading the user", err);
    return;
  }
  /* An unknown email costs the same verification as a known one. */
  bool ok = user_password_verify(known ? j.u.hash : ctx->dummy_hash, in->password) && known;
  char rehash[USER_HASH_MAX];
  if (ok && user_password_needs_rehash(&ctx->pwhash, j.u.hash) &&
      user_password_hash(&ctx->pwhash, in->password, rehash) == STATUS_OK)
    j.new_hash = rehash;
  char verified[USER_HASH_MAX];
  snprintf(verified, sizeof verified, "%s", j.u.hash);
  j.verified_hash = verified;

  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = NULL,
                     .apply = ok ? login_ok_apply : login_fail_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = false};
  if (svc_command_run(&cmd)) {
    log_info(CALL_LOG(call), "user %s logged in", j.u.user_id);
    closure(&j.reply, data);
  } else if (!ok) {
    log_info(CALL_LOG(call), "failed login%s", known ? "" : " (unknown email)");
  }
  tokens_wipe(&j.tok);
  sodium_memzero(&j.u.hash, sizeof j.u.hash);
  sodium_memzero(verified, sizeof verified);
  sodium_memzero(rehash, sizeof rehash);
}

/* ---- RefreshToken ---------------------------------------------------------------------- */

typedef struct refresh_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  unsigned char hash[USER_REFRESH_HASH_BYTES];
  user_row u;
  tokens_pb tok;
  refresh_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} refresh_job;

static status_code refresh_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                 size_t errlen) {
  refresh_job *j = arg;
  const user_cmd_ctx *ctx = j->ctx;
  const char *by_hash = "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_hash = ?";
  session_row s;
  status_code st = session_load(tx, by_hash, DB_BLOB(j->hash, sizeof j->hash), &s, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token is not valid");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  /* Lock order everywhere: the user's row, then its sessions. */
  st = user_load(tx, SQL_USER_BY_ID_LOCK, s.user_id, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token is not valid");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  st = session_load(tx,
                    "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_hash = ? FOR UPDATE",
                    DB_BLOB(j->hash, sizeof j->hash), &s, errbuf, errlen);
  if (st != STATUS_OK) return st == STATUS_NOT_FOUND ? STATUS_ABORTED : st;
  int64_t now = svc_now_ms();
  char token_id[SVC_ID_SIZE];
  int64_t expires = 0;
  if (s.replaced_by[0] != '\0') {
    session_row next;
    st = session_load(tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_id = ?",
                      DB_STR(s.replaced_by), &next, errbuf, errlen);
    if (st != STATUS_OK && st != STATUS_NOT_FOUND) return st;
    if (st == STATUS_OK && !next.revoked && next.expires_ms > now &&
        session_same_request(ctx, j->call, &next)) {
      /* A repeat of the call that spent this token: its answer again. */
      snprintf(token_id, sizeof token_id, "%s", next.token_id);
      expires = next.expires_ms;
    } else {
      /* A spent token presented again: treat the family as stolen. */
      db_value p[2] = {DB_I64(now), DB_STR(s.family_id)};
      st = db_exec(tx,
                   "UPDATE refresh_tokens SET revoked_ms = ? WHERE family_id = ? AND revoked_ms "
                   "IS NULL",
                   p, 2, NULL, NULL, errbuf, errlen);
      if (st != STATUS_OK) return st;
      log_warn(CALL_LOG(j->call),
               "spent refresh token of user %s presented again; its "
               "sessions are revoked",
               s.user_id);
      svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token was already used");
      return STATUS_OK;
    }
  } else if (s.revoked) {
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token was revoked");
    return STATUS_OK;
  } else if (s.expires_ms <= now) {
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token expired");
    return STATUS_OK;
  } else {
    st = session_insert(tx, ctx, j->call, s.user_id, s.family_id, ORIGIN_REFRESH, token_id,
                        &expires, errbuf, errlen);
    if (st != STATUS_OK) return st;
    db_value p[3] = {DB_I64(now), DB_STR(token_id), DB_STR(s.token_id)};
    st = db_exec(tx, "UPDATE refresh_tokens SET revoked_ms = ?, replaced_by = ? WHERE token_id = ?",
                 p, 3, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if ((st = tokens_fill(&j->tok, ctx, j->u.user_id, j->u.role, token_id, expires, errbuf,
                        errlen)) != STATUS_OK)
    return st;
  svc_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__refresh_token_response__init(&j->reply);
  j->reply.tokens = &j->tok.tokens;
  j->reply.user_id = j->u.user_id;
  j->reply.role = (Shop__User__V1__Role)j->u.role;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

/* The checks RefreshToken and Logout share: a present, sanely sized token
 * (INVALID_ARGUMENT otherwise) of a refresh token's shape
 * (UNAUTHENTICATED otherwise). On success hash holds what is stored. */
static bool refresh_token_arg(rpc_call *call, const char *token,
                              unsigned char hash[USER_REFRESH_HASH_BYTES]) {
  svc_vlist v = {0};
  user_validate_refresh_token(token, &v);
  if (svc_vlist_apply(call, &v) > 0) return false;
  if (!user_refresh_token_shape_ok(token)) {
    rpc_call_set_status(call, STATUS_UNAUTHENTICATED, "refresh token is not valid");
    return false;
  }
  user_refresh_token_hash(token, hash);
  return true;
}

static void user_cmd_refresh_token(user_cmd_service *svc, const refresh_req *in,
                                   Shop__User__V1__RefreshTokenResponse_Closure closure,
                                   void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  refresh_job j = {.ctx = ctx, .call = call};
  if (!refresh_token_arg(call, in->refresh_token, j.hash)) return;
  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = NULL,
                     .apply = refresh_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = false};
  if (svc_command_run(&cmd)) closure(&j.reply, data);
  tokens_wipe(&j.tok);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- Logout ---------------------------------------------------------------------------- */

typedef struct logout_job {
  rpc_call *call;
  const logout_req *in;
  unsigned char hash[USER_REFRESH_HASH_BYTES];
  user_row u;
  logout_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} logout_job;

static status_code logout_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                size_t errlen) {
  logout_job *j = arg;
  session_row s;
  status_code st =
      session_load(tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_hash = ?",
                   DB_BLOB(j->hash, sizeof j->hash), &s, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token is not valid");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  st = user_load(tx, SQL_USER_BY_ID_LOCK, s.user_id, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token is not valid");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  int64_t now = svc_now_ms();
  if (j->in->all_sessions) {
    st = sessions_revoke_all(tx, s.user_id, now, errbuf, errlen);
  } else {
    db_value p[2] = {DB_I64(now), DB_STR(s.token_id)};
    st = db_exec(tx,
                 "UPDATE refresh_tokens SET revoked_ms = ? WHERE token_id = ? AND revoked_ms IS "
                 "NULL",
                 p, 2, NULL, NULL, errbuf, errlen);
  }
  if (st != STATUS_OK) return st;
  svc_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__logout_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

static void user_cmd_logout(user_cmd_service *svc, const logout_req *in,
                            Shop__User__V1__LogoutResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  logout_job j = {.call = call, .in = in};
  if (!refresh_token_arg(call, in->refresh_token, j.hash)) return;
  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = NULL,
                     .apply = logout_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = true};
  if (svc_command_run(&cmd)) closure(&j.reply, data);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- UpdateProfile ------------------------------------------------------------------------ */

typedef struct profile_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  const profile_req *in;
  const char *target;
  user_row u;
  profile_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} profile_job;

static status_code profile_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                 size_t errlen) {
  profile_job *j = arg;
  const profile_req *in = j->in;
  status_code st = user_load(tx, SQL_USER_BY_ID_LOCK, j->target, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_NOT_FOUND, "user_id", "no such user");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  if (in->expected_version != 0 && in->expected_version != j->u.version) {
    svc_fail(out, STATUS_ABORTED, "expected_version", "the user is at version %lld",
             (long long)j->u.version);
    return STATUS_OK;
  }
  user_row next = j->u;
  if (in->name_update_case == SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME)
    snprintf(next.name, sizeof next.name, "%s", in->name);
  if (in->phone_update_case == SHOP__USER__V1__UPDATE_PROFILE_REQUEST__PHONE_UPDATE_PHONE)
    snprintf(next.phone, sizeof next.phone, "%s", in->phone);
  if (in->notification_preferences != NULL) {
    next.notify_email = in->notification_preferences->email;
    next.notify_sms = in->notification_preferences->sms;
    next.notify_push = in->notification_preferences->push;
  }
  bool same = strcmp(next.name, j->u.name) == 0 && strcmp(next.phone, j->u.phone) == 0 &&
              next.notify_email == j->u.notify_email && next.notify_sms == j->u.notify_sms &&
              next.notify_push == j->u.notify_push;
  if (!same) {
    db_value p[7] = {DB_STR(next.name),       DB_STR(next.phone),       DB_I64(next.notify_email),
                     DB_I64(next.notify_sms), DB_I64(next.notify_push), DB_I64(svc_now_ms()),
                     DB_STR(next.user_id)};
    st = db_exec(tx,
                 "UPDATE users SET name = ?, phone = ?, notify_email = ?, notify_sms = ?, "
                 "notify_push = ?, version = version + 1, updated_ms = ? WHERE user_id = ?",
                 p, 7, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
    next.version++;
    profile_pb pp;
    profile_fill(&pp, &next);
    Shop__User__V1__UserProfileUpdated ev = SHOP__USER__V1__USER_PROFILE_UPDATED__INIT;
    ev.user_id = next.user_id;
    ev.profile = &pp.profile;
    st = svc_event_append(tx, j->call, j->ctx->program, TOPOLOGY_TOPIC_USER, next.user_id,
                          next.version, &ev.base, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
    j->u = next;
  }
  svc_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__update_profile_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

static void user_cmd_update_profile(user_cmd_service *svc, const profile_req *in,
                                    Shop__User__V1__UpdateProfileResponse_Closure closure,
                                    void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  const char *target = in->user_id[0] != '\0' ? in->user_id : rpc_call_user_id(call);
  svc_vlist v = {0};
  user_validate_update_profile(in, &v);
  if (svc_vlist_apply(call, &v) > 0) return;
  if (strcmp(target, rpc_call_user_id(call)) != 0 && rpc_call_role(call) != AUTH_ROLE_ADMIN) {
    rpc_call_set_status(call, STATUS_PERMISSION_DENIED, "only an admin may change another user");
    return;
  }
  profile_job j = {.ctx = ctx, .call = call, .in = in, .target = target};
  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = ctx->relay,
                     .apply = profile_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = true};
  if (svc_command_run(&cmd)) closure(&j.reply, data);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- ChangePassword ------------------------------------------------------------------------ */

typedef struct password_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  const password_req *in;
  char new_hash[USER_HASH_MAX];
  user_row u;
  password_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} password_job;

static status_code password_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                  size_t errlen) {
  password_job *j = arg;
  const user_cmd_ctx *ctx = j->ctx;
  status_code st =
      user_load(tx, SQL_USER_BY_ID_LOCK, rpc_call_user_id(j->call), &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_NOT_FOUND, NULL, "no such user");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  user_throttle t;
  if ((st = throttle_read(tx, j->u.email_key, false, &t, errbuf, errlen)) != STATUS_OK) return st;
  int64_t locked = user_throttle_locked_ms(&t, svc_now_ms());
  if (locked > 0) {
    throttle_outcome(out, locked);
    return STATUS_OK;
  }
  /* argon2 under the user's row lock: it holds back only this user's
   * other commands, for tens of milliseconds. */
  if (!user_password_verify(j->u.hash, j->in->old_password)) {
    if ((st = throttle_fail(tx, ctx, j->u.email_key, errbuf, errlen)) != STATUS_OK) return st;
    svc_fail(out, STATUS_UNAUTHENTICATED, "old_password", "the old password is wrong");
    return STATUS_OK;
  }
  int64_t now = svc_now_ms();
  db_value p[3] = {DB_STR(j->new_hash), DB_I64(now), DB_STR(j->u.user_id)};
  st = db_exec(tx,
               "UPDATE users SET password_hash = ?, version = version + 1, updated_ms = ? WHERE "
               "user_id = ?",
               p, 3, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if ((st = sessions_revoke_all(tx, j->u.user_id, now, errbuf, errlen)) != STATUS_OK) return st;
  if ((st = throttle_reset(tx, j->u.email_key, errbuf, errlen)) != STATUS_OK) return st;
  j->u.version++;
  Shop__User__V1__PasswordChanged ev = SHOP__USER__V1__PASSWORD_CHANGED__INIT;
  ev.user_id = j->u.user_id;
  st = svc_event_append(tx, j->call, ctx->program, TOPOLOGY_TOPIC_USER, j->u.user_id, j->u.version,
                        &ev.base, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  svc_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__change_password_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

static void user_cmd_change_password(user_cmd_service *svc, const password_req *in,
                                     Shop__User__V1__ChangePasswordResponse_Closure closure,
                                     void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  svc_vlist v = {0};
  user_validate_change_password(in, &v);
  if (svc_vlist_apply(call, &v) > 0) return;
  password_job j = {.ctx = ctx, .call = call, .in = in};
  if (!hash_for_call(call, ctx, in->new_password, j.new_hash)) return;
  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = ctx->relay,
                     .apply = password_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = true};
  if (svc_command_run(&cmd)) {
    log_info(CALL_LOG(call), "user %s changed the password", j.u.user_id);
    closure(&j.reply, data);
  }
  sodium_memzero(j.new_hash, sizeof j.new_hash);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- SetRole -------------------------------------------------------------------------------- */

typedef struct role_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  const role_req *in;
  user_row u;
  role_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} role_job;

static status_code role_apply(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                              size_t errlen) {
  role_job *j = arg;
  status_code st = user_load(tx, SQL_USER_BY_ID_LOCK, j->in->user_id, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    svc_fail(out, STATUS_NOT_FOUND, "user_id", "no such user");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  if (j->in->expected_version != 0 && j->in->expected_version != j->u.version) {
    svc_fail(out, STATUS_ABORTED, "expected_version", "the user is at version %lld",
             (long long)j->u.version);
    return STATUS_OK;
  }
  int role = (int)j->in->role;
  if (role != j->u.role) {
    if (j->u.role == ROLE_ADMIN) {
      /* Keep at least one admin. Locking the admins' rows serialises two
       * admins demoting each other. */
      db_rows *r = NULL;
      db_value p[1] = {DB_I64(ROLE_ADMIN)};
      st = db_query(tx, "SELECT user_id FROM users WHERE role = ? FOR UPDATE", p, 1, &r, errbuf,
                    errlen);
      if (st != STATUS_OK) return st;
      size_t admins = db_rows_count(r);
      db_rows_free(r);
      if (admins <= 1) {
        svc_fail(out, STATUS_FAILED_PRECONDITION, "role", "the last admin cannot be demoted");
        return STATUS_OK;
      }
    }
    st = user_set_role(tx, j->ctx, j->call, &j->u, role, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  svc_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__set_role_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

static void user_cmd_set_role(user_cmd_service *svc, const role_req *in,
                              Shop__User__V1__SetRoleResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  svc_vlist v = {0};
  user_validate_set_role(in, &v);
  if (svc_vlist_apply(call, &v) > 0) return;
  role_job j = {.ctx = ctx, .call = call, .in = in};
  svc_command cmd = {.call = call,
                     .db = ctx->db,
                     .relay = ctx->relay,
                     .apply = role_apply,
                     .arg = &j,
                     .reply = &j.reply.base,
                     .idempotent = true};
  if (svc_command_run(&cmd)) closure(&j.reply, data);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- Registration with the server ------------------------------------------------------- */

static user_cmd_service user_cmd_svc = SHOP__USER__V1__USER_COMMAND_SERVICE__INIT(user_cmd_);

static const rpc_method_policy user_cmd_policies[] = {
    {"RegisterUser", RPC_PUBLIC | RPC_COMMAND},
    {"Login", RPC_PUBLIC | RPC_COMMAND},
    {"RefreshToken", RPC_PUBLIC | RPC_COMMAND},
    {"Logout", RPC_PUBLIC | RPC_COMMAND},
    {"UpdateProfile", RPC_AUTHENTICATED | RPC_COMMAND},
    {"ChangePassword", RPC_AUTHENTICATED | RPC_COMMAND},
    {"SetRole", RPC_ADMIN | RPC_COMMAND},
};

status_code user_cmd_register(rpc_server *s, user_cmd_ctx *ctx, char *errbuf, size_t errlen) {
  rpc_service_opts o = {.default_policy = RPC_ADMIN | RPC_COMMAND,
                        .policies = user_cmd_policies,
                        .n_policies = sizeof user_cmd_policies / sizeof user_cmd_policies[0],
                        .ctx = ctx};
  return rpc_server_register(s, &user_cmd_svc.base, &o, errbuf, errlen);
}

status_code user_cmd_ctx_init(user_cmd_ctx *ctx, const shop_cfg *cfg, const char *program,
                              db_pool *db, outbox_relay *relay, const auth_keys *keys, char *errbuf,
                              size_t errlen) {
  memset(ctx, 0, sizeof *ctx);
  if (sodium_init() < 0) {
    snprintf(errbuf, errlen, "libsodium failed to initialise");
    return STATUS_INTERNAL;
  }
  ctx->cfg = cfg;
  ctx->program = program;
  ctx->db = db;
  ctx->relay = relay;
  ctx->keys = keys;
  user_refresh_key_derive(cfg->auth.jwt_key, strlen(cfg->auth.jwt_key), ctx->refresh_key);
  user_pwhash_params_from_cfg(&ctx->pwhash, cfg);
  /* A hash nobody knows the password of, at the configured cost. */
  unsigned char rnd[24];
  char pw[64];
  randombytes_buf(rnd, sizeof rnd);
  sodium_bin2hex(pw, sizeof pw, rnd, sizeof rnd);
  status_code st = user_password_hash(&ctx->pwhash, pw, ctx->dummy_hash);
  sodium_memzero(pw, sizeof pw);
  if (st != STATUS_OK) snprintf(errbuf, errlen, "argon2id hashing failed (out of memory?)");
  return st;
}

void user_cmd_ctx_destroy(user_cmd_ctx *ctx) { sodium_memzero(ctx, sizeof *ctx); }

/* ---- The first admin ------------------------------------------------------------------------ */

typedef struct admin_job {
  const user_cmd_ctx *ctx;
  user_row u;
  const char *outcome;
} admin_job;

static status_code admin_apply(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  admin_job *j = arg;
  user_row cur;
  status_code st = user_load(tx, SQL_USER_BY_KEY_LOCK, j->u.email_key, &cur, errbuf, errlen);
  if (st == STATUS_OK) {
    if (cur.role == ROLE_ADMIN) {
      j->outcome = "exists";
      return STATUS_OK;
    }
    j->outcome = "promoted";
    return user_set_role(tx, j->ctx, NULL, &cur, ROLE_ADMIN, errbuf, errlen);
  }
  if (st != STATUS_NOT_FOUND) return st;
  events_uuid_v7(j->u.user_id);
  j->outcome = "created";
  st = user_insert(tx, j->ctx, NULL, &j->u, j->ctx->program, errbuf, errlen);
  /* Another instance created it first: look again. */
  return st == STATUS_ALREADY_EXISTS ? STATUS_ABORTED : st;
}

status_code user_bootstrap_admin(user_cmd_ctx *ctx, char *errbuf, size_t errlen) {
  const shop_cfg *cfg = ctx->cfg;
  if (cfg->auth.admin_email == NULL || cfg->auth.admin_email[0] == '\0') {
    log_info(NULL, "no first admin configured (auth.admin_email is empty)");
    return STATUS_OK;
  }
  admin_job j = {.ctx = ctx};
  const char *why = user_email_normalize(cfg->auth.admin_email, j.u.email, sizeof j.u.email);
  if (why != NULL) {
    snprintf(errbuf, errlen, "auth.admin_email: %s", why);
    return STATUS_INVALID_ARGUMENT;
  }
  const char *pw = cfg->auth.admin_password != NULL ? cfg->auth.admin_password : "";
  if ((why = user_password_check(pw, j.u.email)) != NULL) {
    snprintf(errbuf, errlen, "auth.admin_password: %s", why);
    return STATUS_INVALID_ARGUMENT;
  }
  if ((why = user_name_check(cfg->auth.admin_name)) != NULL) {
    snprintf(errbuf, errlen, "auth.admin_name: %s", why);
    return STATUS_INVALID_ARGUMENT;
  }
  user_email_key(j.u.email, j.u.email_key, sizeof j.u.email_key);
  snprintf(j.u.name, sizeof j.u.name, "%s", cfg->auth.admin_name);
  j.u.role = ROLE_ADMIN;
  j.u.notify_email = true;
  if (user_password_hash(&ctx->pwhash, pw, j.u.hash) != STATUS_OK) {
    snprintf(errbuf, errlen, "argon2id hashing failed");
    return STATUS_INTERNAL;
  }
  db_conn *c = NULL;
  status_code st = db_pool_get(ctx->db, &c, errbuf, errlen);
  if (st == STATUS_OK) {
    st = db_tx_run(c, admin_apply, &j, 5, errbuf, errlen);
    db_pool_put(ctx->db, c);
  }
  sodium_memzero(j.u.hash, sizeof j.u.hash);
  if (st != STATUS_OK) return st;
  outbox_relay_nudge(ctx->relay);
  log_info(NULL, "first admin %s: %s", j.u.email, j.outcome);
  return STATUS_OK;
}

/* ---- Housekeeping ------------------------------------------------------------------------ */

void user_cmd_housekeeping(db_conn *c, user_cmd_ctx *ctx) {
  char err[512];
  int64_t day_ago = svc_now_ms() - 86400LL * 1000;
  db_value p[1] = {DB_I64(day_ago)};
  uint64_t n = 0, m = 0;
  status_code st = db_exec(c, "DELETE FROM refresh_tokens WHERE expires_ms < ? LIMIT 10000", p, 1,
                           &n, NULL, err, sizeof err);
  if (st == STATUS_OK)
    st = db_exec(c,
                 "DELETE FROM login_throttle WHERE last_failure_ms < ? AND locked_until_ms < ? "
                 "LIMIT 10000",
                 (db_value[]){DB_I64(day_ago), DB_I64(day_ago)}, 2, &m, NULL, err, sizeof err);
  if (st != STATUS_OK)
    log_warn(NULL, "housekeeping of sessions failed: %s", err);
  else if (n + m > 0)
    log_info(NULL, "housekeeping: %llu expired session(s), %llu idle throttle row(s) deleted",
             (unsigned long long)n, (unsigned long long)m);
  (void)ctx;
}
