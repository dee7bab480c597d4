/* Page sizes, page tokens and one page of a list. See page.h. */
#include "page/page.h"

#include "handler/handler.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

bool page_list(rpc_call *call, db_pool *pool, const char *count_sql, const db_value *count_params,
               size_t ncount, const char *page_sql, const db_value *page_params, size_t npage,
               const char *what, int64_t *total, db_rows **rows) {
  char err[512];
  db_conn *c = NULL;
  *total = 0;
  *rows = NULL;
  if (!handler_db_get(call, pool, &c)) return false;
  status_code st = db_query_i64(c, count_sql, count_params, ncount, total, err, sizeof err);
  if (st == STATUS_OK) st = db_query(c, page_sql, page_params, npage, rows, err, sizeof err);
  db_pool_put(pool, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, what, err);
    return false;
  }
  return true;
}

bool page_size(rpc_call *call, const Shop__Common__V1__PageRequest *page, int *size) {
  int32_t s = page != NULL ? page->page_size : 0;
  if (s == 0) {
    *size = PAGE_DEFAULT;
    return true;
  }
  if (s < 1 || s > PAGE_MAX) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid page size");
    rpc_call_add_field_violation(call, "page.page_size", "must be 0 (default %d) or 1 to %d",
                                 PAGE_DEFAULT, PAGE_MAX);
    return false;
  }
  *size = s;
  return true;
}

#define PAGE_DIGEST_BYTES 8

static void filters_digest(const char *filters, unsigned char out[PAGE_DIGEST_BYTES]) {
  crypto_generichash(out, PAGE_DIGEST_BYTES, (const unsigned char *)filters, strlen(filters), NULL,
                     0);
}

/* Binary form: digest, then per field a 2-byte big-endian length and the
 * bytes. */
void page_token_encode(char out[PAGE_TOKEN_MAX], const char *filters, const page_pos *pos) {
  unsigned char raw[PAGE_DIGEST_BYTES + PAGE_FIELDS_MAX * (2 + PAGE_FIELD_MAX)];
  size_t n = 0;
  filters_digest(filters, raw);
  n = PAGE_DIGEST_BYTES;
  for (size_t i = 0; i < pos->n && i < PAGE_FIELDS_MAX; i++) {
    size_t len = strnlen(pos->field[i], PAGE_FIELD_MAX - 1);
    raw[n++] = (unsigned char)(len >> 8);
    raw[n++] = (unsigned char)(len & 0xff);
    memcpy(raw + n, pos->field[i], len);
    n += len;
  }
  size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  if (need > PAGE_TOKEN_MAX) {
    /* Cannot happen: 8 + 4 * 1025 bytes encode to 5478 characters. Keep
     * the token empty rather than truncated. */
    out[0] = '\0';
    return;
  }
  sodium_bin2base64(out, PAGE_TOKEN_MAX, raw, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static bool bad_token(rpc_call *call, const char *why) {
  rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid page token");
  rpc_call_add_field_violation(call, "page.page_token", "%s", why);
  return false;
}

bool page_token_decode(rpc_call *call, const char *token, const char *filters, page_pos *pos) {
  memset(pos, 0, sizeof *pos);
  if (token == NULL || token[0] == '\0') return true;
  if (strlen(token) >= PAGE_TOKEN_MAX) return bad_token(call, "not a page token");
  unsigned char raw[PAGE_TOKEN_MAX];
  size_t n = 0;
  if (sodium_base642bin(raw, sizeof raw, token, strlen(token), NULL, &n, NULL,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      n < PAGE_DIGEST_BYTES)
    return bad_token(call, "not a page token");
  unsigned char want[PAGE_DIGEST_BYTES];
  filters_digest(filters, want);
  if (memcmp(raw, want, PAGE_DIGEST_BYTES) != 0)
    return bad_token(call, "was issued for other filters or another sort order");
  size_t i = PAGE_DIGEST_BYTES;
  while (i < n) {
    if (pos->n >= PAGE_FIELDS_MAX || i + 2 > n) return bad_token(call, "not a page token");
    size_t len = ((size_t)raw[i] << 8) | raw[i + 1];
    i += 2;
    if (len >= PAGE_FIELD_MAX || i + len > n) return bad_token(call, "not a page token");
    memcpy(pos->field[pos->n], raw + i, len);
    pos->field[pos->n][len] = '\0';
    pos->n++;
    i += len;
  }
  return true;
}
