#include "topology/topology.h"

#include <stdio.h>
#include <string.h>

static const char *const topology_topics_[] = {
    TOPOLOGY_TOPIC_USER,    TOPOLOGY_TOPIC_PRODUCT,   TOPOLOGY_TOPIC_ORDER,
    TOPOLOGY_TOPIC_PAYMENT, TOPOLOGY_TOPIC_INVENTORY, TOPOLOGY_TOPIC_NOTIFICATION,
};

#define TOPOLOGY_COUNT_(a) (sizeof(a) / sizeof((a)[0]))

/* Who reads what. The saga folds payment and inventory replies into the
 * order; the workers react to orders (and inventory to product rules); the
 * query sides build their read models only from events; audit keeps all. */
static const char *const order_saga_topics_[] = {
    TOPOLOGY_TOPIC_PAYMENT,
    TOPOLOGY_TOPIC_INVENTORY,
};
static const char *const inventory_worker_topics_[] = {
    TOPOLOGY_TOPIC_ORDER,
    TOPOLOGY_TOPIC_PRODUCT,
};
static const char *const payment_worker_topics_[] = {
    TOPOLOGY_TOPIC_ORDER,
};
static const char *const notification_worker_topics_[] = {
    TOPOLOGY_TOPIC_USER,
    TOPOLOGY_TOPIC_ORDER,
    TOPOLOGY_TOPIC_PAYMENT,
    TOPOLOGY_TOPIC_INVENTORY,
};
static const char *const user_query_topics_[] = {
    TOPOLOGY_TOPIC_USER,
};
static const char *const product_query_topics_[] = {
    TOPOLOGY_TOPIC_PRODUCT,
    TOPOLOGY_TOPIC_INVENTORY,
};
static const char *const order_query_topics_[] = {
    TOPOLOGY_TOPIC_ORDER,
    TOPOLOGY_TOPIC_PAYMENT,
    TOPOLOGY_TOPIC_INVENTORY,
};

#define TOPOLOGY_GROUP_(name, topics)                                                              \
  { name, topics, TOPOLOGY_COUNT_(topics) }

static const topology_group topology_groups_[] = {
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_ORDER_SAGA, order_saga_topics_),
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_INVENTORY_WORKER, inventory_worker_topics_),
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_PAYMENT_WORKER, payment_worker_topics_),
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_NOTIFICATION_WORKER, notification_worker_topics_),
    /* The audit log keeps every event: its list is the topic table itself. */
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_AUDIT_WORKER, topology_topics_),
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_USER_QUERY, user_query_topics_),
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_PRODUCT_QUERY, product_query_topics_),
    TOPOLOGY_GROUP_(TOPOLOGY_GROUP_ORDER_QUERY, order_query_topics_),
};

size_t topology_topic_count(void) { return TOPOLOGY_COUNT_(topology_topics_); }

const char *topology_topic(size_t i) {
  return i < TOPOLOGY_COUNT_(topology_topics_) ? topology_topics_[i] : NULL;
}

int topology_topic_known(const char *name) {
  if (name == NULL) return 0;
  for (size_t i = 0; i < TOPOLOGY_COUNT_(topology_topics_); i++)
    if (strcmp(topology_topics_[i], name) == 0) return 1;
  return 0;
}

size_t topology_group_count(void) { return TOPOLOGY_COUNT_(topology_groups_); }

const topology_group *topology_group_at(size_t i) {
  return i < TOPOLOGY_COUNT_(topology_groups_) ? &topology_groups_[i] : NULL;
}

const topology_group *topology_group_find(const char *name) {
  if (name == NULL) return NULL;
  for (size_t i = 0; i < TOPOLOGY_COUNT_(topology_groups_); i++)
    if (strcmp(topology_groups_[i].name, name) == 0) return &topology_groups_[i];
  return NULL;
}

int topology_group_subscribes(const topology_group *g, const char *topic) {
  if (g == NULL || topic == NULL) return 0;
  for (size_t i = 0; i < g->topic_count; i++)
    if (strcmp(g->topics[i], topic) == 0) return 1;
  return 0;
}

int topology_dlt_name(char *buf, size_t len, const char *topic, const char *group) {
  if (buf != NULL && len > 0) buf[0] = '\0';
  if (buf == NULL || len == 0 || topic == NULL || group == NULL || topic[0] == '\0' ||
      group[0] == '\0')
    return -1;
  int n = snprintf(buf, len, "%s.%s.dlt", topic, group);
  if (n < 0 || (size_t)n >= len || n > TOPOLOGY_TOPIC_NAME_MAX) {
    buf[0] = '\0';
    return -1;
  }
  return n;
}
