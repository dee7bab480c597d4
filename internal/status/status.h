/*
 * status: the one status enum of Shop.
 *
 * The codes are the gRPC canonical codes, with the same numbers, so a status
 * crosses the RPC boundary unchanged. STATUS_MAP is the single list; names,
 * numbers and texts cannot drift apart.
 *
 * Thread-safe: every function here is pure.
 */
#ifndef SHOP_STATUS_H
#define SHOP_STATUS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* X(NAME, number, default text) */
#define STATUS_MAP(X)                                                                              \
  X(OK, 0, "ok")                                                                                   \
  X(CANCELLED, 1, "the operation was cancelled")                                                   \
  X(UNKNOWN, 2, "unknown error")                                                                   \
  X(INVALID_ARGUMENT, 3, "invalid argument")                                                       \
  X(DEADLINE_EXCEEDED, 4, "deadline exceeded")                                                     \
  X(NOT_FOUND, 5, "not found")                                                                     \
  X(ALREADY_EXISTS, 6, "already exists")                                                           \
  X(PERMISSION_DENIED, 7, "permission denied")                                                     \
  X(RESOURCE_EXHAUSTED, 8, "resource exhausted")                                                   \
  X(FAILED_PRECONDITION, 9, "failed precondition")                                                 \
  X(ABORTED, 10, "aborted")                                                                        \
  X(OUT_OF_RANGE, 11, "out of range")                                                              \
  X(UNIMPLEMENTED, 12, "unimplemented")                                                            \
  X(INTERNAL, 13, "internal error")                                                                \
  X(UNAVAILABLE, 14, "unavailable")                                                                \
  X(DATA_LOSS, 15, "data loss")                                                                    \
  X(UNAUTHENTICATED, 16, "unauthenticated")

typedef enum status_code {
#define STATUS_ENUM_(name, num, text) STATUS_##name = num,
  STATUS_MAP(STATUS_ENUM_)
#undef STATUS_ENUM_
} status_code;

/* The canonical upper-case name ("INVALID_ARGUMENT"); "UNKNOWN" for a number
 * outside the map. */
const char *status_name(int code);

/* A short lower-case text for the code. */
const char *status_text(int code);

/* True for 0..16. */
bool status_is_valid(int code);

/* Parses a canonical name (case-insensitive). Returns true on success. */
bool status_from_name(const char *name, status_code *out);

/* Process exit code for a status, as shopctl uses it: 0 for OK, else the code
 * number itself (1..16). */
int status_exit_code(int code);

/* ---- errbuf/errlen (docs/CONVENTIONS.md) ------------------------------------ */

/* The size of a caller's buffer for an error's detail: every
 * `char err[STATUS_ERRBUF_SIZE]` holds what a callee and the layers it
 * prefixes write ("set-up: auth: ... (auth.jwt_key of config/shop.yaml)"). */
#define STATUS_ERRBUF_SIZE 512

/* Writes the formatted detail into the caller's buffer (errbuf, errlen),
 * cut to fit and always NUL-terminated; nothing when errbuf is NULL or
 * errlen is 0. The one helper behind every "char *errbuf, size_t errlen"
 * parameter. Thread-safe. */
void status_seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void status_vseterr(char *errbuf, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
