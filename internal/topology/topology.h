/*
 * topology: the one place that names Shop's Kafka topics, consumer groups
 * and dead-letter topics.
 *
 * Everything here is static, read-only data: no state, no allocation, no
 * librdkafka. Every function may be called from any thread at any time.
 * Returned pointers point into static tables and stay valid for the life of
 * the program; callers never free them.
 *
 * Domain topics: one per domain, "shop.<domain>.events.v1", with
 * TOPOLOGY_DOMAIN_PARTITIONS partitions and no time-based retention (a read
 * model can always be rebuilt from them).
 *
 * Consumer groups: one per worker or projection; a group lists the domain
 * topics it subscribes to. A message that still fails after bounded retries
 * goes to the dead-letter topic "<topic>.<group>.dlt" of that topic and
 * group (one DLT per subscription, TOPOLOGY_DLT_PARTITIONS partitions).
 */
#ifndef SHOP_TOPOLOGY_H
#define SHOP_TOPOLOGY_H

#include <stddef.h>

/* Domain topic names, for producers and for code that needs one by name. */
#define TOPOLOGY_TOPIC_USER "shop.user.events.v1"
#define TOPOLOGY_TOPIC_PRODUCT "shop.product.events.v1"
#define TOPOLOGY_TOPIC_ORDER "shop.order.events.v1"
#define TOPOLOGY_TOPIC_PAYMENT "shop.payment.events.v1"
#define TOPOLOGY_TOPIC_INVENTORY "shop.inventory.events.v1"
#define TOPOLOGY_TOPIC_NOTIFICATION "shop.notification.events.v1"

/* Consumer group ids (the librdkafka "group.id"). */
#define TOPOLOGY_GROUP_ORDER_SAGA "order-saga"
#define TOPOLOGY_GROUP_INVENTORY_WORKER "inventory-worker"
#define TOPOLOGY_GROUP_PAYMENT_WORKER "payment-worker"
#define TOPOLOGY_GROUP_NOTIFICATION_WORKER "notification-worker"
#define TOPOLOGY_GROUP_AUDIT_WORKER "audit-worker"
#define TOPOLOGY_GROUP_USER_QUERY "user-query"
#define TOPOLOGY_GROUP_PRODUCT_QUERY "product-query"
#define TOPOLOGY_GROUP_ORDER_QUERY "order-query"

/* Partitions of every domain topic (keys spread over them) and of every
 * dead-letter topic (low volume, read in order by a replay). */
#define TOPOLOGY_DOMAIN_PARTITIONS 6
#define TOPOLOGY_DLT_PARTITIONS 1

/* Longest legal Kafka topic name. */
#define TOPOLOGY_TOPIC_NAME_MAX 249

/* A consumer group and the domain topics it subscribes to. */
typedef struct topology_group {
  const char *name;          /* group id, e.g. "order-saga" */
  const char *const *topics; /* topic_count domain topic names */
  size_t topic_count;
} topology_group;

/* Number of domain topics. */
size_t topology_topic_count(void);

/* The i-th domain topic's name, in a fixed order (user, product, order,
 * payment, inventory, notification); NULL when i >= topology_topic_count(). */
const char *topology_topic(size_t i);

/* Whether name is one of the domain topics (not a DLT). name may be NULL. */
int topology_topic_known(const char *name);

/* Number of consumer groups. */
size_t topology_group_count(void);

/* The i-th consumer group, in a fixed order; NULL when
 * i >= topology_group_count(). */
const topology_group *topology_group_at(size_t i);

/* The consumer group called name, or NULL when there is none (or name is
 * NULL). */
const topology_group *topology_group_find(const char *name);

/* Whether group g subscribes to topic. Either may be NULL (answer 0). */
int topology_group_subscribes(const topology_group *g, const char *topic);

/*
 * Writes the dead-letter topic name "<topic>.<group>.dlt" into buf.
 * Returns its length (without the NUL) on success. Returns -1, with buf set
 * to "" when len > 0, when an argument is NULL or empty, when the name
 * would not fit in len bytes, or when it would be longer than
 * TOPOLOGY_TOPIC_NAME_MAX. It does not check that group subscribes to topic
 * (see topology_group_subscribes). A buffer of TOPOLOGY_TOPIC_NAME_MAX + 1
 * bytes always suffices.
 */
int topology_dlt_name(char *buf, size_t len, const char *topic, const char *group);

#endif /* SHOP_TOPOLOGY_H */
