#include "testenv.h"

#include "support/account.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *need_env(const char *name) {
  const char *v = getenv(name);
  if (v == NULL || v[0] == '\0') {
    cr_assert_fail("%s is not set: run the integration tests through `make test` (scripts/test.sh)",
                   name);
  }
  return v;
}

db_conn *testenv_db_connect(const char *account, const char *db) {
  char password[256], err[512];
  db_params p;
  if (!support_env_db_params(&p, account, db, password, sizeof password, err, sizeof err))
    cr_assert_fail("%s", err);
  db_conn *c = NULL;
  status_code st = db_connect(&c, &p, err, sizeof err);
  if (st != STATUS_OK) cr_assert_fail("db_connect(%s): %s: %s", account, status_name(st), err);
  return c;
}

const char *testenv_kafka_brokers(void) { return need_env("SHOP_KAFKA_BROKERS"); }

void testenv_unique(char *buf, size_t len, const char *prefix) {
  static unsigned counter;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(buf, len, "%s%ld_%u_%ld", prefix, (long)getpid(), counter++, (long)(ts.tv_nsec / 1000));
}
