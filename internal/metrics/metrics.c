/* Counters, gauges and histograms, and their Prometheus text exposition.
 * See metrics.h. One mutex per family guards its series and their values:
 * updates are a lock, a hash lookup and an add, cheap next to an RPC or a
 * database transaction, and a scrape reads a consistent family. */
#include "metrics/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_BUCKETS 64

const double metrics_default_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
const size_t metrics_default_buckets_count =
    sizeof metrics_default_buckets / sizeof metrics_default_buckets[0];

struct metrics_series {
  metrics_family *fam;
  char **values;
  uint64_t hash;
  double value;     /* counter, gauge; histogram sum */
  uint64_t count;   /* histogram */
  uint64_t *counts; /* histogram, per bucket (not cumulative) */
  struct metrics_series *next_hash;
  struct metrics_series *next_order;
};

struct metrics_family {
  metrics_type type;
  char *name;
  char *help;
  char *labels[METRICS_MAX_LABELS];
  size_t n_labels;
  double *buckets;
  size_t n_buckets;
  pthread_mutex_t mu;
  metrics_series *table[SERIES_BUCKETS];
  metrics_series *first, *last;
  struct metrics_family *next;
};

typedef struct collector {
  metrics_collect_cb cb;
  void *arg;
  struct collector *next;
} collector;

struct metrics_registry {
  pthread_mutex_t mu; /* families and collectors lists */
  pthread_mutex_t render_mu;
  metrics_family *first, *last;
  collector *collectors, *collectors_last;
};

/* ---- registry ---------------------------------------------------------------- */

status_code metrics_registry_create(metrics_registry **out) {
  *out = calloc(1, sizeof **out);
  if (*out == NULL) return STATUS_RESOURCE_EXHAUSTED;
  pthread_mutex_init(&(*out)->mu, NULL);
  pthread_mutex_init(&(*out)->render_mu, NULL);
  return STATUS_OK;
}

static void series_free(metrics_series *s, size_t n_labels) {
  for (size_t i = 0; i < n_labels; i++) free(s->values[i]);
  free(s->values);
  free(s->counts);
  free(s);
}

static void family_free(metrics_family *f) {
  metrics_series *s = f->first;
  while (s != NULL) {
    metrics_series *n = s->next_order;
    series_free(s, f->n_labels);
    s = n;
  }
  for (size_t i = 0; i < f->n_labels; i++) free(f->labels[i]);
  free(f->name);
  free(f->help);
  free(f->buckets);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

void metrics_registry_destroy(metrics_registry *r) {
  if (r == NULL) return;
  metrics_family *f = r->first;
  while (f != NULL) {
    metrics_family *n = f->next;
    family_free(f);
    f = n;
  }
  collector *c = r->collectors;
  while (c != NULL) {
    collector *n = c->next;
    free(c);
    c = n;
  }
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->render_mu);
  free(r);
}

static bool name_ok(const char *n, bool colon) {
  if (n == NULL || n[0] == '\0') return false;
  for (const char *p = n; *p; p++) {
    char ch = *p;
    bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
    bool digit = ch >= '0' && ch <= '9';
    if (!(alpha || (colon && ch == ':') || (digit && p != n))) return false;
  }
  return true;
}

static bool same_shape(const metrics_family *f, metrics_type type, const char *const *labels,
                       size_t n_labels, const double *buckets, size_t n_buckets) {
  if (f->type != type || f->n_labels != n_labels) return false;
  for (size_t i = 0; i < n_labels; i++)
    if (strcmp(f->labels[i], labels[i]) != 0) return false;
  if (type == METRICS_HISTOGRAM) {
    if (f->n_buckets != n_buckets) return false;
    for (size_t i = 0; i < n_buckets; i++)
      if (f->buckets[i] != buckets[i]) return false;
  }
  return true;
}

static metrics_family *family_make(metrics_registry *r, metrics_type type, const char *name,
                                   const char *help, const char *const *labels,
                                   const double *buckets, size_t n_buckets) {
  if (r == NULL || !name_ok(name, true)) return NULL;
  size_t n_labels = 0;
  while (labels != NULL && labels[n_labels] != NULL) {
    if (n_labels == METRICS_MAX_LABELS || !name_ok(labels[n_labels], false) ||
        (type == METRICS_HISTOGRAM && strcmp(labels[n_labels], "le") == 0))
      return NULL;
    n_labels++;
  }
  if (type == METRICS_HISTOGRAM) {
    if (buckets == NULL) {
      buckets = metrics_default_buckets;
      n_buckets = metrics_default_buckets_count;
    }
    for (size_t i = 0; i < n_buckets; i++)
      if (isnan(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) return NULL;
  }
  pthread_mutex_lock(&r->mu);
  for (metrics_family *f = r->first; f != NULL; f = f->next) {
    if (strcmp(f->name, name) == 0) {
      bool same = same_shape(f, type, labels, n_labels, buckets, n_buckets);
      pthread_mutex_unlock(&r->mu);
      return same ? f : NULL;
    }
  }
  metrics_family *f = calloc(1, sizeof *f);
  if (f == NULL) goto oom;
  f->type = type;
  f->name = strdup(name);
  f->help = strdup(help != NULL ? help : "");
  pthread_mutex_init(&f->mu, NULL);
  bool ok = f->name != NULL && f->help != NULL;
  for (size_t i = 0; i < n_labels; i++) {
    f->labels[i] = strdup(labels[i]);
    f->n_labels = i + 1;
    ok = ok && f->labels[i] != NULL;
  }
  if (type == METRICS_HISTOGRAM && ok) {
    f->buckets = malloc(n_buckets * sizeof *f->buckets + 1);
    ok = f->buckets != NULL;
    if (ok) memcpy(f->buckets, buckets, n_buckets * sizeof *f->buckets);
    f->n_buckets = n_buckets;
  }
  if (!ok) {
    family_free(f);
    goto oom;
  }
  if (r->last != NULL)
    r->last->next = f;
  else
    r->first = f;
  r->last = f;
  pthread_mutex_unlock(&r->mu);
  return f;
oom:
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

metrics_family *metrics_counter_family(metrics_registry *r, const char *name, const char *help,
                                       const char *const *labels) {
  return family_make(r, METRICS_COUNTER, name, help, labels, NULL, 0);
}

metrics_family *metrics_gauge_family(metrics_registry *r, const char *name, const char *help,
                                     const char *const *labels) {
  return family_make(r, METRICS_GAUGE, name, help, labels, NULL, 0);
}

metrics_family *metrics_histogram_family(metrics_registry *r, const char *name, const char *help,
                                         const char *const *labels, const double *buckets,
                                         size_t n_buckets) {
  return family_make(r, METRICS_HISTOGRAM, name, help, labels, buckets, n_buckets);
}

status_code metrics_collector_add(metrics_registry *r, metrics_collect_cb cb, void *arg) {
  collector *c = calloc(1, sizeof *c);
  if (c == NULL) return STATUS_RESOURCE_EXHAUSTED;
  c->cb = cb;
  c->arg = arg;
  pthread_mutex_lock(&r->mu);
  if (r->collectors_last != NULL)
    r->collectors_last->next = c;
  else
    r->collectors = c;
  r->collectors_last = c;
  pthread_mutex_unlock(&r->mu);
  return STATUS_OK;
}

/* ---- series ------------------------------------------------------------------ */

static uint64_t values_hash(const char *const *values, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a, with a separator between values */
  for (size_t i = 0; i < n; i++) {
    for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
      h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;
  }
  return h;
}

static bool values_equal(const metrics_series *s, const char *const *values, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->values[i], values[i]) != 0) return false;
  return true;
}

metrics_series *metrics_series_get(metrics_family *f, const char *const *values) {
  if (f == NULL || (values == NULL && f->n_labels > 0)) return NULL;
  static const char *const none[1] = {""};
  if (values == NULL) values = none;
  size_t n = f->n_labels;
  uint64_t h = values_hash(values, n);
  pthread_mutex_lock(&f->mu);
  metrics_series *s = f->table[h % SERIES_BUCKETS];
  while (s != NULL && !(s->hash == h && values_equal(s, values, n))) s = s->next_hash;
  if (s != NULL) goto out;
  s = calloc(1, sizeof *s);
  if (s == NULL) goto out;
  s->fam = f;
  s->hash = h;
  s->values = calloc(n > 0 ? n : 1, sizeof *s->values);
  bool ok = s->values != NULL;
  for (size_t i = 0; ok && i < n; i++) ok = (s->values[i] = strdup(values[i])) != NULL;
  if (ok && f->type == METRICS_HISTOGRAM)
    ok = (s->counts = calloc(f->n_buckets + 1, sizeof *s->counts)) != NULL;
  if (!ok) {
    if (s->values != NULL)
      series_free(s, n);
    else
      free(s);
    s = NULL;
    goto out;
  }
  s->next_hash = f->table[h % SERIES_BUCKETS];
  f->table[h % SERIES_BUCKETS] = s;
  if (f->last != NULL)
    f->last->next_order = s;
  else
    f->first = s;
  f->last = s;
out:
  pthread_mutex_unlock(&f->mu);
  return s;
}

void metrics_counter_add(metrics_series *s, double v) {
  if (s == NULL || !(v >= 0) || s->fam->type != METRICS_COUNTER) return;
  pthread_mutex_lock(&s->fam->mu);
  s->value += v;
  pthread_mutex_unlock(&s->fam->mu);
}

void metrics_counter_set(metrics_series *s, double v) {
  if (s == NULL || !(v >= 0) || s->fam->type != METRICS_COUNTER) return;
  pthread_mutex_lock(&s->fam->mu);
  s->value = v;
  pthread_mutex_unlock(&s->fam->mu);
}

void metrics_gauge_set(metrics_series *s, double v) {
  if (s == NULL || s->fam->type != METRICS_GAUGE) return;
  pthread_mutex_lock(&s->fam->mu);
  s->value = v;
  pthread_mutex_unlock(&s->fam->mu);
}

void metrics_gauge_add(metrics_series *s, double v) {
  if (s == NULL || s->fam->type != METRICS_GAUGE) return;
  pthread_mutex_lock(&s->fam->mu);
  s->value += v;
  pthread_mutex_unlock(&s->fam->mu);
}

void metrics_histogram_observe(metrics_series *s, double v) {
  if (s == NULL || s->fam->type != METRICS_HISTOGRAM || isnan(v)) return;
  metrics_family *f = s->fam;
  size_t i = 0;
  while (i < f->n_buckets && v > f->buckets[i]) i++;
  pthread_mutex_lock(&f->mu);
  s->counts[i]++;
  s->count++;
  s->value += v;
  pthread_mutex_unlock(&f->mu);
}

double metrics_series_value(metrics_series *s) {
  if (s == NULL) return 0;
  pthread_mutex_lock(&s->fam->mu);
  double v = s->fam->type == METRICS_HISTOGRAM ? (double)s->count : s->value;
  pthread_mutex_unlock(&s->fam->mu);
  return v;
}

/* ---- exposition ---------------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void sb_grow(sbuf *b, size_t more) {
  if (b->oom || b->len + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more + 1) cap *= 2;
  char *n = realloc(b->p, cap);
  if (n == NULL) {
    b->oom = true;
    return;
  }
  b->p = n;
  b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n) {
  sb_grow(b, n);
  if (b->oom) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Escapes backslash and newline, and double quote when quoted. */
static void sb_escaped(sbuf *b, const char *s, bool quoted) {
  for (const char *p = s; *p; p++) {
    if (*p == '\\')
      sb_put(b, "\\\\", 2);
    else if (*p == '\n')
      sb_put(b, "\\n", 2);
    else if (quoted && *p == '"')
      sb_put(b, "\\\"", 2);
    else
      sb_put(b, p, 1);
  }
}

void metrics_format_double(double v, char *buf, size_t len) {
  if (isnan(v)) {
    snprintf(buf, len, "NaN");
  } else if (isinf(v)) {
    snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
  } else if (v == floor(v) && fabs(v) < 1e15) {
    snprintf(buf, len, "%.0f", v);
  } else {
    /* The shortest %g that reads back as the same double. */
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(buf, len, "%.*g", prec, v);
      if (strtod(buf, NULL) == v) return;
    }
  }
}

static void sb_double(sbuf *b, double v) {
  char num[40];
  metrics_format_double(v, num, sizeof num);
  sb_str(b, num);
}

/* name{l1="v1",...[,le="x"]} value\n */
static void sb_sample(sbuf *b, const metrics_family *f, const char *suffix, const metrics_series *s,
                      const char *le, double v) {
  sb_str(b, f->name);
  sb_str(b, suffix);
  if (f->n_labels > 0 || le != NULL) {
    sb_put(b, "{", 1);
    for (size_t i = 0; i < f->n_labels; i++) {
      if (i > 0) sb_put(b, ",", 1);
      sb_str(b, f->labels[i]);
      sb_put(b, "=\"", 2);
      sb_escaped(b, s->values[i], true);
      sb_put(b, "\"", 1);
    }
    if (le != NULL) {
      if (f->n_labels > 0) sb_put(b, ",", 1);
      sb_str(b, "le=\"");
      sb_str(b, le);
      sb_put(b, "\"", 1);
    }
    sb_put(b, "}", 1);
  }
  sb_put(b, " ", 1);
  sb_double(b, v);
  sb_put(b, "\n", 1);
}

static void render_family(sbuf *b, metrics_family *f) {
  static const char *const types[] = {"counter", "gauge", "histogram"};
  sb_str(b, "# HELP ");
  sb_str(b, f->name);
  sb_put(b, " ", 1);
  sb_escaped(b, f->help, false);
  sb_str(b, "\n# TYPE ");
  sb_str(b, f->name);
  sb_put(b, " ", 1);
  sb_str(b, types[f->type]);
  sb_put(b, "\n", 1);
  pthread_mutex_lock(&f->mu);
  for (metrics_series *s = f->first; s != NULL; s = s->next_order) {
    if (f->type != METRICS_HISTOGRAM) {
      sb_sample(b, f, "", s, NULL, s->value);
      continue;
    }
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i < f->n_buckets; i++) {
      cum += s->counts[i];
      metrics_format_double(f->buckets[i], le, sizeof le);
      sb_sample(b, f, "_bucket", s, le, (double)cum);
    }
    sb_sample(b, f, "_bucket", s, "+Inf", (double)s->count);
    sb_sample(b, f, "_sum", s, NULL, s->value);
    sb_sample(b, f, "_count", s, NULL, (double)s->count);
  }
  pthread_mutex_unlock(&f->mu);
}

status_code metrics_render(metrics_registry *r, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  pthread_mutex_lock(&r->render_mu);
  /* The collectors run without r->mu: they may make families. */
  pthread_mutex_lock(&r->mu);
  size_t n = 0;
  for (collector *c = r->collectors; c != NULL; c = c->next) n++;
  collector *cs = malloc((n > 0 ? n : 1) * sizeof *cs);
  size_t i = 0;
  for (collector *c = r->collectors; cs != NULL && c != NULL; c = c->next) cs[i++] = *c;
  pthread_mutex_unlock(&r->mu);
  if (cs == NULL) {
    pthread_mutex_unlock(&r->render_mu);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  for (i = 0; i < n; i++) cs[i].cb(r, cs[i].arg);
  free(cs);
  sbuf b = {0};
  sb_grow(&b, 0);
  pthread_mutex_lock(&r->mu);
  for (metrics_family *f = r->first; f != NULL; f = f->next) render_family(&b, f);
  pthread_mutex_unlock(&r->mu);
  pthread_mutex_unlock(&r->render_mu);
  if (b.oom) {
    free(b.p);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *out = b.p;
  *len = b.len;
  return STATUS_OK;
}
