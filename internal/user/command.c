/* user-command: the handlers of shop.user.v1.UserCommandService, the first
 * admin, housekeeping. Every state change commits with its outbox rows and
 * idempotency record in one transaction (command_run). See user.h. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "command/command.h"
#include "consistency/consistency.h"
#include "events/events.h"
#include "handler/handler.h"
#include "topology/topology.h"
#include "user/user_internal.h"

/* ---- RegisterUser ---------------------------------------------------------------------- */

typedef struct register_job {
  const user_cmd_ctx *ctx;
  rpc_call *call;
  user_row u;
  register_resp reply;
  Shop__Common__V1__ConsistencyToken token;
} register_job;

static status_code register_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                     size_t errlen) {
  register_job *j = arg;
  events_uuid_v7(j->u.user_id);
  /* Self-registration: the new user is the actor. */
  status_code st =
      user_insert(tx, j->ctx, j->call, &j->u, rpc_call_authenticated(j->call) ? NULL : j->u.user_id,
                  errbuf, errlen);
  if (st == STATUS_ALREADY_EXISTS) {
    command_fail(out, STATUS_ALREADY_EXISTS, "email", "an account with this email already exists");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  consistency_token_set(&j->token, j->u.user_id, 1);
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
  check_violations v = {0};
  user_validate_register_user(in, j.u.email, &v);
  if (handler_violations_apply(call, &v) > 0) return;
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
  if (user_command_run(call, ctx, register_apply_cb, &j, &j.reply.base, true, true)) {
    log_info(CALL_LOG(call), "user %s registered", j.u.user_id);
    closure(&j.reply, data);
  }
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

static status_code profile_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                    size_t errlen) {
  profile_job *j = arg;
  const profile_req *in = j->in;
  status_code st = user_load(tx, SQL_USER_BY_ID_LOCK, j->target, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    command_fail(out, STATUS_NOT_FOUND, "user_id", "no such user");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  if (in->expected_version != 0 && in->expected_version != j->u.version) {
    command_fail(out, STATUS_ABORTED, "expected_version", "the user is at version %lld",
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
                     DB_I64(next.notify_sms), DB_I64(next.notify_push), DB_I64(clock_now_ms()),
                     DB_STR(next.user_id)};
    st = db_exec(tx,
                 "UPDATE users SET name = ?, phone = ?, notify_email = ?, notify_sms = ?, "
                 "notify_push = ?, version = version + 1, updated_ms = ? WHERE user_id = ?",
                 p, 7, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
    next.version++;
    profile_pb pp;
    user_profile_fill(&pp, &next);
    Shop__User__V1__UserProfileUpdated ev = SHOP__USER__V1__USER_PROFILE_UPDATED__INIT;
    ev.user_id = next.user_id;
    ev.profile = &pp.profile;
    st = user_event_emit(tx, j->ctx, j->call, NULL, next.user_id, next.version, &ev.base, errbuf,
                         errlen);
    if (st != STATUS_OK) return st;
    j->u = next;
  }
  consistency_token_set(&j->token, j->u.user_id, j->u.version);
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
  check_violations v = {0};
  user_validate_update_profile(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (strcmp(target, rpc_call_user_id(call)) != 0 && rpc_call_role(call) != AUTH_ROLE_ADMIN) {
    rpc_call_set_status(call, STATUS_PERMISSION_DENIED, "only an admin may change another user");
    return;
  }
  profile_job j = {.ctx = ctx, .call = call, .in = in, .target = target};
  if (user_command_run(call, ctx, profile_apply_cb, &j, &j.reply.base, true, true))
    closure(&j.reply, data);
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

static status_code password_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                     size_t errlen) {
  password_job *j = arg;
  const user_cmd_ctx *ctx = j->ctx;
  status_code st =
      user_load(tx, SQL_USER_BY_ID_LOCK, rpc_call_user_id(j->call), &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    command_fail(out, STATUS_NOT_FOUND, NULL, "no such user");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  user_throttle t;
  if ((st = user_throttle_row_read(tx, j->u.email_key, false, &t, errbuf, errlen)) != STATUS_OK)
    return st;
  int64_t locked = user_throttle_locked_ms(&t, clock_now_ms());
  if (locked > 0) {
    user_throttle_outcome(out, locked);
    return STATUS_OK;
  }
  /* argon2 under the user's row lock: it holds back only this user's
   * other commands, for tens of milliseconds. */
  if (!user_password_verify(j->u.hash, j->in->old_password)) {
    if ((st = user_throttle_row_fail(tx, ctx, j->u.email_key, errbuf, errlen)) != STATUS_OK)
      return st;
    command_fail(out, STATUS_UNAUTHENTICATED, "old_password", "the old password is wrong");
    return STATUS_OK;
  }
  int64_t now = clock_now_ms();
  db_value p[3] = {DB_STR(j->new_hash), DB_I64(now), DB_STR(j->u.user_id)};
  st = db_exec(tx,
               "UPDATE users SET password_hash = ?, version = version + 1, updated_ms = ? WHERE "
               "user_id = ?",
               p, 3, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if ((st = user_sessions_revoke_all(tx, j->u.user_id, now, errbuf, errlen)) != STATUS_OK)
    return st;
  if ((st = user_throttle_row_reset(tx, j->u.email_key, errbuf, errlen)) != STATUS_OK) return st;
  j->u.version++;
  Shop__User__V1__PasswordChanged ev = SHOP__USER__V1__PASSWORD_CHANGED__INIT;
  ev.user_id = j->u.user_id;
  st =
      user_event_emit(tx, ctx, j->call, NULL, j->u.user_id, j->u.version, &ev.base, errbuf, errlen);
  if (st != STATUS_OK) return st;
  consistency_token_set(&j->token, j->u.user_id, j->u.version);
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
  check_violations v = {0};
  user_validate_change_password(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  password_job j = {.ctx = ctx, .call = call, .in = in};
  if (!hash_for_call(call, ctx, in->new_password, j.new_hash)) return;
  if (user_command_run(call, ctx, password_apply_cb, &j, &j.reply.base, true, true)) {
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

static status_code role_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                 size_t errlen) {
  role_job *j = arg;
  status_code st = user_load(tx, SQL_USER_BY_ID_LOCK, j->in->user_id, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    command_fail(out, STATUS_NOT_FOUND, "user_id", "no such user");
    return STATUS_OK;
  }
  if (st != STATUS_OK) return st;
  if (j->in->expected_version != 0 && j->in->expected_version != j->u.version) {
    command_fail(out, STATUS_ABORTED, "expected_version", "the user is at version %lld",
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
        command_fail(out, STATUS_FAILED_PRECONDITION, "role", "the last admin cannot be demoted");
        return STATUS_OK;
      }
    }
    st = user_set_role(tx, j->ctx, j->call, &j->u, role, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  consistency_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__set_role_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

static void user_cmd_set_role(user_cmd_service *svc, const role_req *in,
                              Shop__User__V1__SetRoleResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  user_validate_set_role(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  role_job j = {.ctx = ctx, .call = call, .in = in};
  if (user_command_run(call, ctx, role_apply_cb, &j, &j.reply.base, true, true))
    closure(&j.reply, data);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}

/* ---- Registration with the server ------------------------------------------------------- */

static user_cmd_service user_cmd_svc = SHOP__USER__V1__USER_COMMAND_SERVICE__INIT(user_cmd_);

static const rpc_method_policy user_cmd_policies[] = {
    {"RegisterUser", RPC_PUBLIC},
    {"Login", RPC_PUBLIC},
    {"RefreshToken", RPC_PUBLIC},
    {"Logout", RPC_PUBLIC},
    {"UpdateProfile", RPC_AUTHENTICATED},
    {"ChangePassword", RPC_AUTHENTICATED},
    {"SetRole", RPC_ADMIN},
};

status_code user_cmd_register(rpc_server *s, user_cmd_ctx *ctx, char *errbuf, size_t errlen) {
  rpc_service_opts o = {.default_policy = RPC_ADMIN,
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
    status_seterr(errbuf, errlen, "libsodium failed to initialise");
    return STATUS_INTERNAL;
  }
  ctx->cfg = cfg;
  ctx->program = program;
  ctx->db = db;
  ctx->relay = relay;
  ctx->sink = outbox_sink_of(relay, program);
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
  if (st != STATUS_OK) status_seterr(errbuf, errlen, "argon2id hashing failed (out of memory?)");
  return st;
}

void user_cmd_ctx_destroy(user_cmd_ctx *ctx) { sodium_memzero(ctx, sizeof *ctx); }

/* ---- The first admin ------------------------------------------------------------------------ */

typedef struct admin_job {
  const user_cmd_ctx *ctx;
  user_row u;
  const char *outcome;
} admin_job;

static status_code admin_apply_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
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
    status_seterr(errbuf, errlen, "auth.admin_email: %s", why);
    return STATUS_INVALID_ARGUMENT;
  }
  const char *pw = cfg->auth.admin_password != NULL ? cfg->auth.admin_password : "";
  if ((why = user_password_check(pw, j.u.email)) != NULL) {
    status_seterr(errbuf, errlen, "auth.admin_password: %s", why);
    return STATUS_INVALID_ARGUMENT;
  }
  if ((why = user_name_check(cfg->auth.admin_name)) != NULL) {
    status_seterr(errbuf, errlen, "auth.admin_name: %s", why);
    return STATUS_INVALID_ARGUMENT;
  }
  user_email_key(j.u.email, j.u.email_key, sizeof j.u.email_key);
  snprintf(j.u.name, sizeof j.u.name, "%s", cfg->auth.admin_name);
  j.u.role = ROLE_ADMIN;
  j.u.notify_email = true;
  if (user_password_hash(&ctx->pwhash, pw, j.u.hash) != STATUS_OK) {
    status_seterr(errbuf, errlen, "argon2id hashing failed");
    return STATUS_INTERNAL;
  }
  /* Like a request, the start-up's own correlation id and trace, in a log
   * scope: on its log lines and on the event it appends (user_event_emit). */
  char corr[37], tp[LOG_TRACEPARENT_SIZE];
  events_uuid_v7(corr);
  log_traceparent_child(NULL, tp);
  log_scope scope;
  log_scope_enter(&scope, corr, tp, NULL);
  db_conn *c = NULL;
  status_code st = db_pool_get(ctx->db, &c, errbuf, errlen);
  if (st == STATUS_OK) {
    st = db_tx_run(c, admin_apply_cb, &j, 5, errbuf, errlen);
    db_pool_put(ctx->db, c);
  }
  sodium_memzero(j.u.hash, sizeof j.u.hash);
  if (st == STATUS_OK) {
    outbox_relay_nudge(ctx->relay);
    log_info(NULL, "first admin %s: %s", j.u.email, j.outcome);
  }
  log_scope_leave(&scope);
  return st;
}

/* ---- Housekeeping ------------------------------------------------------------------------ */

void user_cmd_housekeeping(db_conn *c, user_cmd_ctx *ctx) {
  char err[STATUS_ERRBUF_SIZE];
  int64_t day_ago = clock_now_ms() - 86400LL * 1000;
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
