/*
 * consumers: every consumer group of Shop and the spec its program runs
 * (events/consumer.h), for the tools and tests that look at all of them at
 * once (lag, dead letters, replays, fuzzing). A group's topics follow from
 * its spec (consumer_spec_topics); nothing here restates them. Links every
 * domain's consumer: programs use their own spec directly, not this list.
 */
#ifndef SHOP_CONSUMERS_H
#define SHOP_CONSUMERS_H

#include <stddef.h>

#include "events/consumer.h"

/* The specs, in a fixed order (query sides, the saga, the workers). */
extern const consumer_spec *const consumers_all[];
extern const size_t consumers_all_count;

/* The spec of group name, or NULL. */
const consumer_spec *consumers_find(const char *group);

#endif
