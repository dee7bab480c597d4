/* Reading your own writes. See consistency.h. */
#include "consistency/consistency.h"

#include "check/check.h"
#include "handler/handler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void consistency_token_set(Shop__Common__V1__ConsistencyToken *t, const char *id, int64_t version) {
  shop__common__v1__consistency_token__init(t);
  t->aggregate_id = (char *)id;
  t->version = version;
}

void consistency_notifier_init(consistency_notifier *n) {
  pthread_mutex_init(&n->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&n->cv, &a);
  pthread_condattr_destroy(&a);
  n->generation = 0;
  n->slots = calloc(CONSISTENCY_SLOTS, sizeof *n->slots);
}

void consistency_notifier_destroy(consistency_notifier *n) {
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
  free(n->slots);
  n->slots = NULL;
}

static size_t slot_of(const char *id) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
    h ^= *p;
    h *= 1099511628211ULL;
  }
  return (size_t)(h % CONSISTENCY_SLOTS);
}

void consistency_notifier_committed(consistency_notifier *n, const consumer_msg *msgs, size_t count,
                                    const char *topic) {
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; n->slots != NULL && i < count; i++) {
    const events_envelope *ev = msgs[i].env;
    if (topic != NULL && (msgs[i].topic == NULL || strcmp(msgs[i].topic, topic) != 0)) continue;
    if (ev->subject == NULL || ev->subject[0] == '\0' || strlen(ev->subject) >= 65) continue;
    consistency_slot *s = &n->slots[slot_of(ev->subject)];
    if (strcmp(s->id, ev->subject) != 0) {
      snprintf(s->id, sizeof s->id, "%s", ev->subject);
      s->version = 0;
    }
    if (ev->sequence > s->version) s->version = ev->sequence;
  }
  n->generation++;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

int64_t consistency_notifier_version(consistency_notifier *n, const char *id) {
  pthread_mutex_lock(&n->mu);
  const consistency_slot *s = n->slots != NULL ? &n->slots[slot_of(id)] : NULL;
  int64_t v = s != NULL && strcmp(s->id, id) == 0 ? s->version : 0;
  pthread_mutex_unlock(&n->mu);
  return v;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The database is looked at again at least this often while waiting, for
 * an aggregate whose slot another one took. */
#define CONSISTENCY_RECHECK_MS 250

/* The notifier holds the version but the database read is short of it:
 * the queries read a replica that has not replayed that commit yet. The
 * database is read again after this pause (no commit of ours to wait for). */
#define CONSISTENCY_REPLICA_PAUSE_MS 10

static void pause_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Waits until the notifier holds version want of id (true), or until ms
 * passed (false). */
static bool notifier_wait_for(consistency_notifier *n, const char *id, int64_t want, int64_t ms) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  const consistency_slot *s = n->slots != NULL ? &n->slots[slot_of(id)] : NULL;
  bool there = false;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    there = s != NULL && strcmp(s->id, id) == 0 && s->version >= want;
    if (there) break;
    if (pthread_cond_timedwait(&n->cv, &n->mu, &until) == ETIMEDOUT) {
      there = s != NULL && strcmp(s->id, id) == 0 && s->version >= want;
      break;
    }
  }
  pthread_mutex_unlock(&n->mu);
  return there;
}

/* Reads the projected version of id on a pooled connection. */
static bool read_version(rpc_call *call, db_pool *db, consistency_version_cb version_fn,
                         const char *id, int64_t *have) {
  char err[512] = "";
  db_conn *c = NULL;
  if (!handler_db_get(call, db, &c)) return false;
  status_code st = version_fn(c, id, have, err, sizeof err);
  db_pool_put(db, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, "reading the projection's version", err);
    return false;
  }
  return true;
}

bool consistency_wait(rpc_call *call, db_pool *db, consistency_notifier *n,
                      const Shop__Common__V1__ReadConsistency *rc,
                      consistency_version_cb version_fn) {
  if (rc == NULL || rc->token == NULL) return true;
  const Shop__Common__V1__ConsistencyToken *t = rc->token;
  if (!check_id(t->aggregate_id)) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid consistency token");
    rpc_call_add_field_violation(call, "consistency.token.aggregate_id", "must be an id");
    return false;
  }
  if (t->version < 1) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid consistency token");
    rpc_call_add_field_violation(call, "consistency.token.version", "must be at least 1");
    return false;
  }
  if (rc->wait_ms < 0) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid wait budget");
    rpc_call_add_field_violation(call, "consistency.wait_ms", "must not be negative");
    return false;
  }
  /* Keep a little of the call's budget to answer in. */
  int64_t budget = rpc_call_remaining_ms(call) - 50;
  if (rc->wait_ms > 0 && rc->wait_ms < budget) budget = rc->wait_ms;
  int64_t deadline = mono_ms() + (budget > 0 ? budget : 0);
  int64_t have = 0;
  for (;;) {
    if (!read_version(call, db, version_fn, t->aggregate_id, &have)) return false;
    if (have >= t->version) return true;
    int64_t left = deadline - mono_ms();
    if (left <= 0) break;
    if (consistency_notifier_version(n, t->aggregate_id) >= t->version)
      pause_ms(left < CONSISTENCY_REPLICA_PAUSE_MS ? left : CONSISTENCY_REPLICA_PAUSE_MS);
    else
      notifier_wait_for(n, t->aggregate_id, t->version,
                        left < CONSISTENCY_RECHECK_MS ? left : CONSISTENCY_RECHECK_MS);
  }
  rpc_call_set_status(call, STATUS_FAILED_PRECONDITION,
                      "projection of %s is at version %lld, token asks for %lld", t->aggregate_id,
                      (long long)have, (long long)t->version);
  rpc_call_add_field_violation(call, "consistency.token.version", "the projection has version %lld",
                               (long long)have);
  rpc_call_set_projection(call, t->aggregate_id, have);
  return false;
}
