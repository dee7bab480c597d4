/*
 * account: a connection to a service database as the service's own account,
 * the way the services connect (password from mysql.secrets_dir), for test
 * code that must not depend on Criterion (faults-load) and for the fixtures
 * that do (ostack_db).
 *
 * Not thread-safe per connection: one thread uses one db_conn.
 */
#ifndef SHOP_TESTS_ACCOUNT_H
#define SHOP_TESTS_ACCOUNT_H

#include <stddef.h>

#include "config/config.h"
#include "db/db.h"
#include "status/status.h"

/* Connects to database account as account, with cfg's MariaDB host and
 * port, retrying for up to 10 s. On success *out owns the connection
 * (db_close); on error the reason is in errbuf. */
status_code support_db_connect(const shop_cfg *cfg, const char *account, db_conn **out,
                               char *errbuf, size_t errlen);

#endif
