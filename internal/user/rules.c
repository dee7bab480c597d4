/* The user domain's rules: email, password policy, names, phones, password
 * hashing, refresh tokens, the login throttle. No I/O. See user.h. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "check/check.h"
#include "user/user.h"

/* ---- Email --------------------------------------------------------------------- */

static bool atext(unsigned char c) {
  return isalnum(c) || (c != '\0' && strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL);
}

static bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

const char *user_email_normalize(const char *in, char *out, size_t outlen) {
  if (in == NULL) in = "";
  while (is_space((unsigned char)*in)) in++;
  size_t n = strlen(in);
  while (n > 0 && is_space((unsigned char)in[n - 1])) n--;
  if (n == 0) return "must not be empty";
  if (n > USER_EMAIL_MAX) return "must be at most 254 characters";
  const char *at = memchr(in, '@', n);
  if (at == NULL) return "must be an email address (local@domain)";
  size_t local = (size_t)(at - in), dom = n - local - 1;
  if (local == 0) return "must have a local part before '@'";
  if (local > USER_EMAIL_LOCAL_MAX) return "local part must be at most 64 characters";
  if (dom == 0) return "must have a domain after '@'";
  /* Local part: dot-atom (RFC 5322), ASCII only. */
  if (in[0] == '.' || in[local - 1] == '.') return "local part must not start or end with '.'";
  for (size_t i = 0; i < local; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c == '.') {
      if (in[i + 1] == '.') return "local part must not contain '..'";
      continue;
    }
    if (c >= 0x80) return "must be ASCII (use punycode for international domains)";
    if (!atext(c)) return "local part holds a character not allowed in an address";
  }
  /* Domain: labels of letters, digits and '-', 1..63 each, at least two. */
  const char *d = at + 1;
  size_t labels = 0, len = 0;
  for (size_t i = 0; i <= dom; i++) {
    unsigned char c = i < dom ? (unsigned char)d[i] : '.';
    if (c == '.') {
      if (len == 0) return "domain must not have empty labels";
      if (d[i - 1] == '-') return "domain labels must not end with '-'";
      labels++;
      len = 0;
      continue;
    }
    if (c >= 0x80) return "must be ASCII (use punycode for international domains)";
    if (!isalnum(c) && c != '-') return "domain holds a character not allowed in a host name";
    if (len == 0 && c == '-') return "domain labels must not start with '-'";
    if (++len > 63) return "domain labels must be at most 63 characters";
  }
  if (labels < 2) return "domain must have at least two labels (example.com)";
  if (outlen <= n) return "must be at most 254 characters";
  memcpy(out, in, n);
  out[n] = '\0';
  for (size_t i = local + 1; i < n; i++) out[i] = (char)tolower((unsigned char)out[i]);
  return NULL;
}

void user_email_key(const char *normalized, char *out, size_t outlen) {
  size_t i = 0;
  for (; normalized[i] != '\0' && i + 1 < outlen; i++)
    out[i] = (char)tolower((unsigned char)normalized[i]);
  if (outlen > 0) out[i] = '\0';
}

/* ---- Password, name, phone ----------------------------------------------------------- */

const char *user_password_check(const char *pw, const char *email) {
  if (pw == NULL || pw[0] == '\0') return "must not be empty";
  long chars = check_utf8_chars(pw);
  if (chars < 0) return "must be valid UTF-8";
  if (chars < USER_PASSWORD_MIN) return "must be at least 12 characters";
  if (chars > USER_PASSWORD_MAX) return "must be at most 128 characters";
  bool same = true;
  for (const char *p = pw + 1; *p != '\0'; p++) same = same && *p == pw[0];
  if (same) return "must not be one character repeated";
  if (email != NULL && email[0] != '\0') {
    if (strcasecmp(pw, email) == 0) return "must not be the email address";
    const char *at = strchr(email, '@');
    size_t local = at != NULL ? (size_t)(at - email) : strlen(email);
    if (strlen(pw) == local && strncasecmp(pw, email, local) == 0)
      return "must not be the email address's local part";
  }
  return NULL;
}

const char *user_name_check(const char *name) {
  const char *why = check_text(name, 1, USER_NAME_MAX, 0);
  if (why != NULL) return why;
  for (const char *p = name; *p != '\0'; p++)
    if (!is_space((unsigned char)*p)) return NULL;
  return "must not be only white space";
}

const char *user_phone_check(const char *phone) {
  if (phone == NULL || phone[0] == '\0') return NULL;
  if (phone[0] != '+') return "must be in E.164 form: '+' and 8 to 15 digits";
  size_t n = strlen(phone + 1);
  if (n < 8 || n > 15) return "must be in E.164 form: '+' and 8 to 15 digits";
  if (phone[1] == '0') return "must be in E.164 form: the country code does not start with 0";
  for (size_t i = 1; i <= n; i++)
    if (!isdigit((unsigned char)phone[i])) return "must be in E.164 form: digits only after '+'";
  return NULL;
}

/* ---- Request checks ------------------------------------------------------------------ */

void user_validate_register_user(const Shop__User__V1__RegisterUserRequest *in,
                                 char email[USER_EMAIL_MAX + 1], check_violations *v) {
  size_t before = v->n;
  check_violation_add(v, "email", user_email_normalize(in->email, email, USER_EMAIL_MAX + 1));
  check_violation_add(v, "password",
                      user_password_check(in->password, v->n == before ? email : in->email));
  check_violation_add(v, "name", user_name_check(in->name));
  check_violation_add(v, "phone", user_phone_check(in->phone));
}

void user_validate_login(const Shop__User__V1__LoginRequest *in, char email[USER_EMAIL_MAX + 1],
                         check_violations *v) {
  check_violation_add(v, "email", user_email_normalize(in->email, email, USER_EMAIL_MAX + 1));
  if (in->password[0] == '\0')
    check_violation_add(v, "password", "must not be empty");
  else if (strlen(in->password) > USER_LOGIN_PASSWORD_MAX_BYTES)
    check_violation_add(v, "password", "must be at most 128 characters");
}

void user_validate_refresh_token(const char *refresh_token, check_violations *v) {
  if (refresh_token[0] == '\0')
    check_violation_add(v, "refresh_token", "must not be empty");
  else if (strlen(refresh_token) >= 256)
    check_violation_add(v, "refresh_token", "is too long to be a refresh token");
}

void user_validate_update_profile(const Shop__User__V1__UpdateProfileRequest *in,
                                  check_violations *v) {
  if (in->user_id[0] != '\0' && !check_id(in->user_id))
    check_violation_add(v, "user_id", "must be a user id");
  if (in->name_update_case == SHOP__USER__V1__UPDATE_PROFILE_REQUEST__NAME_UPDATE_NAME)
    check_violation_add(v, "name", user_name_check(in->name));
  if (in->phone_update_case == SHOP__USER__V1__UPDATE_PROFILE_REQUEST__PHONE_UPDATE_PHONE)
    check_violation_add(v, "phone", user_phone_check(in->phone));
  if (in->expected_version < 0) check_violation_add(v, "expected_version", "must not be negative");
}

void user_validate_change_password(const Shop__User__V1__ChangePasswordRequest *in,
                                   check_violations *v) {
  size_t before = v->n;
  if (in->old_password[0] == '\0') check_violation_add(v, "old_password", "must not be empty");
  check_violation_add(v, "new_password", user_password_check(in->new_password, NULL));
  if (v->n == before && strcmp(in->old_password, in->new_password) == 0)
    check_violation_add(v, "new_password", "must differ from the old password");
}

void user_validate_set_role(const Shop__User__V1__SetRoleRequest *in, check_violations *v) {
  if (!check_id(in->user_id)) check_violation_add(v, "user_id", "must be a user id");
  if (in->role != SHOP__USER__V1__ROLE__ROLE_CUSTOMER &&
      in->role != SHOP__USER__V1__ROLE__ROLE_ADMIN)
    check_violation_add(v, "role", "must be ROLE_CUSTOMER or ROLE_ADMIN");
  if (in->expected_version < 0) check_violation_add(v, "expected_version", "must not be negative");
}

void user_validate_get_user(const Shop__User__V1__GetUserRequest *in, check_violations *v) {
  if (!check_id(in->user_id)) check_violation_add(v, "user_id", "must be a user id");
}

void user_validate_list_users(const Shop__User__V1__ListUsersRequest *in, check_violations *v) {
  if (in->role != SHOP__USER__V1__ROLE__ROLE_UNSPECIFIED &&
      in->role != SHOP__USER__V1__ROLE__ROLE_CUSTOMER &&
      in->role != SHOP__USER__V1__ROLE__ROLE_ADMIN)
    check_violation_add(v, "role", "must be a known role or ROLE_UNSPECIFIED");
  check_violation_add(v, "text", check_text(in->text, 0, USER_LIST_TEXT_MAX, 0));
}

/* ---- Password hashing -------------------------------------------------------------- */

void user_pwhash_params_from_cfg(user_pwhash_params *p, const shop_cfg *cfg) {
  p->opslimit = (unsigned long long)cfg->auth.password_opslimit;
  p->memlimit = (size_t)cfg->auth.password_memlimit_kib * 1024u;
}

status_code user_password_hash(const user_pwhash_params *p, const char *password,
                               char out[USER_HASH_MAX]) {
  if (crypto_pwhash_str_alg(out, password, strlen(password), p->opslimit, p->memlimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0)
    return STATUS_INTERNAL;
  return STATUS_OK;
}

bool user_password_verify(const char *hash, const char *password) {
  return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

bool user_password_needs_rehash(const user_pwhash_params *p, const char *hash) {
  return crypto_pwhash_str_needs_rehash(hash, p->opslimit, p->memlimit) != 0;
}

/* ---- Refresh tokens ---------------------------------------------------------------- */

#define REFRESH_PREFIX "rt1."

void user_refresh_key_derive(const void *jwt_key, size_t len,
                             unsigned char out[USER_REFRESH_KEY_BYTES]) {
  static const char label[] = "shop refresh token key v1";
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, jwt_key, len);
  crypto_auth_hmacsha256_update(&st, (const unsigned char *)label, sizeof label - 1);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof st);
}

void user_refresh_token_make(const unsigned char key[USER_REFRESH_KEY_BYTES], const char *token_id,
                             char out[USER_REFRESH_TOKEN_MAX]) {
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key, USER_REFRESH_KEY_BYTES);
  crypto_auth_hmacsha256_update(&st, (const unsigned char *)token_id, strlen(token_id));
  crypto_auth_hmacsha256_final(&st, mac);
  char b64[64];
  sodium_bin2base64(b64, sizeof b64, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  snprintf(out, USER_REFRESH_TOKEN_MAX, REFRESH_PREFIX "%s.%s", token_id, b64);
  sodium_memzero(mac, sizeof mac);
  sodium_memzero(&st, sizeof st);
}

void user_refresh_token_hash(const char *token, unsigned char out[USER_REFRESH_HASH_BYTES]) {
  crypto_hash_sha256(out, (const unsigned char *)token, strlen(token));
}

bool user_refresh_token_shape_ok(const char *token) {
  if (token == NULL) return false;
  size_t n = strlen(token);
  if (n != strlen(REFRESH_PREFIX) + 36 + 1 + 43) return false;
  if (strncmp(token, REFRESH_PREFIX, strlen(REFRESH_PREFIX)) != 0) return false;
  char id[CHECK_ID_SIZE];
  memcpy(id, token + 4, 36);
  id[36] = '\0';
  if (!check_id(id) || token[40] != '.') return false;
  for (size_t i = 41; i < n; i++) {
    unsigned char c = (unsigned char)token[i];
    if (!isalnum(c) && c != '-' && c != '_') return false;
  }
  return true;
}

/* ---- Throttle ---------------------------------------------------------------------- */

int64_t user_throttle_locked_ms(const user_throttle *t, int64_t now_ms) {
  return t->locked_until_ms > now_ms ? t->locked_until_ms - now_ms : 0;
}

void user_throttle_fail(user_throttle *t, int64_t now_ms, int max_failures, int lockout_s) {
  int64_t window = (int64_t)lockout_s * 1000;
  if (t->last_failure_ms == 0 || now_ms - t->last_failure_ms >= window) t->failures = 0;
  t->failures++;
  t->last_failure_ms = now_ms;
  if (t->failures >= max_failures) {
    t->locked_until_ms = now_ms + window;
    t->failures = 0;
  }
}

/* ---- Roles -------------------------------------------------------------------------- */

auth_role user_role_to_auth(Shop__User__V1__Role r) {
  switch (r) {
  case SHOP__USER__V1__ROLE__ROLE_CUSTOMER:
    return AUTH_ROLE_CUSTOMER;
  case SHOP__USER__V1__ROLE__ROLE_ADMIN:
    return AUTH_ROLE_ADMIN;
  default:
    return AUTH_ROLE_NONE;
  }
}

Shop__User__V1__Role user_role_from_auth(auth_role r) {
  switch (r) {
  case AUTH_ROLE_CUSTOMER:
    return SHOP__USER__V1__ROLE__ROLE_CUSTOMER;
  case AUTH_ROLE_ADMIN:
    return SHOP__USER__V1__ROLE__ROLE_ADMIN;
  default:
    return SHOP__USER__V1__ROLE__ROLE_UNSPECIFIED;
  }
}
