/*
 * account: a connection to a service database as the service's own account,
 * the way the services connect (password from mysql.secrets_dir), for test
 * code that must not depend on Criterion (faults-load) and for the fixtures
 * that do (stack_db).
 *
 * Not thread-safe per connection: one thread uses one db_conn.
 */
#ifndef SHOP_TESTS_ACCOUNT_H
#define SHOP_TESTS_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "db/db.h"
#include "status/status.h"

/* Connects to database account as account, with cfg's MariaDB host and
 * port, retrying for up to 10 s. On success *out owns the connection
 * (db_close); on error the reason is in errbuf. */
status_code support_db_connect(const shop_cfg *cfg, const char *account, db_conn **out,
                               char *errbuf, size_t errlen);

/* The parameters for database db as account on the test profile's
 * MariaDB, from the environment scripts/test.sh exports (SHOP_MYSQL_PORT,
 * SHOP_SECRETS_DIR; SHOP_MYSQL_HOST, default 127.0.0.1), with the timeouts
 * the tests use. The password is read into password, which *p points at
 * (it must outlive *p). False, with the reason in errbuf, when a variable
 * is missing or the password cannot be read. */
bool support_env_db_params(db_params *p, const char *account, const char *db, char *password,
                           size_t passlen, char *errbuf, size_t errlen);

#endif
