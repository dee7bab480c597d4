/*
 * What the files of user-command share: command.c (RegisterUser,
 * UpdateProfile, ChangePassword, SetRole, registration, the first admin,
 * housekeeping), command_session.c (Login, RefreshToken, Logout) and
 * command_store.c (the users, login_throttle and refresh_tokens rows). Not
 * part of the module's contract (that is user.h); nothing outside
 * internal/user includes this file.
 */
#ifndef SHOP_USER_INTERNAL_H
#define SHOP_USER_INTERNAL_H

#include "log/log.h"
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

/* ---- users rows (command_store.c) ------------------------------------------------ */

typedef struct user_row {
  char user_id[CHECK_ID_SIZE];
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

#define SQL_USER_BY_ID_LOCK "SELECT " USER_COLS " FROM users WHERE user_id = ? FOR UPDATE"
#define SQL_USER_BY_KEY "SELECT " USER_COLS " FROM users WHERE email_key = ?"
#define SQL_USER_BY_KEY_LOCK "SELECT " USER_COLS " FROM users WHERE email_key = ? FOR UPDATE"

/* The event's profile, borrowing u. */
typedef struct profile_pb {
  Shop__User__V1__UserProfile profile;
  Shop__User__V1__NotificationPreferences prefs;
} profile_pb;

typedef struct session_row {
  char token_id[CHECK_ID_SIZE];
  char user_id[CHECK_ID_SIZE];
  char family_id[CHECK_ID_SIZE];
  int64_t expires_ms;
  bool revoked;
  char replaced_by[CHECK_ID_SIZE];
  char idem_key[RPC_IDEMPOTENCY_KEY_MAX + 1];
  unsigned char request_mac[32];
  size_t request_mac_len;
} session_row;

#define SESSION_COLS                                                                               \
  "token_id, user_id, family_id, expires_ms, revoked_ms IS NOT NULL, COALESCE(replaced_by, "       \
  "''), COALESCE(idem_key, ''), COALESCE(request_mac, '')"

/* The tokens of a session: a freshly signed access token and the session's
 * refresh token (derived from its id). */
typedef struct tokens_pb {
  Shop__User__V1__AuthTokens tokens;
  Shop__Common__V1__Timestamp access_exp, refresh_exp;
  char access[AUTH_TOKEN_MAX];
  char refresh[USER_REFRESH_TOKEN_MAX];
} tokens_pb;

void user_copy_col(char *dst, size_t len, const db_rows *r, unsigned col);

/* Loads one user with sql (one parameter). NOT_FOUND when there is none. */
status_code user_load(db_conn *c, const char *sql, const char *arg, user_row *u, char *errbuf,
                      size_t errlen);

void user_profile_fill(profile_pb *p, const user_row *u);

/* Revokes every live refresh token of a user. */
status_code user_sessions_revoke_all(db_conn *tx, const char *user_id, int64_t now, char *errbuf,
                                     size_t errlen);

/* Inserts a new user at version 1 and appends UserRegistered: the one way
 * users come to exist (RegisterUser and the first admin). ALREADY_EXISTS
 * when the email key is taken. */
status_code user_insert(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call, user_row *u,
                        const char *actor, char *errbuf, size_t errlen);

/* Sets a user's role (u locked, role different), revokes the user's
 * refresh tokens, appends UserRoleChanged. */
status_code user_set_role(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call, user_row *u,
                          int role, char *errbuf, size_t errlen);

status_code user_throttle_row_read(db_conn *c, const char *email_key, bool lock, user_throttle *t,
                                   char *errbuf, size_t errlen);

/* Counts one failed login of email_key in tx. */
status_code user_throttle_row_fail(db_conn *tx, const user_cmd_ctx *ctx, const char *email_key,
                                   char *errbuf, size_t errlen);

status_code user_throttle_row_reset(db_conn *tx, const char *email_key, char *errbuf,
                                    size_t errlen);

void user_throttle_outcome(command_outcome *out, int64_t locked_ms);

status_code user_session_load(db_conn *c, const char *sql, db_value arg, session_row *s,
                              char *errbuf, size_t errlen);

/* A keyed digest of the request payload, for the idempotency of Login and
 * RefreshToken. Keyed, because a Login payload holds a password: a plain
 * SHA-256 of it would be a fast, crackable hash of that password. */
void user_request_mac(const user_cmd_ctx *ctx, const rpc_call *call, unsigned char out[32]);

/* Inserts a session of user, with its idempotency key and request MAC. */
status_code user_session_insert(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                                const char *user_id, const char *family_id, int origin,
                                char token_id[CHECK_ID_SIZE], int64_t *expires_ms, char *errbuf,
                                size_t errlen);

bool user_session_same_request(const user_cmd_ctx *ctx, const rpc_call *call, const session_row *s);

status_code user_tokens_fill(tokens_pb *t, const user_cmd_ctx *ctx, const char *user_id, int role,
                             const char *token_id, int64_t refresh_expires_ms, char *errbuf,
                             size_t errlen);

void user_tokens_wipe(tokens_pb *t);

/* Runs apply(job) as the call's command transaction (command_run) on
 * ctx's pool and fills reply: with appends_events, ctx's relay is nudged
 * after the commit; with idempotent, the call's idempotency record is kept
 * (false for Login and RefreshToken, whose replies hold tokens: their
 * sessions remember the key instead). */
bool user_command_run(rpc_call *call, const user_cmd_ctx *ctx, command_apply_cb apply, void *job,
                      const ProtobufCMessage *reply, bool appends_events, bool idempotent);

/* ---- the handlers of command_session.c (command.c registers them) ------------------ */

void user_cmd_login(user_cmd_service *svc, const login_req *in,
                    Shop__User__V1__LoginResponse_Closure closure, void *data);
void user_cmd_refresh_token(user_cmd_service *svc, const refresh_req *in,
                            Shop__User__V1__RefreshTokenResponse_Closure closure, void *data);
void user_cmd_logout(user_cmd_service *svc, const logout_req *in,
                     Shop__User__V1__LogoutResponse_Closure closure, void *data);

/* Emits a user event caused by call (NULL: start-up work) through
 * ctx->sink; actor (may be NULL) names who acted when not the caller. */
status_code user_event_emit(db_conn *tx, const user_cmd_ctx *ctx, const rpc_call *call,
                            const char *actor, const char *user_id, int64_t version,
                            const ProtobufCMessage *ev, char *errbuf, size_t errlen);

#endif
