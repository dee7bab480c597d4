/*
 * testenv: what an integration test needs to reach the test profile's
 * MariaDB and Kafka, from the environment that scripts/test.sh exports
 * (SHOP_MYSQL_PORT, SHOP_SECRETS_DIR, SHOP_KAFKA_BROKERS).
 *
 * A missing variable fails the test with a message saying to run it through
 * `make test`: integration tests never skip silently.
 */
#ifndef SHOP_TESTENV_H
#define SHOP_TESTENV_H

#include "db/db.h"

/* Connects to database db as account (the password is read from the
 * secrets folder). Fails the current test on error. */
db_conn *testenv_db_connect(const char *account, const char *db);

/* "127.0.0.1:<port>" of the test broker. Fails the current test if unset. */
const char *testenv_kafka_brokers(void);

/* A fresh name for test objects: prefix + pid + counter + time. */
void testenv_unique(char *buf, size_t len, const char *prefix);

#endif
