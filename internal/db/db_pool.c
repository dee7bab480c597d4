/* A thread-safe pool of connections (db.h). */
#include <pthread.h>
#include <stdlib.h>

#include "db/db_internal.h"

struct db_pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  db_params p;
  char *host, *user, *password, *database;
  int size, made;
  db_conn **idle;
  int nidle;
};

status_code db_pool_create(db_pool **out, const db_params *p, int size, char *errbuf,
                           size_t errlen) {
  db_pool *pool = calloc(1, sizeof *pool);
  if (pool == NULL || (pool->idle = calloc((size_t)size, sizeof(db_conn *))) == NULL) {
    free(pool);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  pthread_mutex_init(&pool->mu, NULL);
  pthread_cond_init(&pool->cv, NULL);
  pool->p = *p;
  pool->host = db_strdup_or_null(p->host);
  pool->user = db_strdup_or_null(p->user);
  pool->password = db_strdup_or_null(p->password);
  pool->database = db_strdup_or_null(p->database);
  pool->p.host = pool->host;
  pool->p.user = pool->user;
  pool->p.password = pool->password;
  pool->p.database = pool->database;
  pool->size = size;
  /* One connection up front proves the parameters, with the start-up retry. */
  db_conn *first;
  status_code st = db_connect(&first, &pool->p, errbuf, errlen);
  if (st != STATUS_OK) {
    db_pool_destroy(pool);
    return st;
  }
  pool->made = 1;
  pool->idle[pool->nidle++] = first;
  *out = pool;
  return STATUS_OK;
}

void db_pool_destroy(db_pool *pool) {
  if (pool == NULL) return;
  for (int i = 0; i < pool->nidle; i++) db_close(pool->idle[i]);
  free(pool->idle);
  free(pool->host);
  free(pool->user);
  free(pool->password);
  free(pool->database);
  pthread_mutex_destroy(&pool->mu);
  pthread_cond_destroy(&pool->cv);
  free(pool);
}

status_code db_pool_get(db_pool *pool, db_conn **out, char *errbuf, size_t errlen) {
  pthread_mutex_lock(&pool->mu);
  for (;;) {
    if (pool->nidle > 0) {
      *out = pool->idle[--pool->nidle];
      pthread_mutex_unlock(&pool->mu);
      return STATUS_OK;
    }
    if (pool->made < pool->size) {
      pool->made++;
      pthread_mutex_unlock(&pool->mu);
      db_params once = pool->p;
      once.connect_retry_ms = 0;
      status_code st = db_connect(out, &once, errbuf, errlen);
      if (st != STATUS_OK) {
        pthread_mutex_lock(&pool->mu);
        pool->made--;
        pthread_cond_signal(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
      }
      return st;
    }
    pthread_cond_wait(&pool->cv, &pool->mu);
  }
}

void db_pool_put(db_pool *pool, db_conn *c) {
  if (c == NULL) return;
  if (db_in_tx(c)) db_rollback(c);
  pthread_mutex_lock(&pool->mu);
  pool->idle[pool->nidle++] = c;
  pthread_cond_signal(&pool->cv);
  pthread_mutex_unlock(&pool->mu);
}
