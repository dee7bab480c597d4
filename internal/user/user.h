/*
 * user: Shop's users — registration, login, tokens, profiles, roles — on
 * both sides: the command side (user-command, database shop_user) and the
 * query side (user-query, database shop_user_read, built only from user
 * events).
 *
 * Follow RegisterUser from proto/shop/user/v1/commands.proto: the handler
 * user_cmd_RegisterUser (command.c) checks the request with the rules below,
 * hashes the password, then in one transaction (command_run) keeps the
 * idempotency record, inserts the users row and appends UserRegistered to
 * the outbox. The relay publishes it on shop.user.events.v1; user-query's
 * consumer (group "user-query") applies it to users_view
 * (user_projection_consumer, query.c), and GetMe with the reply's
 * consistency token waits for that version.
 *
 * Rules (rules.c), pure and tested on their own:
 *   - email: ASCII, "local@domain", at most 254 characters (local part at
 *     most 64, dot-atom characters; domain of at least two labels of
 *     letters, digits and '-'). Normalised by trimming surrounding white
 *     space and lower-casing the domain; the stored email keeps the local
 *     part's case. Uniqueness and login compare the whole address
 *     case-insensitively (the "email key": everything lower-cased), because
 *     that is how people type addresses and what every large provider does.
 *   - password: 12 to 128 characters, valid UTF-8, not one character
 *     repeated, not the email address or its local part. No composition
 *     rules (NIST SP 800-63B). Hashed with argon2id (libsodium
 *     crypto_pwhash_str_alg, ARGON2ID13); the cost comes from config
 *     (auth.password_opslimit, auth.password_memlimit_kib), by default
 *     OWASP's minimum: t = 2, m = 19 MiB, p = 1 (about 30 ms here).
 *     Verification is libsodium's, constant time in the comparison; an
 *     unknown email is verified against a dummy hash so that both cost the
 *     same. A hash made with a lower cost than configured is replaced at
 *     the next successful login.
 *   - name: 1 to 200 characters, no control characters, not only spaces.
 *   - phone: empty, or E.164: '+' and 8 to 15 digits, the first not 0.
 *
 * Tokens. The access token is auth's JWT (user id, role, auth.access_ttl_s).
 * A refresh token is "rt1.<token id>.<base64url HMAC-SHA256(k, token id)>",
 * with k derived from the JWT key; the database stores only its SHA-256
 * (refresh_tokens.token_hash), never the token. Because the token can be
 * derived again from its id, Login and RefreshToken are idempotent without
 * storing their replies (which hold tokens): a repeat with the same
 * idempotency key and request finds the session the first call created
 * and answers with the same refresh token (and a freshly signed access
 * token). RefreshToken rotates: the presented token is spent; presenting a
 * spent token again (other than as a repeat of the same call) revokes its
 * whole family — the standard answer to a stolen refresh token.
 *
 * Login throttle: per email key (known or not, so it reveals nothing),
 * auth.login_max_failures failed logins in a row (each less than
 * auth.login_lockout_s after the previous) lock logins for that address for
 * auth.login_lockout_s: RESOURCE_EXHAUSTED with RetryInfo, and the password
 * is not even checked. A success resets the count. ChangePassword's wrong
 * old password counts too. The state is the login_throttle table, so it
 * holds across restarts and instances; other accounts are not slowed (the
 * locked ones do not even cost an argon2 verification). A failure is
 * counted after its verification, so a burst of parallel attempts may get
 * up to rpc.workers more verifications before the lock shows: a bound,
 * not a hole.
 *
 * Nothing of this module logs or emits a password, a hash or a token.
 *
 * Threads: handlers run on the RPC server's workers, the projection on the
 * consumer's thread; contexts are read-only after init, except their
 * notifier.
 */
#ifndef SHOP_USER_H
#define SHOP_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "check/check.h"
#include "command/command.h"
#include "config/config.h"
#include "consistency/consistency.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "page/page.h"
#include "rpc/rpc.h"
#include "shop/user/v1/commands.pb-c.h"
#include "shop/user/v1/events.pb-c.h"
#include "shop/user/v1/queries.pb-c.h"
#include "status/status.h"

/* ---- Rules ------------------------------------------------------------------- */

#define USER_EMAIL_MAX 254
#define USER_EMAIL_LOCAL_MAX 64
#define USER_PASSWORD_MIN 12
#define USER_PASSWORD_MAX 128
#define USER_NAME_MAX 200
#define USER_PHONE_MAX 16 /* '+' and 15 digits */

/* Normalises an email (trim, lower-case domain) into out[USER_EMAIL_MAX +
 * 1]. Returns NULL when valid, else a description for a field violation. */
const char *user_email_normalize(const char *in, char *out, size_t outlen);

/* The uniqueness and login key of a normalised email: all lower case. */
void user_email_key(const char *normalized, char *out, size_t outlen);

/* NULL when the password is acceptable for this (normalised) email, else
 * why not. email may be NULL or "". */
const char *user_password_check(const char *password, const char *email);

const char *user_name_check(const char *name);
const char *user_phone_check(const char *phone);

/* ---- Request checks ---------------------------------------------------------------- */

/* The handlers' checks of each request on its own (no database, no
 * caller): violations go to v (see check_violations); the handler answers
 * INVALID_ARGUMENT with them when v->n > 0. Pure, so they are tested and
 * fuzzed without a server (tests/fuzz). */

/* Longest password Login accepts, in bytes (128 characters of 4 bytes). */
#define USER_LOGIN_PASSWORD_MAX_BYTES (USER_PASSWORD_MAX * 4)

/* RegisterUser: email (normalised into email), password, name, phone. */
void user_validate_register_user(const Shop__User__V1__RegisterUserRequest *in,
                                 char email[USER_EMAIL_MAX + 1], check_violations *v);
/* Login: email (normalised into email), a password of 1 to
 * USER_LOGIN_PASSWORD_MAX_BYTES bytes. */
void user_validate_login(const Shop__User__V1__LoginRequest *in, char email[USER_EMAIL_MAX + 1],
                         check_violations *v);
/* RefreshToken and Logout: a present, sanely sized token. Whether it has a
 * refresh token's shape (UNAUTHENTICATED otherwise) is
 * user_refresh_token_shape_ok, checked after. */
void user_validate_refresh_token(const char *refresh_token, check_violations *v);
/* UpdateProfile: user_id (empty: the caller), name and phone when set,
 * expected_version. Whether the caller may change that user is the
 * handler's. */
void user_validate_update_profile(const Shop__User__V1__UpdateProfileRequest *in,
                                  check_violations *v);
/* ChangePassword: old password present, new one acceptable and different. */
void user_validate_change_password(const Shop__User__V1__ChangePasswordRequest *in,
                                   check_violations *v);
/* SetRole: user_id, role CUSTOMER or ADMIN, expected_version. */
void user_validate_set_role(const Shop__User__V1__SetRoleRequest *in, check_violations *v);
/* GetUser: user_id. */
void user_validate_get_user(const Shop__User__V1__GetUserRequest *in, check_violations *v);
/* ListUsers: role (or UNSPECIFIED) and text filter (the page size is
 * page_size's). */
#define USER_LIST_TEXT_MAX 200
void user_validate_list_users(const Shop__User__V1__ListUsersRequest *in, check_violations *v);

/* ---- Passwords ----------------------------------------------------------------- */

#define USER_HASH_MAX 128 /* crypto_pwhash_STRBYTES */

typedef struct user_pwhash_params {
  unsigned long long opslimit;
  size_t memlimit; /* bytes */
} user_pwhash_params;

/* From auth.password_opslimit and auth.password_memlimit_kib. */
void user_pwhash_params_from_cfg(user_pwhash_params *p, const shop_cfg *cfg);

/* argon2id hash of password into out. INTERNAL when libsodium fails (out
 * of memory). */
status_code user_password_hash(const user_pwhash_params *p, const char *password,
                               char out[USER_HASH_MAX]);

/* Constant-time verification of password against an encoded hash. */
bool user_password_verify(const char *hash, const char *password);

/* True when hash was made with other parameters than p. */
bool user_password_needs_rehash(const user_pwhash_params *p, const char *hash);

/* ---- Refresh tokens --------------------------------------------------------------- */

#define USER_REFRESH_KEY_BYTES 32
#define USER_REFRESH_TOKEN_MAX 96 /* "rt1." + 36 + "." + 43 and the NUL */
#define USER_REFRESH_HASH_BYTES 32

/* Derives the refresh-token MAC key from the JWT key. */
void user_refresh_key_derive(const void *jwt_key, size_t len,
                             unsigned char out[USER_REFRESH_KEY_BYTES]);

/* Writes the refresh token of session token_id. */
void user_refresh_token_make(const unsigned char key[USER_REFRESH_KEY_BYTES], const char *token_id,
                             char out[USER_REFRESH_TOKEN_MAX]);

/* SHA-256 of a token, as stored. */
void user_refresh_token_hash(const char *token, unsigned char out[USER_REFRESH_HASH_BYTES]);

/* True when token has the shape of a refresh token (the MAC is not
 * checked: the stored hash is what decides). */
bool user_refresh_token_shape_ok(const char *token);

/* ---- Login throttle -------------------------------------------------------------- */

typedef struct user_throttle {
  int failures;
  int64_t last_failure_ms;
  int64_t locked_until_ms;
} user_throttle;

/* Milliseconds the account is still locked at now_ms; 0 when it is not. */
int64_t user_throttle_locked_ms(const user_throttle *t, int64_t now_ms);

/* Counts one failure at now_ms: failures older than lockout_s are
 * forgotten first; reaching max_failures locks for lockout_s (and starts
 * the count again). */
void user_throttle_fail(user_throttle *t, int64_t now_ms, int max_failures, int lockout_s);

/* ---- Roles ------------------------------------------------------------------------ */

auth_role user_role_to_auth(Shop__User__V1__Role r);
Shop__User__V1__Role user_role_from_auth(auth_role r);

/* ---- Command side (user-command) -------------------------------------------------- */

typedef struct user_cmd_ctx {
  const shop_cfg *cfg;
  const char *program; /* event source and actor of start-up work */
  db_pool *db;
  outbox_relay *relay;
  outbox_sink sink; /* where user events go (outbox_sink_of(relay, program)) */
  const auth_keys *keys;
  unsigned char refresh_key[USER_REFRESH_KEY_BYTES];
  user_pwhash_params pwhash;
  char dummy_hash[USER_HASH_MAX]; /* verified against for unknown emails */
} user_cmd_ctx;

/* Fills ctx (borrowing everything). INTERNAL when libsodium fails. */
status_code user_cmd_ctx_init(user_cmd_ctx *ctx, const shop_cfg *cfg, const char *program,
                              db_pool *db, outbox_relay *relay, const auth_keys *keys, char *errbuf,
                              size_t errlen);
/* Wipes the key material. */
void user_cmd_ctx_destroy(user_cmd_ctx *ctx);

/* Registers UserCommandService on s with its policies; ctx must outlive
 * the server. */
status_code user_cmd_register(rpc_server *s, user_cmd_ctx *ctx, char *errbuf, size_t errlen);

/* Creates the first admin from auth.admin_email / admin_password /
 * admin_name when the email is set, through the same path as
 * RegisterUser (UserRegistered with role ADMIN). An existing account with
 * that email is left as it is, but made ADMIN (UserRoleChanged) if it is
 * not: idempotent across restarts and concurrent instances. */
status_code user_bootstrap_admin(user_cmd_ctx *ctx, char *errbuf, size_t errlen);

/* Deletes refresh tokens expired for a day and throttle rows idle for a
 * day. For app housekeeping. */
void user_cmd_housekeeping(db_conn *c, user_cmd_ctx *ctx);

/* The command side's migrations (component "user"). */
extern const db_migration user_migrations[];
extern const size_t user_migrations_count;

/* ---- Query side (user-query) -------------------------------------------------------- */

typedef struct user_query_ctx {
  db_pool *db;
  consistency_notifier notifier; /* woken by the projection after each commit */
} user_query_ctx;

void user_query_ctx_init(user_query_ctx *ctx, db_pool *db);
void user_query_ctx_destroy(user_query_ctx *ctx);

/* Registers UserQueryService on s; ctx must outlive the server. */
status_code user_query_register(rpc_server *s, user_query_ctx *ctx, char *errbuf, size_t errlen);

/* user-query's consumer (group "user-query", arg: the user_query_ctx): user
 * events, each part of a user at its own version. */
extern const consumer_spec user_projection_consumer;

/* The query side's migrations (component "user_read"). */
extern const db_migration user_read_migrations[];
extern const size_t user_read_migrations_count;

#endif
