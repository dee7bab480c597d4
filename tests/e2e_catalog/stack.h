/*
 * stack: the running Shop programs that the user, product and catalog
 * end-to-end tests talk to, through the real RPC layer, Kafka and MariaDB
 * of the test profile.
 *
 * Criterion runs each test in a fresh process (it re-executes the test
 * binary), so the programs are started once per binary, in the runner:
 *
 *   ReportHook(PRE_ALL)(struct criterion_test_set *s) { stack_up(programs); }
 *   ReportHook(POST_ALL)(struct criterion_global_stats *s) { stack_down(); }
 *   TestSuite(users, .init = stack_require, .fini = stack_release);
 *
 * stack_up starts build/bin/<program> for each name with the test config
 * (SHOP_CONFIG, or config/test.yaml of the source tree), its output
 * appended to $SHOP_LOG_DIR/e2e-<program>.log, and waits until each
 * answers Health/Check with SERVING. A failure is handed to the tests in
 * the environment (SHOP_STACK_ERROR), so that stack_require fails them with
 * the reason instead of letting them time out one by one.
 *
 * The environment of `make test` (scripts/test.sh: SHOP_RUN_DIR,
 * SHOP_MYSQL_PORT, SHOP_KAFKA_BROKERS, SHOP_SECRETS_DIR) is required.
 */
#ifndef SHOP_TESTS_STACK_H
#define SHOP_TESTS_STACK_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "rpc/rpc.h"
#include "support/proc.h"

/* In the runner: starts the programs (NULL-terminated names). */
void stack_up(const char *const *programs);
/* In the runner: SIGTERMs them (checking that each exits 0) and frees. */
void stack_down(void);

/* In a test (.init): fails the test if stack_up failed. */
void stack_require(void);
/* In a test (.fini): closes the clients the test opened. */
void stack_release(void);

/* The path of build/bin/<program>, next to the test binary's folder. */
void stack_bin(char *out, size_t len, const char *program);
/* The config file the programs run with. */
const char *stack_config(void);
/* The endpoint URL of a program from the test config ("user-command" ->
 * tcp://127.0.0.1:27001). */
const char *stack_url(const char *program);

/* A client of program (opened on first use, closed by stack_release). */
rpc_client *stack_client(const char *program);

/* Starts one more instance of program listening on url, output to its
 * log; for restart tests. Fails the test on error. stack_release kills
 * what the test did not stop, so a failed test leaves no process behind. */
proc *stack_start_extra(const char *program, const char *url);
/* SIGTERMs an extra instance, waits for it and frees it; returns its exit
 * status (0 after a clean stop). */
int stack_stop_extra(proc *p);

/* A fresh idempotency key or unique name part: prefix-<pid>-<n>-<us>. */
void stack_unique(char *out, size_t len, const char *prefix);

/*
 * Calls method of the service desc on program and returns the status
 * code. token may be NULL (anonymous); key is the idempotency key (NULL:
 * none). On OK *out (if out is not NULL) owns the reply (free it with
 * protobuf_c_message_free_unpacked); st (may be NULL) gets the status.
 */
status_code stack_call(const char *program, const ProtobufCServiceDescriptor *desc,
                       const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                       const char *token, const char *key, rpc_status *st);

/* True when st carries a field violation on field. */
bool stack_has_violation(const rpc_status *st, const char *field);

/* Reads the first admin's password from $SHOP_SECRETS_DIR/admin.password. */
void stack_admin_password(char *out, size_t len);

#endif
