/* A thread-safe pool of connections (db.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "db/db_internal.h"

struct db_pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  db_params_copy pc; /* pc.p: the params, owned */
  int size, made;
  db_conn **idle;
  int nidle;
  /* A read pool (db_pool_create_read): the pool that stands in while the
   * replica is down, and until when (CLOCK_MONOTONIC ms) it stands in. */
  db_pool *fallback;
  int64_t down_until_ms;
  atomic_uint_fast64_t fallbacks;
};

static int64_t pool_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The pool without connections yet. NULL: out of memory (said). */
static db_pool *pool_new(const db_params *p, int size, char *errbuf, size_t errlen) {
  db_pool *pool = calloc(1, sizeof *pool);
  if (pool == NULL || (pool->idle = calloc((size_t)size, sizeof(db_conn *))) == NULL) {
    free(pool);
    status_seterr(errbuf, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&pool->mu, NULL);
  pthread_cond_init(&pool->cv, NULL);
  if (!db_params_dup(&pool->pc, p)) {
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->idle);
    free(pool);
    status_seterr(errbuf, errlen, "out of memory");
    return NULL;
  }
  pool->size = size;
  return pool;
}

status_code db_pool_create(db_pool **out, const db_params *p, int size, char *errbuf,
                           size_t errlen) {
  db_pool *pool = pool_new(p, size, errbuf, errlen);
  if (pool == NULL) return STATUS_INTERNAL;
  /* One connection up front proves the parameters, with the start-up retry. */
  db_conn *first;
  status_code st = db_connect(&first, &pool->pc.p, errbuf, errlen);
  if (st != STATUS_OK) {
    db_pool_destroy(pool);
    return st;
  }
  pool->made = 1;
  first->home = pool;
  pool->idle[pool->nidle++] = first;
  *out = pool;
  return STATUS_OK;
}

status_code db_pool_create_read(db_pool **out, const db_params *replica, int size,
                                db_pool *fallback, char *errbuf, size_t errlen) {
  db_params p = *replica;
  p.connect_retry_ms = 0; /* connections are made on demand, the replica may be down */
  db_pool *pool = pool_new(&p, size, errbuf, errlen);
  if (pool == NULL) return STATUS_INTERNAL;
  pool->fallback = fallback;
  *out = pool;
  return STATUS_OK;
}

uint64_t db_pool_fallbacks(const db_pool *pool) {
  return pool != NULL ? atomic_load(&((db_pool *)pool)->fallbacks) : 0;
}

/* A read pool's replica does not answer: the fallback stands in for a while. */
static void pool_mark_down(db_pool *pool) {
  pthread_mutex_lock(&pool->mu);
  pool->down_until_ms = pool_now_ms() + DB_READ_RETRY_MS;
  pthread_mutex_unlock(&pool->mu);
}

static status_code pool_get_fallback(db_pool *pool, db_conn **out, char *errbuf, size_t errlen) {
  atomic_fetch_add(&pool->fallbacks, 1);
  return db_pool_get(pool->fallback, out, errbuf, errlen);
}

void db_pool_destroy(db_pool *pool) {
  if (pool == NULL) return;
  for (int i = 0; i < pool->nidle; i++) db_close(pool->idle[i]);
  free(pool->idle);
  db_params_copy_free(&pool->pc);
  pthread_mutex_destroy(&pool->mu);
  pthread_cond_destroy(&pool->cv);
  free(pool);
}

status_code db_pool_get(db_pool *pool, db_conn **out, char *errbuf, size_t errlen) {
  pthread_mutex_lock(&pool->mu);
  for (;;) {
    if (pool->fallback != NULL && pool_now_ms() < pool->down_until_ms) {
      pthread_mutex_unlock(&pool->mu);
      return pool_get_fallback(pool, out, errbuf, errlen);
    }
    if (pool->nidle > 0) {
      *out = pool->idle[--pool->nidle];
      pthread_mutex_unlock(&pool->mu);
      /* A read connection whose link died is tried again here, so that a
       * replica still down sends this read to the fallback. */
      if (pool->fallback != NULL && (*out)->broken &&
          db_revive(*out, errbuf, errlen) != STATUS_OK) {
        db_pool_put(pool, *out);
        *out = NULL;
        return pool_get_fallback(pool, out, errbuf, errlen);
      }
      return STATUS_OK;
    }
    if (pool->made < pool->size) {
      pool->made++;
      pthread_mutex_unlock(&pool->mu);
      db_params once = pool->pc.p;
      once.connect_retry_ms = 0;
      status_code st = db_connect(out, &once, errbuf, errlen);
      if (st != STATUS_OK) {
        pthread_mutex_lock(&pool->mu);
        pool->made--;
        pthread_cond_signal(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
        if (pool->fallback != NULL && st == STATUS_UNAVAILABLE) {
          pool_mark_down(pool);
          return pool_get_fallback(pool, out, errbuf, errlen);
        }
        return st;
      }
      (*out)->home = pool;
      return st;
    }
    pthread_cond_wait(&pool->cv, &pool->mu);
  }
}

void db_pool_put(db_pool *pool, db_conn *c) {
  if (c == NULL) return;
  if (c->home != NULL) pool = c->home;
  if (db_in_tx(c)) db_rollback(c);
  /* Its link died under the last statement: the replica is down. */
  if (pool->fallback != NULL && c->broken) pool_mark_down(pool);
  pthread_mutex_lock(&pool->mu);
  pool->idle[pool->nidle++] = c;
  pthread_cond_signal(&pool->cv);
  pthread_mutex_unlock(&pool->mu);
}
