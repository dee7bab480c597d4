/*
 * shop-admin: operator tasks on Shop's Kafka cluster.
 *
 *   shop-admin topics --brokers HOST:PORT [--partitions N] [--timeout-ms N]
 *       Creates every domain topic (N partitions, default 6) and every
 *       dead-letter topic (1 partition), replication factor 1, no
 *       time-based retention, cleanup.policy=delete. A topic that already
 *       exists counts as success (its settings are left as they are).
 *   shop-admin topics --list
 *       Prints the names of all those topics, domain topics first.
 *
 * Exit status: 0 on success, 1 on failure, 2 on bad usage.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology/topology.h"

#define ADMIN_DEFAULT_TIMEOUT_MS 30000

/* One topic shop-admin wants to exist. */
typedef struct admin_topic {
  char name[TOPOLOGY_TOPIC_NAME_MAX + 1];
  int partitions;
} admin_topic;

/* Every domain topic, then one DLT per group and subscribed topic. */
typedef struct admin_plan {
  admin_topic *topics;
  size_t count;
} admin_plan;

static void usage(FILE *out) {
  fputs(
      "usage: shop-admin topics --brokers HOST:PORT [--partitions N] [--timeout-ms N]\n"
      "       shop-admin topics --list\n"
      "\n"
      "Creates (or lists) Shop's domain topics and dead-letter topics.\n",
      out);
}

static void admin_plan_free(admin_plan *plan) {
  free(plan->topics);
  plan->topics = NULL;
  plan->count = 0;
}

static int admin_plan_build(admin_plan *plan, int domain_partitions) {
  size_t n = topology_topic_count();
  for (size_t g = 0; g < topology_group_count(); g++) n += topology_group_at(g)->topic_count;

  plan->count = 0;
  plan->topics = calloc(n, sizeof(*plan->topics));
  if (plan->topics == NULL) {
    fprintf(stderr, "shop-admin: out of memory\n");
    return -1;
  }
  for (size_t i = 0; i < topology_topic_count(); i++) {
    admin_topic *t = &plan->topics[plan->count++];
    snprintf(t->name, sizeof(t->name), "%s", topology_topic(i));
    t->partitions = domain_partitions;
  }
  for (size_t g = 0; g < topology_group_count(); g++) {
    const topology_group *grp = topology_group_at(g);
    for (size_t i = 0; i < grp->topic_count; i++) {
      admin_topic *t = &plan->topics[plan->count++];
      if (topology_dlt_name(t->name, sizeof(t->name), grp->topics[i], grp->name) < 0) {
        fprintf(stderr, "shop-admin: no valid DLT name for %s and %s\n", grp->topics[i], grp->name);
        admin_plan_free(plan);
        return -1;
      }
      t->partitions = TOPOLOGY_DLT_PARTITIONS;
    }
  }
  return 0;
}

static int parse_int(const char *flag, const char *s, int min, int max, int *out) {
  char *end = NULL;
  errno = 0;
  long v = s != NULL ? strtol(s, &end, 10) : 0;
  if (s == NULL || *s == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
    fprintf(stderr, "shop-admin: %s needs a number from %d to %d\n", flag, min, max);
    return -1;
  }
  *out = (int)v;
  return 0;
}

/* Creates the plan's topics; prints one line per topic and a summary. */
static int admin_create_topics(const char *brokers, const admin_plan *plan, int timeout_ms) {
  char errstr[512];
  rd_kafka_t *rk = NULL;
  rd_kafka_NewTopic_t **newt = NULL;
  rd_kafka_AdminOptions_t *opts = NULL;
  rd_kafka_queue_t *queue = NULL;
  rd_kafka_event_t *ev = NULL;
  int rc = -1;

  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) !=
          RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "client.id", "shop-admin", errstr, sizeof(errstr)) !=
          RD_KAFKA_CONF_OK) {
    fprintf(stderr, "shop-admin: %s\n", errstr);
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  /* On success rd_kafka_new owns conf; on failure the caller still does. */
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (rk == NULL) {
    fprintf(stderr, "shop-admin: %s\n", errstr);
    rd_kafka_conf_destroy(conf);
    return -1;
  }

  newt = calloc(plan->count, sizeof(*newt));
  if (newt == NULL) {
    fprintf(stderr, "shop-admin: out of memory\n");
    goto out;
  }
  for (size_t i = 0; i < plan->count; i++) {
    newt[i] = rd_kafka_NewTopic_new(plan->topics[i].name, plan->topics[i].partitions, 1, errstr,
                                    sizeof(errstr));
    if (newt[i] == NULL) {
      fprintf(stderr, "shop-admin: %s: %s\n", plan->topics[i].name, errstr);
      goto out;
    }
    /* Events are kept for good (read models are rebuilt from them), and
     * never compacted away: every version of an aggregate matters. */
    if (rd_kafka_NewTopic_set_config(newt[i], "retention.ms", "-1") ||
        rd_kafka_NewTopic_set_config(newt[i], "retention.bytes", "-1") ||
        rd_kafka_NewTopic_set_config(newt[i], "cleanup.policy", "delete")) {
      fprintf(stderr, "shop-admin: %s: cannot set topic config\n", plan->topics[i].name);
      goto out;
    }
  }

  opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  if (rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr, sizeof(errstr)) ||
      rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof(errstr))) {
    fprintf(stderr, "shop-admin: %s\n", errstr);
    goto out;
  }
  queue = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, newt, plan->count, opts, queue);

  /* The result arrives within the request timeout; the extra second covers
   * the local bookkeeping around it. */
  ev = rd_kafka_queue_poll(queue, timeout_ms + 1000);
  if (ev == NULL) {
    fprintf(stderr, "shop-admin: no answer from %s within %d ms\n", brokers, timeout_ms);
    goto out;
  }
  if (rd_kafka_event_error(ev)) {
    fprintf(stderr, "shop-admin: creating topics on %s failed: %s\n", brokers,
            rd_kafka_event_error_string(ev));
    goto out;
  }
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  if (res == NULL) {
    fprintf(stderr, "shop-admin: unexpected event %s\n", rd_kafka_event_name(ev));
    goto out;
  }
  size_t n = 0;
  const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(res, &n);
  size_t created = 0, existed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    const char *name = rd_kafka_topic_result_name(results[i]);
    rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      created++;
      printf("created  %s\n", name);
    } else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      existed++;
    } else {
      failed++;
      const char *msg = rd_kafka_topic_result_error_string(results[i]);
      fprintf(stderr, "shop-admin: %s: %s (%s)\n", name, msg != NULL ? msg : "",
              rd_kafka_err2name(err));
    }
  }
  printf("topics on %s: %zu created, %zu already there, %zu failed (%zu domain, %zu dead-letter)\n",
         brokers, created, existed, failed, topology_topic_count(),
         plan->count - topology_topic_count());
  rc = (failed == 0 && n == plan->count) ? 0 : -1;

out:
  if (ev != NULL) rd_kafka_event_destroy(ev);
  if (queue != NULL) rd_kafka_queue_destroy(queue);
  if (opts != NULL) rd_kafka_AdminOptions_destroy(opts);
  if (newt != NULL) {
    for (size_t i = 0; i < plan->count; i++)
      if (newt[i] != NULL) rd_kafka_NewTopic_destroy(newt[i]);
    free(newt);
  }
  rd_kafka_destroy(rk);
  return rc;
}

static int cmd_topics(int argc, char **argv) {
  const char *brokers = NULL;
  int partitions = TOPOLOGY_DOMAIN_PARTITIONS;
  int timeout_ms = ADMIN_DEFAULT_TIMEOUT_MS;
  int list = 0;

  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--list") == 0) {
      list = 1;
    } else if (strcmp(a, "--brokers") == 0 && next != NULL) {
      brokers = next;
      i++;
    } else if (strcmp(a, "--partitions") == 0) {
      if (parse_int(a, next, 1, 1000, &partitions) != 0) return 2;
      i++;
    } else if (strcmp(a, "--timeout-ms") == 0) {
      if (parse_int(a, next, 1, 600000, &timeout_ms) != 0) return 2;
      i++;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "shop-admin: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!list && (brokers == NULL || brokers[0] == '\0')) {
    fprintf(stderr, "shop-admin: topics needs --brokers HOST:PORT (or --list)\n");
    usage(stderr);
    return 2;
  }

  admin_plan plan;
  if (admin_plan_build(&plan, partitions) != 0) return 1;
  int rc = 0;
  if (list) {
    for (size_t i = 0; i < plan.count; i++) printf("%s\n", plan.topics[i].name);
  } else if (admin_create_topics(brokers, &plan, timeout_ms) != 0) {
    fprintf(stderr, "shop-admin: topics on %s are not all in place\n", brokers);
    rc = 1;
  }
  admin_plan_free(&plan);
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "topics") == 0) return cmd_topics(argc - 2, argv + 2);
  if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
    return 0;
  }
  usage(stderr);
  return 2;
}
