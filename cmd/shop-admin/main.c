/*
 * shop-admin: operator tasks on Shop's Kafka cluster.
 *
 *   shop-admin topics [--brokers HOST:PORT] [--partitions N] [--timeout-ms N]
 *       Creates every domain topic (N partitions, default 6), the brokers'
 *       default.replication.factor (1 on one broker, 3 on the cluster
 *       profile), no time-based retention, cleanup.policy=delete. A topic
 *       that already exists counts as success (its settings are left as
 *       they are). Each consumer creates its own dead-letter topics when it
 *       starts (events/consumer.h).
 *       --brokers defaults to kafka.brokers of the config (found as every
 *       program finds it: --config PATH, $SHOP_CONFIG, config/shop.yaml).
 *   shop-admin topics --list
 *       Prints the names of those topics.
 *   shop-admin [--config PATH] --print-config [KEY]
 *       The effective config, or one key's value (config_print).
 *
 * Exit status: 0 on success, 1 on failure, 2 on bad usage.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "events/events.h"
#include "topology/topology.h"

#define ADMIN_DEFAULT_TIMEOUT_MS 30000

/* One topic shop-admin wants to exist. */
typedef struct admin_topic {
  char name[TOPOLOGY_TOPIC_NAME_MAX + 1];
  int partitions;
} admin_topic;

/* Every domain topic. */
typedef struct admin_plan {
  admin_topic *topics;
  size_t count;
} admin_plan;

static void usage(FILE *out) {
  fputs(
      "usage: shop-admin topics [--brokers HOST:PORT] [--config PATH] [--partitions N]\n"
      "                         [--timeout-ms N]\n"
      "       shop-admin topics --list\n"
      "       shop-admin [--config PATH] --print-config [KEY]\n"
      "\n"
      "Creates (or lists) Shop's domain topics.\n",
      out);
}

static void admin_plan_free(admin_plan *plan) {
  free(plan->topics);
  plan->topics = NULL;
  plan->count = 0;
}

static int admin_plan_build(admin_plan *plan, int domain_partitions) {
  size_t n = topology_topic_count();
  plan->count = 0;
  plan->topics = calloc(n, sizeof(*plan->topics));
  if (plan->topics == NULL) {
    fprintf(stderr, "shop-admin: out of memory\n");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    admin_topic *t = &plan->topics[plan->count++];
    snprintf(t->name, sizeof(t->name), "%s", topology_topic(i));
    t->partitions = domain_partitions;
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

/* Creates the plan's topics (events_topics_create); prints one line per
 * topic created and a summary. */
static int admin_create_topics(const char *brokers, const admin_plan *plan, int timeout_ms) {
  events_topic_spec *specs = calloc(plan->count, sizeof *specs);
  if (specs == NULL) {
    fprintf(stderr, "shop-admin: out of memory\n");
    return -1;
  }
  for (size_t i = 0; i < plan->count; i++)
    specs[i] =
        (events_topic_spec){.name = plan->topics[i].name, .partitions = plan->topics[i].partitions};
  char err[STATUS_ERRBUF_SIZE];
  status_code st = events_topics_create(brokers, specs, plan->count, timeout_ms, err, sizeof err);
  size_t created = 0, existed = 0, failed = 0;
  for (size_t i = 0; i < plan->count; i++) {
    if (specs[i].result == EVENTS_TOPIC_DONE) {
      created++;
      printf("created  %s\n", specs[i].name);
    } else if (specs[i].result == EVENTS_TOPIC_ALREADY) {
      existed++;
    } else {
      failed++;
    }
  }
  if (st != STATUS_OK) fprintf(stderr, "shop-admin: %s (%s)\n", err, status_name(st));
  printf("topics on %s: %zu created, %zu already there, %zu failed\n", brokers, created, existed,
         failed);
  free(specs);
  events_shutdown_wait(10000);
  return st == STATUS_OK && failed == 0 ? 0 : -1;
}

/* The config, found as every program finds it. 0, or -1 (said). */
static int load_cfg(shop_cfg **cfg, int argc, char **argv) {
  char err[STATUS_ERRBUF_SIZE];
  if (config_load(cfg, config_path_find(argc, argv), err, sizeof err) != 0) {
    fprintf(stderr, "shop-admin: %s\n", err);
    return -1;
  }
  return 0;
}

static int cmd_topics(int argc, char **argv) {
  const char *brokers = NULL;
  int partitions = TOPOLOGY_DOMAIN_PARTITIONS;
  int timeout_ms = ADMIN_DEFAULT_TIMEOUT_MS;
  int list = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--list") == 0) {
      list = 1;
    } else if (strcmp(a, "--brokers") == 0 && next != NULL) {
      brokers = next;
      i++;
    } else if (strcmp(a, "--config") == 0 && next != NULL) {
      i++; /* config_path_find reads it */
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
  shop_cfg *cfg = NULL;
  if (!list && brokers == NULL) {
    if (load_cfg(&cfg, argc, argv) != 0) return 2;
    brokers = cfg->kafka.brokers;
  }
  if (!list && (brokers == NULL || brokers[0] == '\0')) {
    fprintf(stderr, "shop-admin: topics needs --brokers HOST:PORT (or kafka.brokers, or --list)\n");
    usage(stderr);
    config_free(cfg);
    return 2;
  }

  admin_plan plan;
  if (admin_plan_build(&plan, partitions) != 0) {
    config_free(cfg);
    return 1;
  }
  int rc = 0;
  if (list) {
    for (size_t i = 0; i < plan.count; i++) printf("%s\n", plan.topics[i].name);
  } else if (admin_create_topics(brokers, &plan, timeout_ms) != 0) {
    fprintf(stderr, "shop-admin: topics on %s are not all in place\n", brokers);
    rc = 1;
  }
  admin_plan_free(&plan);
  config_free(cfg);
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "topics") == 0) return cmd_topics(argc - 1, argv + 1);
  const char *key;
  if (config_print_arg(argc, argv, &key)) {
    shop_cfg *cfg;
    if (load_cfg(&cfg, argc, argv) != 0) return 2;
    int rc = config_print(cfg, key, stdout);
    config_free(cfg);
    return rc;
  }
  if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
    return 0;
  }
  usage(stderr);
  return 2;
}
