#include "status/status.h"

#include <stddef.h>
#include <stdio.h>
#include <strings.h>

static const struct {
  const char *name;
  const char *text;
} status_table[] = {
#define STATUS_ROW_(name, num, text) [num] = {#name, text},
    STATUS_MAP(STATUS_ROW_)
#undef STATUS_ROW_
};

#define STATUS_COUNT (sizeof status_table / sizeof status_table[0])

bool status_is_valid(int code) { return code >= 0 && (size_t)code < STATUS_COUNT; }

const char *status_name(int code) {
  return status_is_valid(code) ? status_table[code].name : "UNKNOWN";
}

const char *status_text(int code) {
  return status_is_valid(code) ? status_table[code].text : "unknown error";
}

bool status_from_name(const char *name, status_code *out) {
  if (name == NULL) return false;
  for (size_t i = 0; i < STATUS_COUNT; i++) {
    if (strcasecmp(name, status_table[i].name) == 0) {
      *out = (status_code)i;
      return true;
    }
  }
  return false;
}

int status_exit_code(int code) { return status_is_valid(code) ? code : STATUS_UNKNOWN; }

void status_vseterr(char *errbuf, size_t errlen, const char *fmt, va_list ap) {
  if (errbuf == NULL || errlen == 0) return;
  vsnprintf(errbuf, errlen, fmt, ap);
}

void status_seterr(char *errbuf, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  status_vseterr(errbuf, errlen, fmt, ap);
  va_end(ap);
}
