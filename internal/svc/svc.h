/*
 * svc: what the domain services (user, product, and the ones after them)
 * share between their handlers, so that each domain keeps only its rules:
 *
 *   - text checks at the boundary (UTF-8, length in characters, control
 *     characters) and the id format;
 *   - the command transaction: idempotency record, state change, outbox
 *     rows and reply in one MariaDB transaction, retried on deadlock or a
 *     lost link (svc_command_run);
 *   - appending a domain event to the outbox with its CloudEvents
 *     attributes taken from the call (svc_event_append);
 *   - read-your-writes on the query side: waiting until a projection has
 *     reached the version a consistency token names (svc_consistency_wait);
 *   - page sizes and opaque page tokens bound to the filters they were
 *     issued for.
 *
 * Nothing here includes nng.h, rdkafka.h or mysql.h; it speaks through
 * rpc.h, db.h and events/outbox.h.
 *
 * Thread-safety: every function may be called from any thread; an
 * svc_notifier is shared by the threads of one process.
 */
#ifndef SHOP_SVC_H
#define SHOP_SVC_H

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "rpc/rpc.h"
#include "shop/common/v1/common.pb-c.h"
#include "status/status.h"

/* ---- Text and ids ------------------------------------------------------------ */

/* Allow line breaks and tabs (descriptions); otherwise every control
 * character is refused. */
#define SVC_TEXT_MULTILINE 1u

/* Checks that s is valid UTF-8 of min_chars..max_chars characters (code
 * points) without control characters (see flags). Returns NULL when it is
 * fine, else a description for a field violation ("must not be empty",
 * "must be at most 200 characters", ...). */
const char *svc_text_check(const char *s, size_t min_chars, size_t max_chars, unsigned flags);

/* Number of code points of a valid UTF-8 string; -1 when it is not valid
 * UTF-8 (overlong forms, surrogates and values past U+10FFFF included). */
long svc_utf8_chars(const char *s);

/* Adds a field violation for field when why is not NULL; the first one
 * also sets INVALID_ARGUMENT ("invalid <field>: <why>") on the call.
 * *count counts the violations added. */
void svc_violation(rpc_call *call, int *count, const char *field, const char *why);

/* The field violations a pure request check collects (the domains'
 * *_validate_* functions), without a call, so that they can be tested and
 * fuzzed on their own. n counts every violation found; the first
 * RPC_MAX_VIOLATIONS are kept (the call keeps no more). */
typedef struct svc_vlist {
  size_t n;
  struct {
    char field[64];
    const char *why; /* static text */
  } v[RPC_MAX_VIOLATIONS];
} svc_vlist;

/* Adds a violation for field when why is not NULL (as svc_violation). */
void svc_vlist_add(svc_vlist *l, const char *field, const char *why);

/* Puts l's violations on the call as svc_violation would have (the first
 * sets INVALID_ARGUMENT); returns l->n, so a handler does
 * `if (svc_vlist_apply(call, &l) > 0) return;`. */
size_t svc_vlist_apply(rpc_call *call, const svc_vlist *l);

/* A canonical lower-case UUID ("0190c3c2-7e4a-7b3c-8f00-1234567890ab"), as
 * events_uuid_v7 makes them. */
bool svc_id_valid(const char *s);
#define SVC_ID_SIZE 37

/* The value of m's string field named field; NULL when m has no such
 * field (or it is not a string). For event checks ("every product event's
 * first field is the product id"). */
const char *svc_message_string(const ProtobufCMessage *m, const char *field);

/* ---- Times and patterns ------------------------------------------------------------ */

/* Wall-clock time in Unix milliseconds (what the tables store). */
int64_t svc_now_ms(void);

/* Sets a Timestamp from Unix milliseconds. */
void svc_timestamp_set(Shop__Common__V1__Timestamp *t, int64_t ms);

/* The event's time (ce_time) in Unix milliseconds; 0 when it has none. */
int64_t svc_event_time_ms(const events_envelope *ev);

/* Writes the LIKE pattern "%text%" with '!' as the escape character (use
 * "LIKE ? ESCAPE '!'"), so '%' and '_' in text match themselves. out must
 * hold 2 * strlen(text) + 3 bytes; longer text is cut. */
void svc_like_pattern(const char *text, char *out, size_t len);

/* ---- Commands ---------------------------------------------------------------- */

/* The business outcome of a command, decided inside its transaction. */
typedef struct svc_outcome {
  status_code code;       /* OK: the reply is filled */
  char message[256];      /* for the caller; never a secret */
  char field[64];         /* a field violation's field, or "" */
  char description[160];  /* and its description */
  int64_t retry_delay_ms; /* RetryInfo, or -1 */
} svc_outcome;

/* Sets a non-OK outcome; field may be NULL. printf-style message. */
void svc_fail(svc_outcome *out, status_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The body of a command, run inside the transaction on tx. It returns the
 * database's status (ABORTED and UNAVAILABLE make the runner start the
 * whole transaction again: keep no state across attempts outside arg's
 * reply) and puts the business outcome in *out (zeroed with code OK
 * before each attempt). */
typedef status_code (*svc_apply_fn)(db_conn *tx, void *arg, svc_outcome *out, char *errbuf,
                                    size_t errlen);

typedef struct svc_command {
  rpc_call *call;
  db_pool *db;
  outbox_relay *relay; /* nudged after a commit; may be NULL */
  svc_apply_fn apply;
  void *arg;
  /* The reply apply fills on an OK outcome; recorded for idempotency. */
  const ProtobufCMessage *reply;
  /* false: the command keeps its own idempotency (it must not store its
   * reply, e.g. because the reply holds tokens); the runner then neither
   * begins nor records an idempotency record. */
  bool idempotent;
} svc_command;

/*
 * Runs one command: takes a connection, begins a transaction, and (when
 * cmd->idempotent) calls rpc_idem_begin: a repeat of a request already
 * answered ends here with the stored reply on the call. Then apply. An OK
 * outcome records the reply, commits, nudges the relay and returns true:
 * hand cmd->reply to the closure. A business failure (any code but
 * RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN,
 * CANCELLED) is recorded and committed with what apply wrote (a repeat
 * gets the same answer); the others roll back. Returns false when the
 * call already holds its answer (failure or replay): return from the
 * handler without calling the closure. Database failures become
 * UNAVAILABLE or INTERNAL on the call, logged here once.
 */
bool svc_command_run(const svc_command *cmd);

/* Appends one domain event to the outbox in the open transaction tx:
 * source "/shop/<program>", type = the event's protobuf full name, subject
 * and key = aggregate_id, sequence = version, correlation id = the call's
 * request id, actor = actor if given, else the caller's user id, else
 * program; traceparent from the call. call may be NULL (start-up work). */
status_code svc_event_append(db_conn *tx, const rpc_call *call, const char *program,
                             const char *topic, const char *aggregate_id, int64_t version,
                             const ProtobufCMessage *event, const char *actor, char *errbuf,
                             size_t errlen);

/* Fills a ConsistencyToken that borrows id. */
void svc_token_set(Shop__Common__V1__ConsistencyToken *t, const char *id, int64_t version);

/* Logs a database failure of a handler once and sets UNAVAILABLE (the
 * database is unreachable) or INTERNAL (anything else) on the call. */
void svc_db_failed(rpc_call *call, status_code st, const char *what, const char *err);

/* A connection of pool for a handler (return it with db_pool_put). False
 * when there is none: the call's status is set as svc_db_failed sets it. */
bool svc_db_get(rpc_call *call, db_pool *pool, db_conn **out);

/* One page of a list query on one connection of pool: *total from
 * count_sql (with count_params), *rows from page_sql (with page_params;
 * the caller frees them). False when either failed: the call's status is
 * set as svc_db_failed sets it, with what naming the listing. */
bool svc_list_page(rpc_call *call, db_pool *pool, const char *count_sql,
                   const db_value *count_params, size_t ncount, const char *page_sql,
                   const db_value *page_params, size_t npage, const char *what, int64_t *total,
                   db_rows **rows);

/* ---- Read-your-writes ---------------------------------------------------------- */

/* What a query side's projection committed lately, for the queries that
 * wait on a consistency token: the newest version seen per aggregate, in a
 * fixed table (a later aggregate may take an older one's slot: a waiter
 * that finds its slot taken looks at the database again after a while),
 * and a condition variable the projection broadcasts on after each
 * commit. */
#define SVC_NOTIFIER_SLOTS 4096
typedef struct svc_notifier_slot {
  char id[65];
  int64_t version;
} svc_notifier_slot;
typedef struct svc_notifier {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t generation;
  svc_notifier_slot *slots; /* SVC_NOTIFIER_SLOTS */
} svc_notifier;

void svc_notifier_init(svc_notifier *n);
void svc_notifier_destroy(svc_notifier *n);
/* Call after a projection transaction committed: records (ce_subject,
 * ce_sequence) of each event of msgs whose topic is topic (NULL: every
 * event) as its aggregate's version, then wakes the waiters. */
void svc_notifier_committed(svc_notifier *n, const consumer_msg *msgs, size_t count,
                            const char *topic);
/* The newest version of id the notifier holds (0: none, or its slot was
 * taken by another aggregate since). */
int64_t svc_notifier_version(svc_notifier *n, const char *id);

/* Reads the projected version of one aggregate (0 when it has none yet). */
typedef status_code (*svc_version_fn)(db_conn *c, const char *aggregate_id, int64_t *version,
                                      char *errbuf, size_t errlen);

/*
 * Honours a query's ReadConsistency (may be NULL): without a token, true
 * at once. With one, checks the token (INVALID_ARGUMENT on the call for a
 * malformed id or a version < 1), then reads the projected version with
 * version_fn; while it is short of the token's, waits on the notifier
 * until the projection commits the version (read once more from the
 * database to answer), for at most wait_ms, or the call's remaining
 * budget when wait_ms is 0, whichever ends first. The wait holds no
 * database connection, and the database is read again only when the
 * notifier has the version, when the aggregate's slot was taken by
 * another one (every SVC_WAIT_RECHECK_MS), or at the end.
 * True when the projection is there; false with FAILED_PRECONDITION on
 * the call ("projection of <id> is at version N, token asks for M", a
 * violation on consistency.token.version and Status.projection naming the
 * version it has) or a database error.
 */
bool svc_consistency_wait(rpc_call *call, db_pool *db, svc_notifier *n,
                          const Shop__Common__V1__ReadConsistency *rc, svc_version_fn version_fn);

/* ---- Pages ------------------------------------------------------------------- */

#define SVC_PAGE_DEFAULT 50
#define SVC_PAGE_MAX 500
#define SVC_PAGE_TOKEN_MAX 8192
#define SVC_PAGE_FIELDS_MAX 4
#define SVC_PAGE_FIELD_MAX 1024

/* The page size a PageRequest asks for (NULL: the default); false with
 * INVALID_ARGUMENT on the call (violation page.page_size) when out of
 * range. */
bool svc_page_size(rpc_call *call, const Shop__Common__V1__PageRequest *page, int *size);

/* The position after the last item of a page: a few key fields (the sort
 * key and the id), as text. */
typedef struct svc_page_pos {
  size_t n;
  char field[SVC_PAGE_FIELDS_MAX][SVC_PAGE_FIELD_MAX];
} svc_page_pos;

/* Writes an opaque token (base64url) for pos, bound to a digest of
 * filters (the canonical text of the query's filters and sort). */
void svc_page_token_encode(char out[SVC_PAGE_TOKEN_MAX], const char *filters,
                           const svc_page_pos *pos);

/* Decodes a token; "" or NULL gives pos->n = 0 (the first page). False with
 * INVALID_ARGUMENT on the call (violation page.page_token) when the token
 * is malformed or was issued for other filters. */
bool svc_page_token_decode(rpc_call *call, const char *token, const char *filters,
                           svc_page_pos *pos);

#endif
