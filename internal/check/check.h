/*
 * check: the pure checks of a request or an event at the boundary, before
 * any database work: text (UTF-8, length in characters, control
 * characters), ids, a message's string field by name, and the list of field
 * violations a check collects. No I/O, no rpc, no database: the domains'
 * *_validate_* functions use it and are tested and fuzzed on their own
 * (handler.h puts a list on a call).
 *
 * Thread-safety: every function may be called from any thread
 * (check_text's message for a length is thread-local).
 */
#ifndef SHOP_CHECK_H
#define SHOP_CHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

/* Allow line breaks and tabs (descriptions); otherwise every control
 * character is refused. */
#define CHECK_TEXT_MULTILINE 1u

/* Checks that s is valid UTF-8 of min_chars..max_chars characters (code
 * points) without control characters (see flags). Returns NULL when it is
 * fine, else a description for a field violation ("must not be empty",
 * "must be at most 200 characters", ...). */
const char *check_text(const char *s, size_t min_chars, size_t max_chars, unsigned flags);

/* Number of code points of a valid UTF-8 string; -1 when it is not valid
 * UTF-8 (overlong forms, surrogates and values past U+10FFFF included). */
long check_utf8_chars(const char *s);

/* The length in bytes of s's first max_chars characters (as SQL's LEFT(s,
 * max_chars) keeps them); at an invalid byte, the length before it. */
size_t check_utf8_prefix(const char *s, size_t max_chars);

/* The field violations a pure check collects. n counts every violation
 * found; the first CHECK_MAX_VIOLATIONS are kept (a call keeps no more:
 * RPC_MAX_VIOLATIONS). */
#define CHECK_MAX_VIOLATIONS 8
typedef struct check_violations {
  size_t n;
  struct {
    char field[64];
    const char *why; /* static text */
  } v[CHECK_MAX_VIOLATIONS];
} check_violations;

/* Adds a violation for field when why is not NULL. */
void check_violation_add(check_violations *l, const char *field, const char *why);

/* A canonical lower-case UUID ("0190c3c2-7e4a-7b3c-8f00-1234567890ab"), as
 * events_uuid_v7 makes them. */
bool check_id(const char *s);
#define CHECK_ID_SIZE 37

/* The value of m's string field named field; NULL when m has no such
 * field (or it is not a string). For event checks ("every product event's
 * first field is the product id"). */
const char *check_message_string(const ProtobufCMessage *m, const char *field);

#endif
