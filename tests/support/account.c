/* Service-account database connections for tests. See account.h. */
#include "support/account.h"

status_code support_db_connect(const shop_cfg *cfg, const char *account, db_conn **out,
                               char *errbuf, size_t errlen) {
  char password[256];
  *out = NULL;
  if (!db_password_from_dir(cfg->mysql.secrets_dir, account, password, sizeof password, errbuf,
                            errlen))
    return STATUS_FAILED_PRECONDITION;
  db_params p = {.host = cfg->mysql.host,
                 .port = cfg->mysql.port,
                 .user = account,
                 .password = password,
                 .database = account,
                 .connect_timeout_ms = 5000,
                 .connect_retry_ms = 10000};
  return db_connect(out, &p, errbuf, errlen);
}
