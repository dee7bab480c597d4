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
 * An event's topic follows from its type: the events of package
 * shop.<domain>.v<N> go to shop.<domain>.events.v<N>
 * (topology_topic_of_type). So a consumer group's subscriptions follow from
 * the event types it takes (events/consumer.h derives them), and are
 * written nowhere else.
 *
 * Consumer groups: one per worker or projection, named here. A message that
 * still fails after bounded retries goes to the dead-letter topic
 * "<topic>.<group>.dlt" of that topic and group (one DLT per subscription,
 * TOPOLOGY_DLT_PARTITIONS partitions; the consumer creates its own).
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

/* Number of domain topics. */
size_t topology_topic_count(void);

/* The i-th domain topic's name, in a fixed order (user, product, order,
 * payment, inventory, notification); NULL when i >= topology_topic_count(). */
const char *topology_topic(size_t i);

/* Whether name is one of the domain topics (not a DLT). name may be NULL. */
int topology_topic_known(const char *name);

/* The domain topic of an event type (a protobuf full name such as
 * "shop.order.v1.OrderCreated"): "shop.order.events.v1". NULL when type is
 * NULL or names no package of a domain topic. */
const char *topology_topic_of_type(const char *type);

/*
 * Writes the dead-letter topic name "<topic>.<group>.dlt" into buf.
 * Returns its length (without the NUL) on success. Returns -1, with buf set
 * to "" when len > 0, when an argument is NULL or empty, when the name
 * would not fit in len bytes, or when it would be longer than
 * TOPOLOGY_TOPIC_NAME_MAX. A buffer of TOPOLOGY_TOPIC_NAME_MAX + 1
 * bytes always suffices.
 */
int topology_dlt_name(char *buf, size_t len, const char *topic, const char *group);

#endif /* SHOP_TOPOLOGY_H */
