/* What stack.c and stack_kafka.c share; not for tests. */
#ifndef SHOP_TESTS_STACK_INTERNAL_H
#define SHOP_TESTS_STACK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

/* The test config, loaded once per process; NULL with the reason in err.
 * Runner side too (no Criterion assertion). */
const shop_cfg *stack_cfg_load(char *err, size_t errlen);

/* Runner: puts the end offsets of every domain topic's partitions into
 * SHOP_E2E_REPLAY_FROM, waiting (bounded) for a broker that has just
 * started to elect its leaders. False with the reason in err. */
bool stack_offsets_snapshot(char *err, size_t errlen);

#endif
