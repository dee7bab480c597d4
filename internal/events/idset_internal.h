/* A set of row ids (open addressing, linear probing): the relay's rows in
 * flight. Not part of the module's contract. */
#ifndef SHOP_EVENTS_IDSET_INTERNAL_H
#define SHOP_EVENTS_IDSET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct idset {
  int64_t *slot; /* 0 = empty; row ids are > 0 */
  size_t cap;    /* power of two */
  size_t n;
} idset;

/* Room for want ids (the caller keeps n below want). */
bool idset_init(idset *s, size_t want);
bool idset_has(const idset *s, int64_t id);
void idset_add(idset *s, int64_t id);
void idset_del(idset *s, int64_t id);
void idset_clear(idset *s);

#endif
