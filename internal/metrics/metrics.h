/*
 * metrics: counters, gauges and histograms with labels, exposed in the
 * Prometheus text format 0.0.4 (what /metrics on a program's admin port
 * serves).
 *
 *   metrics_registry *reg;
 *   metrics_registry_create(&reg);
 *   static const char *const labels[] = {"topic", "group", NULL};
 *   metrics_family *f = metrics_counter_family(reg, "shop_events_consumed_total",
 *                                              "Events applied.", labels);
 *   metrics_counter_add(metrics_series_get(f, (const char *[]){"t", "g"}), 1);
 *   char *text; size_t len;
 *   metrics_render(reg, &text, &len);  // "# HELP ...\n# TYPE ... counter\n..."
 *   free(text);
 *   metrics_registry_destroy(reg);
 *
 * A family is one metric name with its HELP, TYPE and label names; a series
 * is one combination of label values. Families and series live as long as
 * the registry: pointers to them stay valid until metrics_registry_destroy,
 * so a hot path may look a series up once and keep it.
 *
 * Gauges that are cheaper to compute than to keep up to date (a SQL count,
 * a consumer's lag) are set by collectors: callbacks that metrics_render
 * runs before it writes, on the scraping thread.
 *
 * Exposition: families in the order they were made, series in the order
 * they were first used; "# HELP" (backslash and newline escaped) and
 * "# TYPE" lines; label values escaped (backslash, double quote,
 * newline); histograms as cumulative <name>_bucket{...,le="..."} lines
 * ending with le="+Inf", then <name>_sum and <name>_count. Numbers are
 * written in the shortest form that reads back to the same double
 * ("0.005", "1", "2.5", "+Inf", "NaN").
 *
 * Threads: everything here is thread-safe. Collectors run on the thread
 * that calls metrics_render, one scrape at a time; they may set any series
 * but must not call metrics_render.
 */
#ifndef SHOP_METRICS_H
#define SHOP_METRICS_H

#include <stddef.h>

#include "status/status.h"

#define METRICS_MAX_LABELS 8

typedef struct metrics_registry metrics_registry;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

typedef enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_type;

/* Prometheus' default buckets: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10. */
extern const double metrics_default_buckets[];
extern const size_t metrics_default_buckets_count;

/* On success *out owns an empty registry. Error: RESOURCE_EXHAUSTED. */
status_code metrics_registry_create(metrics_registry **out);
/* Frees the registry, its families and series. NULL is fine. No other
 * thread may use it any more. */
void metrics_registry_destroy(metrics_registry *r);

/* Makes a family, or returns the one of that name when type, label names
 * (and buckets) are the same. labels is a NULL-terminated list (NULL: no
 * labels), at most METRICS_MAX_LABELS; name and labels must match
 * [a-zA-Z_:][a-zA-Z0-9_:]* (labels without ':', and not "le" for a
 * histogram). help and the names are copied. Returns NULL for a bad name,
 * a clash with an existing family, or no memory. */
metrics_family *metrics_counter_family(metrics_registry *r, const char *name, const char *help,
                                       const char *const *labels);
metrics_family *metrics_gauge_family(metrics_registry *r, const char *name, const char *help,
                                     const char *const *labels);
/* buckets: strictly increasing upper bounds without +Inf (added by the
 * exposition); NULL uses metrics_default_buckets. */
metrics_family *metrics_histogram_family(metrics_registry *r, const char *name, const char *help,
                                         const char *const *labels, const double *buckets,
                                         size_t n_buckets);

/* The series for these label values (as many as the family has label
 * names; NULL when it has none), made at its first use with value 0.
 * Values are copied; any bytes are fine (they are escaped on output).
 * NULL when f is NULL, values is NULL for a family with labels, or memory
 * runs out; the update functions accept NULL and do nothing, so a hot path
 * needs no check. */
metrics_series *metrics_series_get(metrics_family *f, const char *const *values);

/* Counter: adds v (v < 0 is ignored: counters only go up). */
void metrics_counter_add(metrics_series *s, double v);
/* Counter: sets the value, for a collector that mirrors a count kept
 * elsewhere (a consumer's applied events). */
void metrics_counter_set(metrics_series *s, double v);
/* Gauge: sets or adds. */
void metrics_gauge_set(metrics_series *s, double v);
void metrics_gauge_add(metrics_series *s, double v);
/* Histogram: counts v in the first bucket whose bound is >= v, adds it to
 * the sum and 1 to the count. */
void metrics_histogram_observe(metrics_series *s, double v);

/* Reads a counter's or gauge's value, or a histogram's count (tests). */
double metrics_series_value(metrics_series *s);

/* A collector sets gauges just before the text is written. arg is
 * borrowed and must outlive the registry (or the last render). */
typedef void (*metrics_collect_cb)(metrics_registry *r, void *arg);
status_code metrics_collector_add(metrics_registry *r, metrics_collect_cb cb, void *arg);

/* Runs the collectors, then writes every family. On success *out is a
 * NUL-terminated malloc'd text (free() it) of *len bytes. Error:
 * RESOURCE_EXHAUSTED. */
status_code metrics_render(metrics_registry *r, char **out, size_t *len);

/* Writes v the way the exposition does (buf of at least 32 bytes). */
void metrics_format_double(double v, char *buf, size_t len);

#endif
