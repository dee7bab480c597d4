/* Service-account database connections for tests. See account.h. */
#include "support/account.h"

#include <stdio.h>
#include <stdlib.h>

status_code support_db_connect(const shop_cfg *cfg, const char *account, db_conn **out,
                               char *errbuf, size_t errlen) {
  char password[256];
  *out = NULL;
  if (!db_password_from_dir(cfg->mysql.secrets_dir, account, password, sizeof password, errbuf,
                            errlen))
    return STATUS_FAILED_PRECONDITION;
  db_params p = {.host = cfg->mysql.host,
                 .port = cfg->mysql.port,
                 .socket = cfg->mysql.socket,
                 .user = account,
                 .password = password,
                 .database = account,
                 .connect_timeout_ms = 5000,
                 .connect_retry_ms = 10000};
  return db_connect(out, &p, errbuf, errlen);
}

bool support_env_db_params(db_params *p, const char *account, const char *db, char *password,
                           size_t passlen, char *errbuf, size_t errlen) {
  const char *port = getenv("SHOP_MYSQL_PORT"), *secrets = getenv("SHOP_SECRETS_DIR");
  const char *host = getenv("SHOP_MYSQL_HOST");
  if (port == NULL || port[0] == '\0' || secrets == NULL || secrets[0] == '\0') {
    snprintf(errbuf, errlen,
             "SHOP_MYSQL_PORT and SHOP_SECRETS_DIR are not set: run the tests through `make "
             "test` (scripts/test.sh)");
    return false;
  }
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/mysql", secrets);
  if (!db_password_from_dir(dir, account, password, passlen, errbuf, errlen)) return false;
  *p = (db_params){.host = host != NULL && host[0] != '\0' ? host : "127.0.0.1",
                   .port = atoi(port),
                   .user = account,
                   .password = password,
                   .database = db,
                   .connect_timeout_ms = 5000,
                   .connect_retry_ms = 10000};
  return true;
}
