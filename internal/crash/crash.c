#include "crash/crash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The parsed SHOP_CRASH_AT: written once under pthread_once, read-only after. */
typedef struct crash_spec {
  bool armed;
  char name[96];
  long nth;
} crash_spec;

static crash_spec crash_spec_;
static pthread_once_t crash_once_ = PTHREAD_ONCE_INIT;
static atomic_long crash_passes_;

static void crash_parse_(void) {
  const char *v = getenv("SHOP_CRASH_AT");
  if (v == NULL || v[0] == '\0') return;
  const char *colon = strrchr(v, ':');
  size_t len = colon != NULL ? (size_t)(colon - v) : strlen(v);
  long nth = 1;
  if (colon != NULL) {
    char *end;
    nth = strtol(colon + 1, &end, 10);
    if (*end != '\0' || nth < 1) {
      fprintf(stderr, "crash: ignoring SHOP_CRASH_AT=%s (want <name>:<n>, n >= 1)\n", v);
      return;
    }
  }
  if (len == 0 || len >= sizeof crash_spec_.name) {
    fprintf(stderr, "crash: ignoring SHOP_CRASH_AT=%s (bad name)\n", v);
    return;
  }
  memcpy(crash_spec_.name, v, len);
  crash_spec_.name[len] = '\0';
  crash_spec_.nth = nth;
  crash_spec_.armed = true;
}

bool crash_armed(const char *name) {
  pthread_once(&crash_once_, crash_parse_);
  return crash_spec_.armed && strcmp(crash_spec_.name, name) == 0;
}

bool crash_fault(const char *name) {
  if (!crash_armed(name)) return false;
  return atomic_fetch_add(&crash_passes_, 1) + 1 == crash_spec_.nth;
}

void crash_point(const char *name) {
  if (!crash_armed(name)) return;
  long pass = atomic_fetch_add(&crash_passes_, 1) + 1;
  if (pass != crash_spec_.nth) return;
  /* write(2), not stdio: nothing buffered, nothing flushed, as in a kill. */
  char line[160];
  int n = snprintf(line, sizeof line, "crash: SHOP_CRASH_AT reached %s (pass %ld), aborting\n",
                   name, pass);
  if (n > 0) {
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line);
    (void)ignored;
  }
  abort();
}
