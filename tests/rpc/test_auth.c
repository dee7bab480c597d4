/* Access tokens: HS256 pinned, expiry and issuer checked by hand. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth/auth.h"

#define KEY "auth-test-key-0123456789abcdefghijklmnop"
#define ISS "shop"

static auth_keys *keys;
static char err[256];

static void setup(void) {
  cr_assert_eq(auth_keys_create(&keys, KEY, strlen(KEY), ISS, 900, err, sizeof err), STATUS_OK,
               "%s", err);
}
static void teardown(void) { auth_keys_destroy(keys); }

static void sign(char *tok, size_t len, const char *sub, auth_role role, int64_t iat) {
  cr_assert_eq(auth_token_sign(keys, sub, role, iat, tok, len, err, sizeof err), STATUS_OK, "%s",
               err);
}

/* base64url without padding. */
static void b64(char *out, size_t outlen, const char *in) {
  sodium_bin2base64(out, outlen, (const unsigned char *)in, strlen(in),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

TestSuite(auth, .init = setup, .fini = teardown);

Test(auth, valid_token_verifies_with_its_claims) {
  char tok[AUTH_TOKEN_MAX];
  sign(tok, sizeof tok, "user-1", AUTH_ROLE_ADMIN, 0);
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, tok, 0, &c, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_str_eq(c.sub, "user-1");
  cr_assert_eq(c.role, AUTH_ROLE_ADMIN);
  cr_assert_str_eq(c.iss, ISS);
  cr_assert_eq(c.exp - c.iat, 900);
  cr_assert_eq(strlen(c.jti), 32);
}

Test(auth, expired_token_is_refused) {
  char tok[AUTH_TOKEN_MAX];
  int64_t now = (int64_t)time(NULL);
  sign(tok, sizeof tok, "user-1", AUTH_ROLE_CUSTOMER, now - 901);
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, tok, now, &c, err, sizeof err), STATUS_UNAUTHENTICATED);
  cr_assert_str_eq(err, "token expired");
  cr_assert_str_eq(c.sub, "", "no claims leak out of a refused token");
}

Test(auth, token_is_valid_until_exp) {
  char tok[AUTH_TOKEN_MAX];
  int64_t now = (int64_t)time(NULL);
  sign(tok, sizeof tok, "user-1", AUTH_ROLE_CUSTOMER, now - 899);
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, tok, now, &c, err, sizeof err), STATUS_OK, "%s", err);
}

Test(auth, tampered_signature_is_refused) {
  char tok[AUTH_TOKEN_MAX];
  sign(tok, sizeof tok, "user-1", AUTH_ROLE_CUSTOMER, 0);
  size_t n = strlen(tok);
  tok[n - 3] = tok[n - 3] == 'a' ? 'b' : 'a';
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, tok, 0, &c, err, sizeof err), STATUS_UNAUTHENTICATED);
}

Test(auth, tampered_claims_are_refused) {
  char tok[AUTH_TOKEN_MAX];
  sign(tok, sizeof tok, "user-1", AUTH_ROLE_CUSTOMER, 0);
  /* Swap the payload for one claiming admin, keep the signature. */
  char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
  char claims[256], payload[512], forged[AUTH_TOKEN_MAX];
  int64_t now = (int64_t)time(NULL);
  snprintf(claims, sizeof claims,
           "{\"sub\":\"user-1\",\"role\":\"admin\",\"iss\":\"shop\",\"iat\":%lld,\"exp\":%lld,"
           "\"jti\":\"x\"}",
           (long long)now, (long long)now + 900);
  b64(payload, sizeof payload, claims);
  snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(dot1 - tok), tok, payload, dot2);
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, forged, 0, &c, err, sizeof err), STATUS_UNAUTHENTICATED);
}

Test(auth, alg_none_is_refused) {
  char h[128], p[512], tok[AUTH_TOKEN_MAX], claims[256];
  int64_t now = (int64_t)time(NULL);
  snprintf(claims, sizeof claims,
           "{\"sub\":\"root\",\"role\":\"admin\",\"iss\":\"shop\",\"iat\":%lld,\"exp\":%lld,"
           "\"jti\":\"x\"}",
           (long long)now, (long long)now + 900);
  b64(h, sizeof h, "{\"alg\":\"none\",\"typ\":\"JWT\"}");
  b64(p, sizeof p, claims);
  snprintf(tok, sizeof tok, "%s.%s.", h, p);
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, tok, 0, &c, err, sizeof err), STATUS_UNAUTHENTICATED);
  snprintf(tok, sizeof tok, "%s.%s", h, p);
  cr_assert_eq(auth_token_verify(keys, tok, 0, &c, err, sizeof err), STATUS_UNAUTHENTICATED);
}

Test(auth, another_hmac_algorithm_is_refused) {
  jwt_t *j = NULL;
  cr_assert_eq(jwt_new(&j), 0);
  int64_t now = (int64_t)time(NULL);
  jwt_add_grant(j, "sub", "user-1");
  jwt_add_grant(j, "role", "admin");
  jwt_add_grant(j, "iss", ISS);
  jwt_add_grant(j, "jti", "x");
  jwt_add_grant_int(j, "iat", (long)now);
  jwt_add_grant_int(j, "exp", (long)now + 900);
  jwt_set_alg(j, JWT_ALG_HS512, (const unsigned char *)KEY, (int)strlen(KEY));
  char *tok = jwt_encode_str(j);
  auth_claims c;
  cr_assert_eq(auth_token_verify(keys, tok, 0, &c, err, sizeof err), STATUS_UNAUTHENTICATED);
  cr_assert_str_eq(err, "token algorithm not allowed");
  free(tok);
  jwt_free(j);
}

/* Verifies, with the test's keys, an admin token signed by key and
 * issuer. */
static status_code verify_foreign(const char *key, const char *issuer) {
  auth_keys *other = NULL;
  cr_assert_eq(auth_keys_create(&other, key, strlen(key), issuer, 900, err, sizeof err), STATUS_OK);
  char tok[AUTH_TOKEN_MAX];
  cr_assert_eq(
      auth_token_sign(other, "user-1", AUTH_ROLE_ADMIN, 0, tok, sizeof tok, err, sizeof err),
      STATUS_OK);
  auth_keys_destroy(other);
  auth_claims c;
  return auth_token_verify(keys, tok, 0, &c, err, sizeof err);
}

Test(auth, wrong_key_is_refused) {
  cr_assert_eq(verify_foreign("another-key-0123456789abcdefghijklmnop", ISS),
               STATUS_UNAUTHENTICATED);
}

Test(auth, wrong_issuer_is_refused) {
  cr_assert_eq(verify_foreign(KEY, "someone-else"), STATUS_UNAUTHENTICATED);
  cr_assert_str_eq(err, "token issuer not accepted");
}

Test(auth, garbage_and_empty_tokens_are_refused) {
  auth_claims c;
  const char *bad[] = {"", "a.b.c", "not-a-jwt", "....", "eyJ.eyJ.sig"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(auth_token_verify(keys, bad[i], 0, &c, err, sizeof err), STATUS_UNAUTHENTICATED,
                 "%s", bad[i]);
}

Test(auth, short_keys_are_refused_at_creation) {
  auth_keys *k = NULL;
  cr_assert_eq(auth_keys_create(&k, "short", 5, ISS, 900, err, sizeof err),
               STATUS_INVALID_ARGUMENT);
  cr_assert_null(k);
}

Test(auth, tokens_need_a_role) {
  char tok[AUTH_TOKEN_MAX];
  cr_assert_eq(auth_token_sign(keys, "user-1", AUTH_ROLE_NONE, 0, tok, sizeof tok, err, sizeof err),
               STATUS_INVALID_ARGUMENT);
}
