#include "money/money.h"

#include <stddef.h>

static int upper(char c) { return c >= 'A' && c <= 'Z'; }

const char *money_currency_check(const char *code) {
  if (code == NULL || code[0] == '\0') return "must not be empty";
  if (!upper(code[0]) || !upper(code[1]) || !upper(code[2]) || code[3] != '\0')
    return "must be an ISO 4217 code of three upper-case letters";
  return NULL;
}
