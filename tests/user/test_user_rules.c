/* The user domain's rules, without sockets or a database. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>

#include "user/user.h"

static const char *norm(const char *in, char *out) {
  return user_email_normalize(in, out, USER_EMAIL_MAX + 1);
}

Test(user_email, is_trimmed_and_its_domain_lower_cased) {
  char out[USER_EMAIL_MAX + 1];
  cr_assert_null(norm("  Alice.Smith+shop@Example.COM \n", out));
  cr_assert_str_eq(out, "Alice.Smith+shop@example.com");
  char key[USER_EMAIL_MAX + 1];
  user_email_key(out, key, sizeof key);
  cr_assert_str_eq(key, "alice.smith+shop@example.com");
}

Test(user_email, refuses_what_is_not_an_address) {
  char out[USER_EMAIL_MAX + 1];
  const char *bad[] = {"",
                       "plain",
                       "@example.com",
                       "a@",
                       "a@b",
                       "a@@b.com",
                       "a b@example.com",
                       "a..b@example.com",
                       "a.@example.com",
                       "a@example..com",
                       "a@-x.com",
                       "a@x-.com",
                       "a@exa mple.com",
                       "jos\xc3\xa9@example.com",
                       "a@\xc3\xa9xample.com"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_not_null(norm(bad[i], out), "accepted \"%s\"", bad[i]);
}

Test(user_email, enforces_the_lengths) {
  char out[USER_EMAIL_MAX + 1], in[400];
  memset(in, 'a', 64);
  strcpy(in + 64, "@example.com");
  cr_assert_null(norm(in, out), "a 64-character local part is fine");
  memset(in, 'a', 65);
  strcpy(in + 65, "@example.com");
  cr_assert_not_null(norm(in, out));
  /* 255 characters in all. */
  memset(in, 'a', 60);
  in[60] = '@';
  size_t o = 61;
  while (o < 255) {
    memcpy(in + o, "bbbbbbbbb.", 10);
    o += 10;
  }
  strcpy(in + o, "com");
  cr_assert_gt(strlen(in), 254);
  cr_assert_not_null(norm(in, out));
}

Test(user_password, policy) {
  cr_assert_null(user_password_check("correct horse battery", "a@example.com"));
  cr_assert_null(user_password_check("\xc3\xa4\xc3\xb6\xc3\xbc\xc3\x9f\xc3\xa4\xc3\xb6\xc3\xbc\xc3"
                                     "\x9f\xc3\xa4\xc3\xb6\xc3\xbc\xc3\x9f",
                                     NULL),
                 "12 non-ASCII characters count as 12");
  cr_assert_not_null(user_password_check("", NULL));
  cr_assert_not_null(user_password_check("elevenchars", NULL));
  cr_assert_not_null(user_password_check("zzzzzzzzzzzzzzzz", NULL));
  cr_assert_not_null(user_password_check("Bob.Example@example.com", "bob.example@example.com"));
  cr_assert_not_null(user_password_check("bob.example1", "bob.example1@example.com"));
  cr_assert_not_null(user_password_check("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", NULL));
  char longpw[200];
  memset(longpw, 'q', 129);
  longpw[0] = 'r';
  longpw[129] = '\0';
  cr_assert_not_null(user_password_check(longpw, NULL));
  longpw[128] = '\0';
  cr_assert_null(user_password_check(longpw, NULL), "128 characters are fine");
}

Test(user_name, one_to_two_hundred_characters_without_control_characters) {
  char name[300];
  cr_assert_null(user_name_check("Zoë O'Brien"));
  cr_assert_null(user_name_check("Robert'); DROP TABLE users;--"));
  cr_assert_not_null(user_name_check(""));
  cr_assert_not_null(user_name_check("  \t"));
  cr_assert_not_null(user_name_check("line\nbreak"));
  memset(name, 'n', 200);
  name[200] = '\0';
  cr_assert_null(user_name_check(name));
  name[200] = 'n';
  name[201] = '\0';
  cr_assert_not_null(user_name_check(name));
}

Test(user_phone, empty_or_e164) {
  cr_assert_null(user_phone_check(""));
  cr_assert_null(user_phone_check("+4915112345678"));
  cr_assert_null(user_phone_check("+12025550123"));
  cr_assert_not_null(user_phone_check("4915112345678"));
  cr_assert_not_null(user_phone_check("+0151123456"));
  cr_assert_not_null(user_phone_check("+49 151 123"));
  cr_assert_not_null(user_phone_check("+1234567"));
  cr_assert_not_null(user_phone_check("+1234567890123456"));
}

Test(user_password_hash, is_argon2id_and_verifies) {
  cr_assert_geq(sodium_init(), 0);
  user_pwhash_params p = {.opslimit = 2, .memlimit = 19456u * 1024u};
  char h[USER_HASH_MAX];
  cr_assert_eq(user_password_hash(&p, "correct horse battery", h), STATUS_OK);
  cr_assert_eq(strncmp(h, "$argon2id$v=19$m=19456,t=2,p=1$", 31), 0, "%s", h);
  cr_assert(user_password_verify(h, "correct horse battery"));
  cr_assert_not(user_password_verify(h, "correct horse batterY"));
  cr_assert_not(user_password_needs_rehash(&p, h));
  user_pwhash_params stronger = {.opslimit = 3, .memlimit = 19456u * 1024u};
  cr_assert(user_password_needs_rehash(&stronger, h));
}

Test(user_refresh_token, is_derived_from_its_id_and_hashed_for_storage) {
  cr_assert_geq(sodium_init(), 0);
  unsigned char k1[USER_REFRESH_KEY_BYTES], k2[USER_REFRESH_KEY_BYTES];
  user_refresh_key_derive("0123456789abcdef0123456789abcdef", 32, k1);
  user_refresh_key_derive("0123456789abcdef0123456789abcdeX", 32, k2);
  const char *id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  char a[USER_REFRESH_TOKEN_MAX], b[USER_REFRESH_TOKEN_MAX], c[USER_REFRESH_TOKEN_MAX];
  user_refresh_token_make(k1, id, a);
  user_refresh_token_make(k1, id, b);
  user_refresh_token_make(k2, id, c);
  cr_assert_str_eq(a, b, "the same id and key give the same token");
  cr_assert_str_neq(a, c, "another key gives another token");
  cr_assert(user_refresh_token_shape_ok(a), "%s", a);
  cr_assert_eq(strncmp(a, "rt1.", 4), 0);
  cr_assert_not(user_refresh_token_shape_ok("rt1.nope"));
  cr_assert_not(user_refresh_token_shape_ok(""));
  unsigned char h1[USER_REFRESH_HASH_BYTES], h2[USER_REFRESH_HASH_BYTES];
  user_refresh_token_hash(a, h1);
  user_refresh_token_hash(c, h2);
  cr_assert_neq(memcmp(h1, h2, sizeof h1), 0);
}

Test(user_throttle, locks_after_max_failures_and_forgets_old_ones) {
  user_throttle t = {0};
  int64_t now = 1000000;
  for (int i = 0; i < 4; i++) user_throttle_fail(&t, now + i, 5, 300);
  cr_assert_eq(user_throttle_locked_ms(&t, now + 10), 0, "four failures do not lock");
  user_throttle_fail(&t, now + 5, 5, 300);
  cr_assert_eq(user_throttle_locked_ms(&t, now + 5), 300000);
  cr_assert_eq(user_throttle_locked_ms(&t, now + 5 + 300000), 0, "the lock ends");
  /* Failures further apart than the window never add up. */
  user_throttle u = {0};
  for (int i = 0; i < 10; i++) user_throttle_fail(&u, now + (int64_t)i * 301000, 5, 300);
  cr_assert_eq(user_throttle_locked_ms(&u, now + 9 * 301000), 0);
  cr_assert_eq(u.failures, 1);
}

Test(user_roles, map_onto_token_roles) {
  cr_assert_eq(user_role_to_auth(SHOP__USER__V1__ROLE__ROLE_ADMIN), AUTH_ROLE_ADMIN);
  cr_assert_eq(user_role_to_auth(SHOP__USER__V1__ROLE__ROLE_CUSTOMER), AUTH_ROLE_CUSTOMER);
  cr_assert_eq(user_role_to_auth(SHOP__USER__V1__ROLE__ROLE_UNSPECIFIED), AUTH_ROLE_NONE);
  cr_assert_eq(user_role_from_auth(AUTH_ROLE_ADMIN), SHOP__USER__V1__ROLE__ROLE_ADMIN);
}
