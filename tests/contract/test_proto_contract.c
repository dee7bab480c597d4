/* What proto/ tells a client about limits and answers, checked against the
 * code: every bound stated in a comment is formatted here from the constant
 * the validate functions use, and every refusal message a comment quotes is
 * the one the rule writes. A changed constant without its comment (or the
 * other way round) fails here. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "order/order.h"
#include "page/page.h"
#include "product/product.h"
#include "support/file.h"
#include "user/user.h"

/* The whole of proto/<rel>; the caller frees it. */
static char *proto_read(const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "%s/proto/%s", SHOP_SOURCE_DIR, rel);
  char *s = test_file_read(path, NULL);
  cr_assert_not_null(s, "%s", path);
  return s;
}

/* The comment lines ("// ...", joined with spaces, the slashes and the
 * indentation dropped) directly above the first line that holds member,
 * looked for after the line that holds scope ("message X", "rpc Y("). */
static void comment_above(const char *text, const char *scope, const char *member, char *out,
                          size_t outlen) {
  const char *s = strstr(text, scope);
  cr_assert_not_null(s, "no %s", scope);
  const char *m = strstr(s, member);
  cr_assert_not_null(m, "no %s after %s", member, scope);
  const char *line = m;
  while (line > text && line[-1] != '\n') line--;
  /* Walk up over the comment lines. */
  const char *first = line;
  while (first > text) {
    const char *prev = first - 1; /* the '\n' ending the line above */
    const char *start = prev;
    while (start > text && start[-1] != '\n') start--;
    const char *p = start;
    while (*p == ' ') p++;
    if (strncmp(p, "//", 2) != 0) break;
    first = start;
  }
  size_t o = 0;
  out[0] = '\0';
  for (const char *p = first; p < line;) {
    while (*p == ' ') p++;
    p += 2; /* "//" */
    if (*p == ' ') p++;
    const char *end = strchr(p, '\n');
    for (; p < end && o + 2 < outlen; p++) out[o++] = *p;
    if (o + 1 < outlen) out[o++] = ' ';
    p = end + 1;
  }
  out[o] = '\0';
}

/* Collapses runs of spaces, so that a phrase matches across the comment's
 * line breaks. */
static void squeeze(char *s) {
  char *w = s;
  for (char *r = s; *r != '\0'; r++)
    if (!(*r == ' ' && w > s && w[-1] == ' ')) *w++ = *r;
  *w = '\0';
}

static void expect(const char *file, const char *scope, const char *member, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void expect(const char *file, const char *scope, const char *member, const char *fmt, ...) {
  char want[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(want, sizeof want, fmt, ap);
  va_end(ap);
  char *text = proto_read(file);
  char comment[8192];
  comment_above(text, scope, member, comment, sizeof comment);
  squeeze(comment);
  cr_expect(strstr(comment, want) != NULL, "%s, %s %s: the comment does not say \"%s\": %s", file,
            scope, member, want, comment);
  free(text);
}

/* "10^17" for 100000000000000000; the constant must be a power of ten. */
static const char *pow10_text(int64_t v, char *buf, size_t len) {
  int e = 0;
  int64_t x = v;
  while (x >= 10 && x % 10 == 0) {
    x /= 10;
    e++;
  }
  cr_assert_eq(x, 1, "%" PRId64 " is not a power of ten", v);
  snprintf(buf, len, "10^%d", e);
  return buf;
}

#define P10(v) pow10_text((v), (char[24]){0}, 24)

/* "1,000,000" for 1000000. */
static const char *grouped(int64_t v, char *buf, size_t len) {
  char digits[24];
  int n = snprintf(digits, sizeof digits, "%" PRId64, v);
  size_t o = 0;
  for (int i = 0; i < n && o + 2 < len; i++) {
    if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

#define G(v) grouped((v), (char[32]){0}, 32)

Test(proto_contract, order_limits_are_the_validate_functions) {
  const char *f = "shop/order/v1/commands.proto";
  expect(f, "message CreateOrderLine", "int32 quantity", "1 to %s,", G(ORDER_QUANTITY_MAX));
  expect(f, "message CreateOrderRequest", "repeated CreateOrderLine lines", "1 to %d lines",
         ORDER_LINES_MAX);
  expect(f, "message CreateOrderRequest", "repeated CreateOrderLine lines",
         "each at most %s minor units (OUT_OF_RANGE beyond)", P10(ORDER_TOTAL_MAX));
  expect(f, "service OrderCommandService", "rpc CreateOrder(",
         "OUT_OF_RANGE a line total or "
         "the order total would be over %s minor units",
         P10(ORDER_TOTAL_MAX));
  expect(f, "message CreateOrderRequest", "string payment_token", "1 to %d printable ASCII",
         ORDER_TOKEN_MAX);
  expect(f, "message CancelOrderRequest", "string reason", "up to %d characters", ORDER_REASON_MAX);
  expect(f, "service OrderCommandService", "rpc CancelOrder(", "a reason over %d characters",
         ORDER_REASON_MAX);
  expect(f, "message ShipOrderRequest", "string carrier", "up to %d characters",
         ORDER_SHIP_TEXT_MAX);
  expect(f, "service OrderCommandService", "rpc ShipOrder(", "over %d characters",
         ORDER_SHIP_TEXT_MAX);
}

Test(proto_contract, product_limits_are_the_validate_functions) {
  const char *f = "shop/product/v1/commands.proto";
  expect(f, "message CreateProductRequest", "shop.common.v1.Money price", "1 to %s minor units",
         P10(PRODUCT_PRICE_MAX));
  expect(f, "message SetPriceRequest", "shop.common.v1.Money price", "1 to %s minor units",
         P10(PRODUCT_PRICE_MAX));
  expect(f, "message CreateProductRequest", "int64 initial_stock", "0 to %s",
         P10(PRODUCT_STOCK_MAX));
  expect(f, "message RestockRequest", "int64 quantity", "1 to %s at once",
         P10(PRODUCT_RESTOCK_MAX));
  expect(f, "message RestockRequest", "string reference", "up to %d characters",
         PRODUCT_REFERENCE_MAX);
  const char *e = "shop/product/v1/events.proto";
  expect(e, "message InventoryRule", "int64 low_stock_threshold", "0 to %s",
         P10(PRODUCT_STOCK_MAX));
  expect(e, "message InventoryRule", "int32 max_quantity_per_order", "0 to %s",
         G(PRODUCT_MAX_PER_ORDER_MAX));
  expect("shop/product/v1/queries.proto", "message ListProductsRequest", "string text",
         "up to %d characters", PRODUCT_TEXT_FILTER_MAX);
}

Test(proto_contract, user_and_page_limits_are_the_validate_functions) {
  const char *f = "shop/user/v1/commands.proto";
  expect(f, "message RegisterUserRequest", "string email", "At most %d characters", USER_EMAIL_MAX);
  expect(f, "message RegisterUserRequest", "string email", "the local part at most %d",
         USER_EMAIL_LOCAL_MAX);
  expect(f, "message RegisterUserRequest", "string password", "(%d to %d characters)",
         USER_PASSWORD_MIN, USER_PASSWORD_MAX);
  expect(f, "message RegisterUserRequest", "string name", "1 to %d characters", USER_NAME_MAX);
  expect(f, "message RegisterUserRequest", "string phone", "\"+\" and 8 to %d digits",
         USER_PHONE_MAX - 1);
  expect(f, "message AuthTokens", "string access_token", "an iat more than %d s",
         AUTH_CLOCK_SKEW_S);
  expect("shop/common/v1/common.proto", "message PageRequest", "int32 page_size",
         "0 means the default (%d); otherwise 1 to %d", PAGE_DEFAULT, PAGE_MAX);
}

/* The refusals the comments quote are the ones the rules write. */
Test(proto_contract, quoted_refusals_are_the_rules_messages) {
  const char *f = "shop/order/v1/commands.proto";
  char msg[200];
  order_saga_state s = {.status = ORDER_ST(SHIPPED)};
  cr_assert_not(order_cancel_allowed(&s, msg, sizeof msg));
  expect(f, "service OrderCommandService", "rpc CancelOrder(", "\"%s\"", msg);
  s.status = ORDER_ST(PENDING);
  cr_assert_eq(order_ship_allowed(&s, msg, sizeof msg), STATUS_FAILED_PRECONDITION);
  expect(f, "service OrderCommandService", "rpc ShipOrder(",
         "FAILED_PRECONDITION naming the "
         "state when the order is not CONFIRMED (\"%s\")",
         msg);
  s.status = ORDER_ST(CONFIRMED);
  s.payment = ORDER_PAY_AUTHORIZED;
  cr_assert_eq(order_ship_allowed(&s, msg, sizeof msg), STATUS_UNAVAILABLE);
  const char *tail = strstr(msg, "its payment");
  cr_assert_not_null(tail, "%s", msg);
  expect(f, "service OrderCommandService", "rpc ShipOrder(", "UNAVAILABLE (\"%s\"", tail);
}
