/* The consumer's parts shared by its files (consumer.c: set-up, the loop,
 * rebalances, lag; consumer_batch.c: a batch's transaction, the inbox,
 * offsets; consumer_dlt.c: dead letters). Not part of the contract. */
#ifndef SHOP_EVENTS_CONSUMER_INTERNAL_H
#define SHOP_EVENTS_CONSUMER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "events/consumer.h"
#include "events/kafka_internal.h"

typedef struct item {
  rd_kafka_message_t *m;
  events_envelope *env;            /* NULL: the record is poison */
  const consumer_event_type *type; /* table mode: the event's type; NULL: not taken */
  ProtobufCMessage *msg;           /* table mode: the decoded message */
  bool bad;                        /* poison, or refused by its type's decode or check */
  char err[512];                   /* why */
  bool fresh;                      /* in the current transaction: new, handed to the handler */
  bool done;                       /* applied, skipped or dead-lettered: its offset may be stored */
} item;

struct consumer {
  consumer_opts o;
  char *brokers, *group, *client_id;
  char **topics;
  size_t ntopics;
  db_params_copy dbp; /* dbp.p: the consumer's connection's params */
  db_conn *db;
  rd_kafka_t *rk;
  rd_kafka_t *dlt; /* made on the first dead letter */
  atomic_bool stop;
  pthread_t thread;
  bool started, joined, ran;
  atomic_llong st_applied, st_skipped, st_duplicates, st_dead, st_batches, st_rejects, st_transient,
      st_assigned;
  events_kafka_counters kstats;

  /* The consumer thread's own. */
  item *items;
  consumer_msg *msgs;
  size_t cap;
  rd_kafka_topic_partition_list_t *revoked; /* during the current fill */
  size_t fill_n;                            /* records polled so far in the current fill */
  size_t revoke_mark;                       /* records polled before the last revoke */
  int transient_streak;
  int64_t next_purge_ms;
  rd_kafka_resp_err_t last_poll_err;
  int64_t last_poll_err_ms;
};

/* consumer.c */
bool consumer_stopping(consumer *c);
/* Sleeps up to ms, waking early on stop. */
void consumer_nap(consumer *c, int64_t ms);
int64_t consumer_backoff_ms(const consumer *c, int attempt);

/* consumer_batch.c: applies the n polled records of c->items. */
void consumer_process(consumer *c, size_t n);

/* consumer_dlt.c */
/* Sends the record unchanged plus the dlt_* headers and waits for the
 * delivery. False if it was not delivered. */
bool consumer_dlt_send(consumer *c, item *it, const char *error, int attempts);
/* Creates the dead-letter topic of each subscribed topic. */
status_code consumer_dlt_topics_create(consumer *c, char *errbuf, size_t errlen);
void consumer_dlt_close(consumer *c);

/* Table mode's apply (consumer.c): prepare, then each of msgs (decoded)
 * with its type's apply, lower passes first, each event the thread's log
 * scope while it runs. The consumer and consumer_spec_apply both. */
status_code consumer_table_apply(db_conn *tx, const consumer_event_type *types, size_t n_types,
                                 consumer_prepare_cb prepare, const consumer_msg *msgs, size_t n,
                                 void *arg, char *errbuf, size_t errlen);

#endif
