#include "topology/topology.h"

#include <stdio.h>
#include <string.h>

static const char *const topology_topics_[] = {
    TOPOLOGY_TOPIC_USER,    TOPOLOGY_TOPIC_PRODUCT,   TOPOLOGY_TOPIC_ORDER,
    TOPOLOGY_TOPIC_PAYMENT, TOPOLOGY_TOPIC_INVENTORY, TOPOLOGY_TOPIC_NOTIFICATION,
};

#define TOPOLOGY_COUNT_(a) (sizeof(a) / sizeof((a)[0]))

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

const char *topology_topic_of_type(const char *type) {
  if (type == NULL) return NULL;
  /* "shop.<domain>.v<N>.<Name>": the package is everything before the
   * last dot; its last part is the version. */
  const char *last = strrchr(type, '.');
  if (last == NULL) return NULL;
  size_t pkg = (size_t)(last - type);
  const char *ver = NULL;
  for (const char *p = type; p < last; p++)
    if (*p == '.') ver = p;
  if (ver == NULL || ver[1] != 'v') return NULL;
  size_t domain_len = (size_t)(ver - type); /* "shop.order" */
  size_t ver_len = pkg - domain_len - 1;    /* "v1" */
  for (size_t i = 0; i < TOPOLOGY_COUNT_(topology_topics_); i++) {
    const char *t = topology_topics_[i]; /* "shop.order.events.v1" */
    if (strncmp(t, type, domain_len) == 0 && strncmp(t + domain_len, ".events.", 8) == 0 &&
        strlen(t + domain_len + 8) == ver_len && strncmp(t + domain_len + 8, ver + 1, ver_len) == 0)
      return t;
  }
  return NULL;
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
