/* user-command's session handlers: Login, RefreshToken and Logout. Every
 * state change commits with its outbox rows and idempotency record in one
 * transaction (command_run). See user.h. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "command/command.h"
#include "consistency/consistency.h"
#include "events/events.h"
#include "handler/handler.h"
#include "user/user_internal.h"

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

static status_code login_fail_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                       size_t errlen) {
  login_job *j = arg;
  status_code st = user_throttle_row_fail(tx, j->ctx, j->email_key, errbuf, errlen);
  if (st != STATUS_OK) return st;
  command_fail(out, STATUS_UNAUTHENTICATED, NULL, "wrong email or password");
  return STATUS_OK;
}

static status_code login_ok_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                     size_t errlen) {
  login_job *j = arg;
  const user_cmd_ctx *ctx = j->ctx;
  char user_id[CHECK_ID_SIZE];
  snprintf(user_id, sizeof user_id, "%s", j->u.user_id);
  status_code st = user_load(tx, SQL_USER_BY_ID_LOCK, user_id, &j->u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND || (st == STATUS_OK && strcmp(j->u.hash, j->verified_hash) != 0)) {
    /* Gone, or the password changed while it was being checked. */
    command_fail(out, STATUS_UNAUTHENTICATED, NULL, "wrong email or password");
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
  char prev[CHECK_ID_SIZE] = "";
  if (db_rows_next(r)) user_copy_col(prev, sizeof prev, r, 0);
  db_rows_free(r);
  char token_id[CHECK_ID_SIZE];
  int64_t expires = 0;
  if (prev[0] != '\0') {
    st = user_session_load(tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_id = ?",
                           DB_STR(prev), &s, errbuf, errlen);
    if (st != STATUS_OK) return st == STATUS_NOT_FOUND ? STATUS_ABORTED : st;
    if (!user_session_same_request(ctx, j->call, &s)) {
      command_fail(out, STATUS_FAILED_PRECONDITION, "idempotency_key",
                   "idempotency key reused with a different request");
      return STATUS_OK;
    }
    snprintf(token_id, sizeof token_id, "%s", s.token_id);
    expires = s.expires_ms;
  } else {
    st = user_session_insert(tx, ctx, j->call, user_id, NULL, ORIGIN_LOGIN, token_id, &expires,
                             errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if ((st = user_throttle_row_reset(tx, j->email_key, errbuf, errlen)) != STATUS_OK) return st;
  if (j->new_hash != NULL) {
    db_value p[2] = {DB_STR(j->new_hash), DB_STR(user_id)};
    st = db_exec(tx, "UPDATE users SET password_hash = ? WHERE user_id = ?", p, 2, NULL, NULL,
                 errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if ((st = user_tokens_fill(&j->tok, ctx, user_id, j->u.role, token_id, expires, errbuf,
                             errlen)) != STATUS_OK)
    return st;
  consistency_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__login_response__init(&j->reply);
  j->reply.tokens = &j->tok.tokens;
  j->reply.user_id = j->u.user_id;
  j->reply.role = (Shop__User__V1__Role)j->u.role;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

void user_cmd_login(user_cmd_service *svc, const login_req *in,
                    Shop__User__V1__LoginResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  char email[USER_EMAIL_MAX + 1], key[USER_EMAIL_MAX + 1];
  check_violations v = {0};
  user_validate_login(in, email, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  user_email_key(email, key, sizeof key);

  char err[STATUS_ERRBUF_SIZE];
  db_conn *c = NULL;
  if (!handler_db_get(call, ctx->db, &c)) return;
  status_code st;
  login_job j = {.ctx = ctx, .call = call, .email_key = key};
  user_throttle t;
  st = user_throttle_row_read(c, key, false, &t, err, sizeof err);
  bool known = false;
  if (st == STATUS_OK) {
    int64_t locked = user_throttle_locked_ms(&t, clock_now_ms());
    if (locked > 0) {
      db_pool_put(ctx->db, c);
      command_outcome o = {.retry_delay_ms = -1};
      user_throttle_outcome(&o, locked);
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
    handler_db_failed(call, st, "reading the user", err);
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

  if (user_command_run(call, ctx, ok ? login_ok_apply_cb : login_fail_apply_cb, &j, &j.reply.base,
                       false, false)) {
    log_info(CALL_LOG(call), "user %s logged in", j.u.user_id);
    closure(&j.reply, data);
  } else if (!ok) {
    log_info(CALL_LOG(call), "failed login%s", known ? "" : " (unknown email)");
  }
  user_tokens_wipe(&j.tok);
  sodium_memzero(&j.u.hash, sizeof j.u.hash);
  sodium_memzero(verified, sizeof verified);
  sodium_memzero(rehash, sizeof rehash);
}

/* The session of a refresh token (by its hash) and its user's row, locked
 * (lock order everywhere: the user's row, then its sessions). When either
 * is gone, out says UNAUTHENTICATED and the status is OK. */
static status_code token_session(db_conn *tx, const unsigned char hash[USER_REFRESH_HASH_BYTES],
                                 session_row *s, user_row *u, command_outcome *out, char *errbuf,
                                 size_t errlen) {
  status_code st =
      user_session_load(tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_hash = ?",
                        DB_BLOB(hash, USER_REFRESH_HASH_BYTES), s, errbuf, errlen);
  if (st == STATUS_OK) st = user_load(tx, SQL_USER_BY_ID_LOCK, s->user_id, u, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    command_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token is not valid");
    return STATUS_OK;
  }
  return st;
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

static status_code refresh_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                    size_t errlen) {
  refresh_job *j = arg;
  const user_cmd_ctx *ctx = j->ctx;
  session_row s;
  status_code st = token_session(tx, j->hash, &s, &j->u, out, errbuf, errlen);
  if (st != STATUS_OK || out->code != STATUS_OK) return st;
  st = user_session_load(
      tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_hash = ? FOR UPDATE",
      DB_BLOB(j->hash, sizeof j->hash), &s, errbuf, errlen);
  if (st != STATUS_OK) return st == STATUS_NOT_FOUND ? STATUS_ABORTED : st;
  int64_t now = clock_now_ms();
  char token_id[CHECK_ID_SIZE];
  int64_t expires = 0;
  if (s.replaced_by[0] != '\0') {
    session_row next;
    st = user_session_load(tx, "SELECT " SESSION_COLS " FROM refresh_tokens WHERE token_id = ?",
                           DB_STR(s.replaced_by), &next, errbuf, errlen);
    if (st != STATUS_OK && st != STATUS_NOT_FOUND) return st;
    if (st == STATUS_OK && !next.revoked && next.expires_ms > now &&
        user_session_same_request(ctx, j->call, &next)) {
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
      command_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token was already used");
      return STATUS_OK;
    }
  } else if (s.revoked) {
    command_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token was revoked");
    return STATUS_OK;
  } else if (s.expires_ms <= now) {
    command_fail(out, STATUS_UNAUTHENTICATED, NULL, "refresh token expired");
    return STATUS_OK;
  } else {
    st = user_session_insert(tx, ctx, j->call, s.user_id, s.family_id, ORIGIN_REFRESH, token_id,
                             &expires, errbuf, errlen);
    if (st != STATUS_OK) return st;
    db_value p[3] = {DB_I64(now), DB_STR(token_id), DB_STR(s.token_id)};
    st = db_exec(tx, "UPDATE refresh_tokens SET revoked_ms = ?, replaced_by = ? WHERE token_id = ?",
                 p, 3, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if ((st = user_tokens_fill(&j->tok, ctx, j->u.user_id, j->u.role, token_id, expires, errbuf,
                             errlen)) != STATUS_OK)
    return st;
  consistency_token_set(&j->token, j->u.user_id, j->u.version);
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
  check_violations v = {0};
  user_validate_refresh_token(token, &v);
  if (handler_violations_apply(call, &v) > 0) return false;
  if (!user_refresh_token_shape_ok(token)) {
    rpc_call_set_status(call, STATUS_UNAUTHENTICATED, "refresh token is not valid");
    return false;
  }
  user_refresh_token_hash(token, hash);
  return true;
}

void user_cmd_refresh_token(user_cmd_service *svc, const refresh_req *in,
                            Shop__User__V1__RefreshTokenResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  refresh_job j = {.ctx = ctx, .call = call};
  if (!refresh_token_arg(call, in->refresh_token, j.hash)) return;
  if (user_command_run(call, ctx, refresh_apply_cb, &j, &j.reply.base, false, false))
    closure(&j.reply, data);
  user_tokens_wipe(&j.tok);
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

static status_code logout_apply_cb(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                   size_t errlen) {
  logout_job *j = arg;
  session_row s;
  status_code st = token_session(tx, j->hash, &s, &j->u, out, errbuf, errlen);
  if (st != STATUS_OK || out->code != STATUS_OK) return st;
  int64_t now = clock_now_ms();
  if (j->in->all_sessions) {
    st = user_sessions_revoke_all(tx, s.user_id, now, errbuf, errlen);
  } else {
    db_value p[2] = {DB_I64(now), DB_STR(s.token_id)};
    st = db_exec(tx,
                 "UPDATE refresh_tokens SET revoked_ms = ? WHERE token_id = ? AND revoked_ms IS "
                 "NULL",
                 p, 2, NULL, NULL, errbuf, errlen);
  }
  if (st != STATUS_OK) return st;
  consistency_token_set(&j->token, j->u.user_id, j->u.version);
  shop__user__v1__logout_response__init(&j->reply);
  j->reply.user_id = j->u.user_id;
  j->reply.consistency = &j->token;
  return STATUS_OK;
}

void user_cmd_logout(user_cmd_service *svc, const logout_req *in,
                     Shop__User__V1__LogoutResponse_Closure closure, void *data) {
  rpc_call *call = data;
  const user_cmd_ctx *ctx = rpc_call_service_ctx(call);
  logout_job j = {.call = call, .in = in};
  if (!refresh_token_arg(call, in->refresh_token, j.hash)) return;
  if (user_command_run(call, ctx, logout_apply_cb, &j, &j.reply.base, false, true))
    closure(&j.reply, data);
  sodium_memzero(j.u.hash, sizeof j.u.hash);
}
