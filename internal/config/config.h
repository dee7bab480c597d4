/*
 * config: Shop's configuration, read once at start-up.
 *
 * Every key is declared once, in the table in config.c, with its type,
 * bounds and default (redis's config table is the model). Loading:
 *   1. defaults from the table;
 *   2. the YAML file (two levels: "section: {key: value}"); an unknown key, a
 *      wrong type or a value out of bounds fails with "file:line: path: why";
 *      "${VAR}" and "${VAR:-default}" in string values expand from the
 *      environment;
 *   3. environment overrides: SHOP_<SECTION>__<KEY> (upper case, e.g.
 *      SHOP_MYSQL__PORT=23306); an unknown SHOP_X__Y variable is an error;
 *   4. secrets: a key marked secret may instead be given as <key>_file (in
 *      YAML or the environment), naming a file whose contents (trailing
 *      newline stripped) are the value. Secrets never appear in the repo.
 *
 * The loaded config is read-only and may be shared by every thread.
 */
#ifndef SHOP_CONFIG_H
#define SHOP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct shop_cfg {
  struct {
    char *level; /* debug | info | warn | error */
  } log;
  struct {
    char *host;
    int port;
    char *secrets_dir; /* holds one password file per account */
    char *password;    /* secret: overrides the file of the account */
    int connect_timeout_ms;
    int connect_retry_ms; /* keep retrying the first connection this long */
    int pool_size;
  } mysql;
  struct {
    char *brokers;
    int session_timeout_ms;
    int heartbeat_ms;
    int max_retries;       /* handler attempts before dead-lettering */
    int retry_backoff_ms;  /* first backoff; doubles up to 10x */
    int batch_size;        /* events per consumer transaction at most */
    int fetch_wait_max_ms; /* a fetch waits this long at the broker for ... */
    int fetch_min_bytes;   /* ... this many bytes of records */
    int outbox_retention_s;
    int processed_retention_s;
  } kafka;
  struct {
    char *user_command;
    char *user_query;
    char *product_command;
    char *product_query;
    char *order_command;
    char *order_query;
    char *audit_query;
  } endpoints;
  struct {
    /* Each program's admin HTTP port (/metrics, /livez, /readyz), on host.
     * 0: an ephemeral port (logged). A program started with --listen
     * takes an ephemeral one unless --admin-port says otherwise. */
    char *host;
    int user_command;
    int user_query;
    int product_command;
    int product_query;
    int order_command;
    int order_query;
    int inventory_worker;
    int payment_worker;
    int notification_worker;
    int audit_worker;
  } admin;
  struct {
    int workers;           /* server handler threads */
    int queue_size;        /* calls waiting for a worker before RESOURCE_EXHAUSTED */
    int max_message_bytes; /* largest request or response frame */
    int default_timeout_ms;
    int max_timeout_ms;
    int drain_grace_ms;
    int retry_max; /* client retries on UNAVAILABLE */
    int retry_backoff_ms;
    int idempotency_retention_s;
  } rpc;
  struct {
    char *jwt_key; /* secret: HS256 key, at least 32 bytes */
    char *issuer;
    int access_ttl_s;
    int refresh_ttl_s;
    /* The first admin, created at start-up by user-command when
     * admin_email is not empty (an existing account is left as it is). */
    char *admin_email;
    char *admin_password; /* secret */
    char *admin_name;
    /* Login throttle: this many failed logins in a row lock the account's
     * logins for login_lockout_s (failures older than that are forgotten). */
    int login_max_failures;
    int login_lockout_s;
    /* argon2id cost (libsodium crypto_pwhash_str). The defaults are OWASP's
     * minimum (m = 19 MiB, t = 2, p = 1); only tests lower them. */
    int password_opslimit;
    int password_memlimit_kib;
  } auth;
  struct {
    char *currency; /* ISO 4217 code of every price in the shop */
  } catalog;
  struct {
    int deadline_s;        /* a PENDING order is cancelled this long after creation */
    int sweep_interval_ms; /* how often the deadline sweeper looks */
  } order;
  struct {
    /* An order naming a product the worker has not heard of waits this
     * long for its ProductCreated before it is rejected. */
    int unknown_product_wait_ms;
  } inventory;
  struct {
    /* The simulated card processor (internal/payment/payment.h). */
    int latency_ms;       /* added to every gateway operation */
    int failure_permille; /* random transient failures, per 1000 operations */
    int amount_limit;     /* largest authorization, minor units */
    char *currencies;     /* comma-separated ISO codes it takes */
    char *state_dir;      /* its idempotency records and ledger */
    int retry_max;        /* worker retries of a transient gateway failure */
    int retry_backoff_ms; /* first backoff; doubles per retry */
  } payment;
  struct {
    /* notification-worker's channels (internal/notification/notification.h). */
    char *smtp_url;       /* "smtp://host:port"; "smtps://" for implicit TLS */
    char *smtp_from;      /* envelope and header sender */
    char *smtp_tls;       /* none | starttls | tls */
    char *sms_url;        /* SMS webhook (JSON POST); "" disables it */
    char *push_url;       /* push webhook (JSON POST); "" disables it */
    int retry_max;        /* retries of a transient failure within one try */
    int retry_backoff_ms; /* first backoff; doubles per retry */
    int timeout_ms;       /* per send */
    char *admin_email;    /* where InventoryLow goes */
  } notify;
} shop_cfg;

/* Loads defaults, then path (may be NULL: defaults and environment only),
 * then the environment. On success *out owns a config to free with
 * config_free(). On error returns -1 with "file:line: path: why" in errbuf. */
int config_load(shop_cfg **out, const char *path, char *errbuf, size_t errlen);

/* Frees a config; NULL is fine. */
void config_free(shop_cfg *cfg);

/* The config file to use: argv "--config PATH" if present, else $SHOP_CONFIG,
 * else NULL. */
const char *config_path_from_args(int argc, char **argv);

/* Writes the effective config as YAML to buf, secrets masked as "***".
 * Returns the length that was needed (as snprintf does). */
size_t config_dump(const shop_cfg *cfg, char *buf, size_t len);

#endif
