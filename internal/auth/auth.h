/*
 * auth: Shop's access tokens.
 *
 * An access token is a JWT signed with HS256 and a key from config
 * (auth.jwt_key, at least 32 bytes). Claims:
 *   sub   the user id
 *   role  "customer" or "admin"
 *   iss   the configured issuer
 *   iat   issued at, seconds since the epoch
 *   exp   expiry, seconds since the epoch (iat + auth.access_ttl_s)
 *   jti   a random id (32 hex digits)
 *
 * Verification decodes with the key, then checks by hand what libjwt 1.10.2
 * does not: the algorithm must be HS256 (so "alg: none" and any other
 * algorithm are refused, whatever the header says), the issuer must match,
 * exp must lie in the future, iat must not lie more than AUTH_CLOCK_SKEW_S in
 * the future, and sub, role and jti must be present and well formed.
 *
 * Thread-safe: an auth_keys is read-only after auth_keys_create() and may be
 * shared by every thread.
 */
#ifndef SHOP_AUTH_H
#define SHOP_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "status/status.h"

#define AUTH_MIN_KEY_BYTES 32
#define AUTH_CLOCK_SKEW_S 60
/* Bounds of the claims we accept; longer values are refused. */
#define AUTH_SUB_MAX 128
#define AUTH_ISS_MAX 128
#define AUTH_JTI_MAX 64
/* A buffer this large always holds a token that auth_token_sign writes. */
#define AUTH_TOKEN_MAX 1024

typedef enum auth_role {
  AUTH_ROLE_NONE = 0, /* anonymous: no token or no valid token */
  AUTH_ROLE_CUSTOMER = 1,
  AUTH_ROLE_ADMIN = 2,
} auth_role;

/* "customer", "admin", or "" for AUTH_ROLE_NONE. */
const char *auth_role_name(auth_role role);

/* Parses "customer" or "admin". Returns AUTH_ROLE_NONE for anything else. */
auth_role auth_role_parse(const char *text);

/* The verified claims of a token. */
typedef struct auth_claims {
  char sub[AUTH_SUB_MAX + 1];
  auth_role role;
  char iss[AUTH_ISS_MAX + 1];
  int64_t iat;
  int64_t exp;
  char jti[AUTH_JTI_MAX + 1];
} auth_claims;

typedef struct auth_keys auth_keys;

/* Copies the key (keylen bytes, at least AUTH_MIN_KEY_BYTES) and the issuer.
 * ttl_s is the lifetime of the tokens auth_token_sign writes. On success
 * *out owns the keys (free with auth_keys_destroy); on error returns
 * INVALID_ARGUMENT with the reason in errbuf. */
status_code auth_keys_create(auth_keys **out, const void *key, size_t keylen, const char *issuer,
                             int ttl_s, char *errbuf, size_t errlen);

/* auth_keys_create with the config's auth.jwt_key, auth.issuer and
 * auth.access_ttl_s: what every program that signs or verifies tokens
 * does. A key that is missing or too short fails with FAILED_PRECONDITION
 * or INVALID_ARGUMENT and errbuf naming the config file it read
 * (config_source_text) and how to give the key. */
status_code auth_keys_from_cfg(auth_keys **out, const shop_cfg *cfg, char *errbuf, size_t errlen);

/* Wipes and frees the keys; NULL is fine. */
void auth_keys_destroy(auth_keys *k);

/* A keyed digest (BLAKE2b-256) of data under a subkey derived from the
 * token key for one purpose (at most 64 bytes, e.g. "shop.idempotency"):
 * what a server stores to recognise a request again without keeping a fast
 * hash of secrets the request may carry (passwords). Stable for as long as
 * the key is. Thread-safe. */
#define AUTH_DIGEST_BYTES 32
void auth_keys_digest(const auth_keys *k, const char *purpose, const void *data, size_t len,
                      unsigned char out[AUTH_DIGEST_BYTES]);

/* Signs an access token for user `sub` with `role`, issued at `now` (seconds
 * since the epoch; 0 means the current time). Writes the NUL-terminated
 * token to buf (AUTH_TOKEN_MAX is always enough). Errors: INVALID_ARGUMENT
 * (empty or too long sub, no role), RESOURCE_EXHAUSTED (buf too small),
 * INTERNAL (libjwt failed). */
status_code auth_token_sign(const auth_keys *k, const char *sub, auth_role role, int64_t now,
                            char *buf, size_t buflen, char *errbuf, size_t errlen);

/* Verifies a token (without any "Bearer " prefix) at time `now` (0 means the
 * current time) and fills *out. Any failure is UNAUTHENTICATED with the
 * reason in errbuf ("token expired", "bad signature", "algorithm not
 * allowed", ...); the reason is safe to return to the caller. */
status_code auth_token_verify(const auth_keys *k, const char *token, int64_t now, auth_claims *out,
                              char *errbuf, size_t errlen);

#endif
