/*
 * promtext: a strict reader of the Prometheus text format 0.0.4, for the
 * tests: every line of an exposition must parse, and samples can be looked
 * up by name and label values.
 */
#ifndef SHOP_TESTS_PROMTEXT_H
#define SHOP_TESTS_PROMTEXT_H

#include <stdbool.h>
#include <stddef.h>

#define PROM_MAX_LABELS 10

typedef struct prom_sample {
  char name[128];
  size_t n_labels;
  char label[PROM_MAX_LABELS][64];
  char value_text[PROM_MAX_LABELS][256]; /* unescaped */
  double value;
} prom_sample;

typedef struct prom_text {
  prom_sample *samples;
  size_t n;
  size_t n_help, n_type;
} prom_text;

/* Parses text; false with the offending line in err when a line is not
 * a HELP, TYPE or sample line, a sample names a family without a TYPE
 * before it, or a value does not parse. */
bool prom_parse(const char *text, prom_text *out, char *err, size_t errlen);
void prom_free(prom_text *t);

/* The value of the sample name{labels...} whose labels include the given
 * pairs (NULL-terminated {"k", "v", ..., NULL}); -1 when there is none. */
double prom_value(const prom_text *t, const char *name, const char *const *pairs);
/* Samples of name whose labels include the pairs. */
size_t prom_count(const prom_text *t, const char *name, const char *const *pairs);

#endif
