/* user-command's rows: users, login_throttle and refresh_tokens, read and
 * written inside the handlers' transactions (user_internal.h). */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "command/command.h"
#include "events/events.h"
#include "topology/topology.h"
#include "user/user_internal.h"

/* ---- users rows ----------------------------------------------------------------- */

void user_copy_col(char *dst, size_t len, const db_rows *r, unsigned col) {
  snprintf(dst, len, "%s", db_rows_str(r, col, NULL));
}

/* Runs sql (one parameter) and steps to its first row: on OK the caller
 * owns *r, positioned on that row; NOT_FOUND (nothing to free) when there
 * is none. */
static status_code query_one(db_conn *c, const char *sql, db_value arg, db_rows **r, char *errbuf,
                             size_t errlen) {
  status_code st = db_query(c, sql, &arg, 1, r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(*r)) {
    db_rows_free(*r);
    *r = NULL;
    return STATUS_NOT_FOUND;
  }
  return STATUS_OK;
}

/* Loads one user with sql (one parameter). NOT_FOUND when there is none. */
status_code user_load(db_conn *c, const char *sql, const char *arg, user_row *u, char *errbuf,
                      size_t errlen) {
  db_rows *r = NULL;
  status_code st = query_one(c, sql, DB_STR(arg), &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  user_copy_col(u->user_id, sizeof u->user_id, r, 0);
  user_copy_col(u->email, sizeof u->email, r, 1);
  user_copy_col(u->email_key, sizeof u->email_key, r, 2);
  user_copy_col(u->hash, sizeof u->hash, r, 3);
  u->role = (int)db_rows_i64(r, 4);
  user_copy_col(u->name, sizeof u->name, r, 5);
  user_copy_col(u->phone, sizeof u->phone, r, 6);
  u->notify_email = db_rows_i64(r, 7) != 0;
  u->notify_sms = db_rows_i64(r, 8) != 0;
  u->notify_push = db_rows_i64(r, 9) != 0;
  u->version = db_rows_i64(r, 10);
  db_rows_free(r);
  return STATUS_OK;
}

void user_profile_fill(profile_pb *p, const user_row *u) {
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
status_code user_sessions_revoke_all(db_conn *tx, const char *user_id, int64_t now, char *errbuf,
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
status_code user_insert(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call, user_row *u,
                        const char *actor, char *errbuf, size_t errlen) {
  int64_t now = clock_now_ms();
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
  user_profile_fill(&pp, u);
  Shop__User__V1__UserRegistered ev = SHOP__USER__V1__USER_REGISTERED__INIT;
  ev.user_id = u->user_id;
  ev.email = u->email;
  ev.role = (Shop__User__V1__Role)u->role;
  ev.profile = &pp.profile;
  return user_event_emit(tx, ctx, call, actor, u->user_id, 1, &ev.base, errbuf, errlen);
}

/* Sets a user's role (u locked, role different), revokes the user's
 * refresh tokens, appends UserRoleChanged. */
status_code user_set_role(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call, user_row *u,
                          int role, char *errbuf, size_t errlen) {
  int64_t now = clock_now_ms();
  db_value p[3] = {DB_I64(role), DB_I64(now), DB_STR(u->user_id)};
  status_code st = db_exec(tx,
                           "UPDATE users SET role = ?, version = version + 1, updated_ms = ? "
                           "WHERE user_id = ?",
                           p, 3, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if ((st = user_sessions_revoke_all(tx, u->user_id, now, errbuf, errlen)) != STATUS_OK) return st;
  int previous = u->role;
  u->role = role;
  u->version++;
  Shop__User__V1__UserRoleChanged ev = SHOP__USER__V1__USER_ROLE_CHANGED__INIT;
  ev.user_id = u->user_id;
  ev.role = (Shop__User__V1__Role)role;
  ev.previous_role = (Shop__User__V1__Role)previous;
  return user_event_emit(tx, ctx, call, NULL, u->user_id, u->version, &ev.base, errbuf, errlen);
}

status_code user_event_emit(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                            const char *actor, const char *user_id, int64_t version,
                            const ProtobufCMessage *ev, char *errbuf, size_t errlen) {
  /* Outside a call (the first admin at start-up), the current log scope's
   * ids: every event has a correlation id and a trace. */
  const log_ctx *scope = log_current();
  outbox_cause cause = call != NULL
                           ? command_cause(call)
                           : (outbox_cause){.correlation_id = scope ? scope->request_id : NULL,
                                            .traceparent = log_current_traceparent()};
  if (actor != NULL && actor[0] != '\0') cause.actor = actor;
  return outbox_emit(&ctx->sink, tx, &cause, user_id, version, ev, errbuf, errlen);
}

/* ---- login throttle --------------------------------------------------------------- */

status_code user_throttle_row_read(db_conn *c, const char *email_key, bool lock, user_throttle *t,
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
status_code user_throttle_row_fail(db_conn *tx, const user_cmd_ctx *ctx, const char *email_key,
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
  if ((st = user_throttle_row_read(tx, email_key, true, &t, errbuf, errlen)) != STATUS_OK)
    return st;
  user_throttle_fail(&t, clock_now_ms(), ctx->cfg->auth.login_max_failures,
                     ctx->cfg->auth.login_lockout_s);
  db_value p[4] = {DB_I64(t.failures), DB_I64(t.last_failure_ms), DB_I64(t.locked_until_ms),
                   DB_STR(email_key)};
  return db_exec(tx,
                 "UPDATE login_throttle SET failures = ?, last_failure_ms = ?, locked_until_ms = ? "
                 "WHERE email_key = ?",
                 p, 4, NULL, NULL, errbuf, errlen);
}

status_code user_throttle_row_reset(db_conn *tx, const char *email_key, char *errbuf,
                                    size_t errlen) {
  db_value p[1] = {DB_STR(email_key)};
  return db_exec(tx, "DELETE FROM login_throttle WHERE email_key = ?", p, 1, NULL, NULL, errbuf,
                 errlen);
}

void user_throttle_outcome(command_outcome *out, int64_t locked_ms) {
  int64_t s = (locked_ms + 999) / 1000;
  command_fail(out, STATUS_RESOURCE_EXHAUSTED, NULL,
               "too many failed logins for this account; try again in %lld s", (long long)s);
  out->retry_delay_ms = locked_ms;
}

/* ---- sessions (refresh tokens) ------------------------------------------------------- */

status_code user_session_load(db_conn *c, const char *sql, db_value arg, session_row *s,
                              char *errbuf, size_t errlen) {
  db_rows *r = NULL;
  status_code st = query_one(c, sql, arg, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  user_copy_col(s->token_id, sizeof s->token_id, r, 0);
  user_copy_col(s->user_id, sizeof s->user_id, r, 1);
  user_copy_col(s->family_id, sizeof s->family_id, r, 2);
  s->expires_ms = db_rows_i64(r, 3);
  s->revoked = db_rows_i64(r, 4) != 0;
  user_copy_col(s->replaced_by, sizeof s->replaced_by, r, 5);
  user_copy_col(s->idem_key, sizeof s->idem_key, r, 6);
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
void user_request_mac(const user_cmd_ctx *ctx, const rpc_call *call, unsigned char out[32]) {
  size_t n = 0;
  const void *p = rpc_call_payload(call, &n);
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, ctx->refresh_key, sizeof ctx->refresh_key);
  crypto_auth_hmacsha256_update(&st, (const unsigned char *)"request", 7);
  if (n > 0) crypto_auth_hmacsha256_update(&st, p, n);
  crypto_auth_hmacsha256_final(&st, out);
}

/* Inserts a session of user, with its idempotency key and request MAC. */
status_code user_session_insert(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                                const char *user_id, const char *family_id, int origin,
                                char token_id[CHECK_ID_SIZE], int64_t *expires_ms, char *errbuf,
                                size_t errlen) {
  events_uuid_v7(token_id);
  char token[USER_REFRESH_TOKEN_MAX];
  user_refresh_token_make(ctx->refresh_key, token_id, token);
  unsigned char hash[USER_REFRESH_HASH_BYTES];
  user_refresh_token_hash(token, hash);
  sodium_memzero(token, sizeof token);
  unsigned char mac[32];
  user_request_mac(ctx, call, mac);
  int64_t now = clock_now_ms();
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

bool user_session_same_request(const user_cmd_ctx *ctx, const rpc_call *call,
                               const session_row *s) {
  unsigned char mac[32];
  user_request_mac(ctx, call, mac);
  return strcmp(s->idem_key, rpc_call_idempotency_key(call)) == 0 &&
         s->request_mac_len == sizeof mac && sodium_memcmp(mac, s->request_mac, sizeof mac) == 0;
}

status_code user_tokens_fill(tokens_pb *t, const user_cmd_ctx *ctx, const char *user_id, int role,
                             const char *token_id, int64_t refresh_expires_ms, char *errbuf,
                             size_t errlen) {
  int64_t now_s = clock_now_ms() / 1000;
  status_code st =
      auth_token_sign(ctx->keys, user_id, user_role_to_auth((Shop__User__V1__Role)role), now_s,
                      t->access, sizeof t->access, errbuf, errlen);
  if (st != STATUS_OK) return st;
  user_refresh_token_make(ctx->refresh_key, token_id, t->refresh);
  shop__user__v1__auth_tokens__init(&t->tokens);
  clock_timestamp_set(&t->access_exp, (now_s + ctx->cfg->auth.access_ttl_s) * 1000);
  clock_timestamp_set(&t->refresh_exp, refresh_expires_ms);
  t->tokens.access_token = t->access;
  t->tokens.access_token_expires_at = &t->access_exp;
  t->tokens.refresh_token = t->refresh;
  t->tokens.refresh_token_expires_at = &t->refresh_exp;
  return STATUS_OK;
}

void user_tokens_wipe(tokens_pb *t) { sodium_memzero(t, sizeof *t); }

bool user_command_run(rpc_call *call, const user_cmd_ctx *ctx, command_apply_cb apply, void *job,
                      const ProtobufCMessage *reply, bool appends_events, bool idempotent) {
  command_tx cmd = {.call = call,
                    .db = ctx->db,
                    .relay = appends_events ? ctx->relay : NULL,
                    .apply = apply,
                    .arg = job,
                    .reply = reply,
                    .idempotent = idempotent};
  return command_run(&cmd);
}
