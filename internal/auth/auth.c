#include "auth/auth.h"

#include <errno.h>
#include <jwt.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct auth_keys {
  unsigned char *key;
  size_t keylen;
  char *issuer;
  int ttl_s;
};

const char *auth_role_name(auth_role role) {
  switch (role) {
  case AUTH_ROLE_CUSTOMER:
    return "customer";
  case AUTH_ROLE_ADMIN:
    return "admin";
  default:
    return "";
  }
}

auth_role auth_role_parse(const char *text) {
  if (text == NULL) return AUTH_ROLE_NONE;
  if (strcmp(text, "customer") == 0) return AUTH_ROLE_CUSTOMER;
  if (strcmp(text, "admin") == 0) return AUTH_ROLE_ADMIN;
  return AUTH_ROLE_NONE;
}

status_code auth_keys_create(auth_keys **out, const void *key, size_t keylen, const char *issuer,
                             int ttl_s, char *errbuf, size_t errlen) {
  *out = NULL;
  if (key == NULL || keylen < AUTH_MIN_KEY_BYTES) {
    status_seterr(errbuf, errlen, "auth: the signing key must be at least %d bytes",
                  AUTH_MIN_KEY_BYTES);
    return STATUS_INVALID_ARGUMENT;
  }
  if (keylen > 4096) {
    status_seterr(errbuf, errlen, "auth: the signing key is longer than 4096 bytes");
    return STATUS_INVALID_ARGUMENT;
  }
  if (issuer == NULL || issuer[0] == '\0' || strlen(issuer) > AUTH_ISS_MAX) {
    status_seterr(errbuf, errlen, "auth: the issuer must be 1..%d characters", AUTH_ISS_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  if (ttl_s <= 0) {
    status_seterr(errbuf, errlen, "auth: the token lifetime must be positive");
    return STATUS_INVALID_ARGUMENT;
  }
  if (sodium_init() < 0) {
    status_seterr(errbuf, errlen, "auth: libsodium failed to initialise");
    return STATUS_INTERNAL;
  }
  auth_keys *k = calloc(1, sizeof *k);
  if (k == NULL) goto oom;
  k->key = malloc(keylen);
  k->issuer = strdup(issuer);
  if (k->key == NULL || k->issuer == NULL) goto oom;
  memcpy(k->key, key, keylen);
  k->keylen = keylen;
  k->ttl_s = ttl_s;
  *out = k;
  return STATUS_OK;
oom:
  auth_keys_destroy(k);
  status_seterr(errbuf, errlen, "auth: out of memory");
  return STATUS_RESOURCE_EXHAUSTED;
}

status_code auth_keys_from_cfg(auth_keys **out, const shop_cfg *cfg, char *errbuf, size_t errlen) {
  *out = NULL;
  const char *key = cfg->auth.jwt_key;
  if (key == NULL || key[0] == '\0') {
    status_seterr(
        errbuf, errlen,
        "auth.jwt_key is not set in %s (give auth.jwt_key_file, SHOP_AUTH__JWT_KEY_FILE or "
        "SHOP_AUTH__JWT_KEY)",
        config_source_text(cfg));
    return STATUS_FAILED_PRECONDITION;
  }
  char why[STATUS_ERRBUF_SIZE];
  status_code st = auth_keys_create(out, key, strlen(key), cfg->auth.issuer, cfg->auth.access_ttl_s,
                                    why, sizeof why);
  if (st != STATUS_OK)
    status_seterr(errbuf, errlen, "%s (auth.jwt_key of %s)", why, config_source_text(cfg));
  return st;
}

void auth_keys_destroy(auth_keys *k) {
  if (k == NULL) return;
  if (k->key != NULL) {
    sodium_memzero(k->key, k->keylen);
    free(k->key);
  }
  free(k->issuer);
  free(k);
}

static int64_t now_or(int64_t now) { return now != 0 ? now : (int64_t)time(NULL); }

status_code auth_token_sign(const auth_keys *k, const char *sub, auth_role role, int64_t now,
                            char *buf, size_t buflen, char *errbuf, size_t errlen) {
  if (sub == NULL || sub[0] == '\0' || strlen(sub) > AUTH_SUB_MAX) {
    status_seterr(errbuf, errlen, "auth: sub must be 1..%d characters", AUTH_SUB_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  if (role != AUTH_ROLE_CUSTOMER && role != AUTH_ROLE_ADMIN) {
    status_seterr(errbuf, errlen, "auth: a token needs the customer or admin role");
    return STATUS_INVALID_ARGUMENT;
  }
  now = now_or(now);
  unsigned char rnd[16];
  char jti[33];
  randombytes_buf(rnd, sizeof rnd);
  sodium_bin2hex(jti, sizeof jti, rnd, sizeof rnd);

  status_code rc = STATUS_INTERNAL;
  char *tok = NULL;
  jwt_t *jwt = NULL;
  if (jwt_new(&jwt) != 0) goto out;
  if (jwt_add_grant(jwt, "sub", sub) != 0 ||
      jwt_add_grant(jwt, "role", auth_role_name(role)) != 0 ||
      jwt_add_grant(jwt, "iss", k->issuer) != 0 || jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
      jwt_add_grant_int(jwt, "exp", (long)(now + k->ttl_s)) != 0 ||
      jwt_add_grant(jwt, "jti", jti) != 0)
    goto out;
  if (jwt_set_alg(jwt, JWT_ALG_HS256, k->key, (int)k->keylen) != 0) goto out;
  tok = jwt_encode_str(jwt);
  if (tok == NULL) goto out;
  size_t n = strlen(tok);
  if (n + 1 > buflen) {
    rc = STATUS_RESOURCE_EXHAUSTED;
    status_seterr(errbuf, errlen, "auth: token of %zu bytes does not fit the buffer", n);
    goto out;
  }
  memcpy(buf, tok, n + 1);
  rc = STATUS_OK;
out:
  if (rc == STATUS_INTERNAL) status_seterr(errbuf, errlen, "auth: libjwt failed to sign the token");
  free(tok);
  jwt_free(jwt);
  return rc;
}

/* Copies a string claim of at most max characters; false when it is missing,
 * empty or too long. */
static int copy_claim(jwt_t *jwt, const char *name, char *dst, size_t max) {
  const char *v = jwt_get_grant(jwt, name);
  if (v == NULL || v[0] == '\0') return 0;
  size_t n = strlen(v);
  if (n > max) return 0;
  memcpy(dst, v, n + 1);
  return 1;
}

static int int_claim(jwt_t *jwt, const char *name, int64_t *out) {
  errno = 0;
  long v = jwt_get_grant_int(jwt, name);
  if (errno != 0) return 0;
  *out = v;
  return 1;
}

status_code auth_token_verify(const auth_keys *k, const char *token, int64_t now, auth_claims *out,
                              char *errbuf, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (token == NULL || token[0] == '\0') {
    status_seterr(errbuf, errlen, "missing token");
    return STATUS_UNAUTHENTICATED;
  }
  if (strlen(token) > AUTH_TOKEN_MAX) {
    status_seterr(errbuf, errlen, "token too long");
    return STATUS_UNAUTHENTICATED;
  }
  now = now_or(now);
  jwt_t *jwt = NULL;
  status_code rc = STATUS_UNAUTHENTICATED;
  /* libjwt checks the signature with the algorithm the token names; the
   * algorithm is pinned below, after decoding, so a token claiming "none"
   * or another algorithm is refused even if libjwt accepted it. */
  if (jwt_decode(&jwt, token, k->key, (int)k->keylen) != 0 || jwt == NULL) {
    status_seterr(errbuf, errlen, "bad token or signature");
    goto out;
  }
  if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
    status_seterr(errbuf, errlen, "token algorithm not allowed");
    goto out;
  }
  if (!copy_claim(jwt, "iss", out->iss, AUTH_ISS_MAX) || strcmp(out->iss, k->issuer) != 0) {
    status_seterr(errbuf, errlen, "token issuer not accepted");
    goto out;
  }
  if (!int_claim(jwt, "exp", &out->exp) || !int_claim(jwt, "iat", &out->iat)) {
    status_seterr(errbuf, errlen, "token lacks exp or iat");
    goto out;
  }
  if (out->exp <= now) {
    status_seterr(errbuf, errlen, "token expired");
    goto out;
  }
  if (out->iat > now + AUTH_CLOCK_SKEW_S) {
    status_seterr(errbuf, errlen, "token issued in the future");
    goto out;
  }
  char role[16];
  if (!copy_claim(jwt, "sub", out->sub, AUTH_SUB_MAX) ||
      !copy_claim(jwt, "jti", out->jti, AUTH_JTI_MAX) ||
      !copy_claim(jwt, "role", role, sizeof role - 1) ||
      (out->role = auth_role_parse(role)) == AUTH_ROLE_NONE) {
    status_seterr(errbuf, errlen, "token lacks sub, jti or a known role");
    goto out;
  }
  rc = STATUS_OK;
out:
  jwt_free(jwt);
  if (rc != STATUS_OK) {
    auth_role r = AUTH_ROLE_NONE;
    memset(out, 0, sizeof *out);
    out->role = r;
  }
  return rc;
}

void auth_keys_digest(const auth_keys *k, const char *purpose, const void *data, size_t len,
                      unsigned char out[AUTH_DIGEST_BYTES]) {
  unsigned char sub[crypto_generichash_KEYBYTES];
  size_t plen = strlen(purpose);
  if (plen > crypto_generichash_KEYBYTES_MAX) plen = crypto_generichash_KEYBYTES_MAX;
  crypto_generichash(sub, sizeof sub, k->key, k->keylen, (const unsigned char *)purpose, plen);
  crypto_generichash(out, AUTH_DIGEST_BYTES, data, len, sub, sizeof sub);
  sodium_memzero(sub, sizeof sub);
}
