/* Checks at the boundary. See check.h. */
#include "check/check.h"

#include <stdio.h>
#include <string.h>

/* Decodes one code point at s; returns its length, 0 when malformed. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  uint32_t v, min;
  if ((c & 0xe0) == 0xc0) {
    n = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

long check_utf8_chars(const char *s) {
  long count = 0;
  const unsigned char *p = (const unsigned char *)s;
  while (*p != '\0') {
    uint32_t cp;
    size_t n = utf8_next(p, &cp);
    if (n == 0) return -1;
    p += n;
    count++;
  }
  return count;
}

size_t check_utf8_prefix(const char *s, size_t max_chars) {
  const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
  size_t bytes = 0;
  for (size_t chars = 0; chars < max_chars && p[bytes] != '\0'; chars++) {
    uint32_t cp;
    size_t n = utf8_next(p + bytes, &cp);
    if (n == 0) break;
    bytes += n;
  }
  return bytes;
}

const char *check_text(const char *s, size_t min_chars, size_t max_chars, unsigned flags) {
  static _Thread_local char why[96];
  if (s == NULL) s = "";
  size_t count = 0;
  const unsigned char *p = (const unsigned char *)s;
  while (*p != '\0') {
    uint32_t cp;
    size_t n = utf8_next(p, &cp);
    if (n == 0) return "must be valid UTF-8";
    bool line = cp == '\n' || cp == '\r' || cp == '\t';
    if ((cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) &&
        !(line && (flags & CHECK_TEXT_MULTILINE)))
      return "must not contain control characters";
    p += n;
    count++;
  }
  if (count == 0 && min_chars > 0) return "must not be empty";
  if (count < min_chars) {
    snprintf(why, sizeof why, "must be at least %zu characters", min_chars);
    return why;
  }
  if (count > max_chars) {
    snprintf(why, sizeof why, "must be at most %zu characters", max_chars);
    return why;
  }
  return NULL;
}

void check_violation_add(check_violations *l, const char *field, const char *why) {
  if (why == NULL) return;
  if (l->n < CHECK_MAX_VIOLATIONS) {
    snprintf(l->v[l->n].field, sizeof l->v[l->n].field, "%s", field);
    l->v[l->n].why = why;
  }
  l->n++;
}

const char *check_message_string(const ProtobufCMessage *m, const char *field) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
  if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
    return NULL;
  return *(const char *const *)((const char *)m + f->offset);
}

bool check_id(const char *s) {
  if (s == NULL || strlen(s) != 36) return false;
  for (int i = 0; i < 36; i++) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}
