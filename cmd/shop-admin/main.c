/*
 * shop-admin: operator tasks on Shop's Kafka cluster.
 *
 *   shop-admin topics --brokers HOST:PORT [--partitions N] [--timeout-ms N]
 *       Creates every domain topic (N partitions, default 6), replication
 *       factor 1, no time-based or size-based retention,
 *       cleanup.policy=delete (events_topics_create). A topic that already
 *       exists counts as success (its settings are left as they are). Each
 *       consumer creates its own dead-letter topics when it starts.
 *   shop-admin topics --list
 *       Prints the names of the domain topics.
 *
 * Exit status: 0 on success, 1 on failure, 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"
#include "topology/topology.h"

#define ADMIN_DEFAULT_TIMEOUT_MS 30000

static void usage(FILE *out) {
  fputs(
      "usage: shop-admin topics --brokers HOST:PORT [--partitions N] [--timeout-ms N]\n"
      "       shop-admin topics --list\n"
      "\n"
      "Creates (or lists) Shop's domain topics.\n",
      out);
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
  const char *topics[16];
  size_t n = topology_topic_count();
  for (size_t i = 0; i < n; i++) topics[i] = topology_topic(i);
  if (list) {
    for (size_t i = 0; i < n; i++) printf("%s\n", topics[i]);
    return 0;
  }
  if (brokers == NULL || brokers[0] == '\0') {
    fprintf(stderr, "shop-admin: topics needs --brokers HOST:PORT (or --list)\n");
    usage(stderr);
    return 2;
  }
  char err[512];
  status_code st =
      events_topics_create(brokers, topics, n, partitions, timeout_ms, err, sizeof err);
  if (st != STATUS_OK) {
    fprintf(stderr, "shop-admin: topics on %s are not all in place: %s (%s)\n", brokers, err,
            status_name(st));
    return 1;
  }
  printf("topics on %s: %zu domain topics in place (%d partitions for new ones)\n", brokers, n,
         partitions);
  events_shutdown_wait(5000);
  return 0;
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
