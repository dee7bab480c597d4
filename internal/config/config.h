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
#include <stdio.h>

#include "config/programs_gen.h"

typedef struct shop_cfg {
  /* The file the config was read from (NULL: none, defaults and
   * environment only), for messages that name it. Not a key. */
  char *source;
  struct {
    char *level; /* debug | info | warn | error */
  } log;
  struct {
    char *host;
    int port;
    /* A Unix socket of a MariaDB on this host: used instead of host:port
     * when set (cheaper per round trip than loopback TCP); empty: TCP. */
    char *socket;
    char *secrets_dir; /* holds one password file per account */
    char *password;    /* secret: overrides the file of the account */
    int connect_timeout_ms;
    int connect_retry_ms; /* keep retrying the first connection this long */
    int pool_size;
    /* A replica the query sides read from (app_db_read); empty: none, the
     * query sides read from host:port like everything else. read_port 0:
     * port. Writes, migrations and the projections stay on host:port. */
    char *read_host;
    int read_port;
  } mysql;
  struct {
    char *brokers;
    int session_timeout_ms;
    int heartbeat_ms;
    int max_retries;            /* handler attempts before dead-lettering */
    int retry_backoff_ms;       /* first backoff; doubles up to 10x */
    int batch_size;             /* events per consumer transaction at most */
    int fetch_wait_max_ms;      /* a fetch waits this long at the broker for ... */
    int fetch_min_bytes;        /* ... this many bytes of records */
    int batch_linger_ms;        /* a consumer batch waits this long for more records */
    int statistics_interval_ms; /* librdkafka statistics (requests sent); 0: off */
    int outbox_retention_s;
    int processed_retention_s;
  } kafka;
  /* The programs' keys come from internal/config/programs.list (through
   * config/programs_gen.h): one endpoints.<key> per program that serves
   * RPC, one admin.<key> per program. */
  struct {
    /* An endpoint left empty is tcp://host:port_base + the program's place
     * among the endpoints of programs.list (user_command +0 .. audit_query
     * +6). */
    char *host;
    int port_base;
#define X(key, name, service) char *key;
    SHOP_ENDPOINT_LIST(X)
#undef X
  } endpoints;
  struct {
    /* Each program's admin HTTP port (/metrics, /livez, /readyz), on host.
     * 0: an ephemeral port (logged); -1 (the default): port_base + the
     * program's place in programs.list. A program started with --listen
     * takes an ephemeral one unless --admin-port says otherwise. */
    char *host;
    int port_base;
#define X(key, name, endpoint, service) int key;
    SHOP_PROGRAM_LIST(X)
#undef X
  } admin;
  struct {
    /* shop-gateway's HTTP/JSON listener (internal/gateway). */
    char *host;
    int port;                 /* 0: an ephemeral port (logged) */
    int max_body_bytes;       /* larger request bodies are 413 */
    int max_connections;      /* past it a new connection gets 503 and is closed */
    int connection_timeout_s; /* an idle or stalled connection is closed after it */
  } gateway;
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
    /* How long order-command keeps a product's answer at most (0: it asks
     * product-query for every order); a product event ends it sooner. */
    int catalog_cache_ms;
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
    char *smtp_url;           /* "smtp://host:port"; "smtps://" for implicit TLS */
    char *smtp_from;          /* envelope and header sender */
    char *smtp_tls;           /* none | starttls | tls */
    char *sms_url;            /* SMS webhook (JSON POST); "" disables it */
    char *push_url;           /* push webhook (JSON POST); "" disables it */
    int retry_backoff_ms;     /* a waiting message's first retry delay; doubles per retry */
    int retry_backoff_max_ms; /* ... up to this cap */
    int give_up_s;            /* a message waiting this long is given up (failed) */
    int timeout_ms;           /* per send */
    char *admin_email;        /* where InventoryLow goes */
    char *mail_dir;           /* make run's mail catcher keeps what it gets here */
  } notify;
} shop_cfg;

/* Loads defaults, then path (may be NULL: defaults and environment only),
 * then the environment. On success *out owns a config to free with
 * config_free(). On error returns -1 with "file:line: path: why" in errbuf. */
int config_load(shop_cfg **out, const char *path, char *errbuf, size_t errlen);

/* Frees a config; NULL is fine. */
void config_free(shop_cfg *cfg);

/* The config file a program reads, the same way for every program: argv
 * "--config PATH" if present, else $SHOP_CONFIG (when not empty), else
 * config/shop.yaml when the current folder holds one (a checkout after
 * `make run`), else NULL (defaults and environment only). */
const char *config_path_find(int argc, char **argv);

/* Where the config came from, for messages: its file, or "no config file
 * (give --config PATH or $SHOP_CONFIG)". */
const char *config_source_text(const shop_cfg *cfg);

/* Writes the effective config as YAML to buf, secrets masked as "***".
 * Returns the length that was needed (as snprintf does). */
size_t config_dump(const shop_cfg *cfg, char *buf, size_t len);

/* --print-config [KEY], shared by every program: writes the effective
 * config (after the environment overrides, secrets masked) to f as YAML,
 * or, with key ("admin.port_base"), that key's value alone on one line, so
 * that scripts read a value instead of parsing YAML. Returns 0, or 2 (an
 * unknown key, said on stderr). */
int config_print(const shop_cfg *cfg, const char *key, FILE *f);

/* Finds "--print-config [KEY]" in argv: true when present, with *key the
 * KEY (NULL when none follows or the next argument is an option). */
bool config_print_arg(int argc, char **argv, const char **key);

/* ---- the programs (programs.list; programs.c) ------------------------------ */

typedef struct config_program {
  const char *name;     /* "order-command": cmd/<name>, logs, admin.<key> */
  const char *key;      /* "order_command": admin.<key> */
  const char *endpoint; /* endpoints.<endpoint>; NULL: serves no RPC */
  const char *service;  /* the service it serves there; NULL: none */
} config_program;

/* Every program, in the list's order; *n gets the count. */
const config_program *config_programs(size_t *n);
/* The program of that name, or NULL. */
const config_program *config_program_find(const char *name);
/* The program's endpoint URL in cfg (borrowed), or NULL when it serves no
 * RPC. */
const char *config_program_endpoint(const shop_cfg *cfg, const config_program *p);
/* The program's admin HTTP port in cfg. */
int config_program_admin_port(const shop_cfg *cfg, const config_program *p);
/* The endpoint of the program that serves service (a full name,
 * "shop.order.v1.OrderQueryService"), borrowed; NULL when none does. */
const char *config_service_endpoint(const shop_cfg *cfg, const char *service);

#endif
