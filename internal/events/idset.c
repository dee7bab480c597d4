/* The relay's set of row ids. See idset_internal.h. */
#include <stdlib.h>
#include <string.h>

#include "events/idset_internal.h"

bool idset_init(idset *s, size_t want) {
  size_t cap = 64;
  while (cap < want * 2) cap <<= 1;
  s->slot = calloc(cap, sizeof *s->slot);
  s->cap = cap;
  s->n = 0;
  return s->slot != NULL;
}

static size_t idset_hash(const idset *s, int64_t id) {
  uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ULL;
  return (size_t)(x >> 17) & (s->cap - 1);
}

bool idset_has(const idset *s, int64_t id) {
  for (size_t i = idset_hash(s, id);; i = (i + 1) & (s->cap - 1)) {
    if (s->slot[i] == id) return true;
    if (s->slot[i] == 0) return false;
  }
}

/* The caller keeps n below cap / 2 (max_in_flight). */
void idset_add(idset *s, int64_t id) {
  size_t i = idset_hash(s, id);
  while (s->slot[i] != 0) {
    if (s->slot[i] == id) return;
    i = (i + 1) & (s->cap - 1);
  }
  s->slot[i] = id;
  s->n++;
}

/* Deletion with backward shift, so lookups never need tombstones. */
void idset_del(idset *s, int64_t id) {
  size_t i = idset_hash(s, id);
  while (s->slot[i] != id) {
    if (s->slot[i] == 0) return;
    i = (i + 1) & (s->cap - 1);
  }
  size_t j = i;
  for (;;) {
    j = (j + 1) & (s->cap - 1);
    if (s->slot[j] == 0) break;
    size_t k = idset_hash(s, s->slot[j]);
    /* Move slot j back to i unless its home k lies cyclically in (i, j]. */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    s->slot[i] = s->slot[j];
    i = j;
  }
  s->slot[i] = 0;
  s->n--;
}

void idset_clear(idset *s) {
  memset(s->slot, 0, s->cap * sizeof *s->slot);
  s->n = 0;
}
