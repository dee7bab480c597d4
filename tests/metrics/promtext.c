/* A strict Prometheus text format reader for the tests (promtext.h). */
#include "promtext.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

static const char *read_name(const char *p, char *out, size_t len) {
  size_t n = 0;
  if (!name_char(*p, true)) return NULL;
  while (name_char(*p, n == 0)) {
    if (n + 1 >= len) return NULL;
    out[n++] = *p++;
  }
  out[n] = '\0';
  return p;
}

static bool read_value(const char *p, double *v) {
  if (strcmp(p, "+Inf") == 0)
    *v = INFINITY;
  else if (strcmp(p, "-Inf") == 0)
    *v = -INFINITY;
  else if (strcmp(p, "NaN") == 0)
    *v = NAN;
  else {
    char *end;
    *v = strtod(p, &end);
    if (end == p || *end != '\0') return false;
  }
  return true;
}

/* name{k="v",...} value */
static bool parse_sample(const char *line, prom_sample *s) {
  memset(s, 0, sizeof *s);
  const char *p = read_name(line, s->name, sizeof s->name);
  if (p == NULL) return false;
  if (*p == '{') {
    p++;
    while (*p != '}') {
      if (s->n_labels == PROM_MAX_LABELS) return false;
      p = read_name(p, s->label[s->n_labels], sizeof s->label[0]);
      if (p == NULL || p[0] != '=' || p[1] != '"') return false;
      p += 2;
      char *o = s->value_text[s->n_labels];
      size_t n = 0;
      while (*p != '"') {
        if (*p == '\0' || *p == '\n' || n + 2 >= sizeof s->value_text[0]) return false;
        if (*p == '\\') {
          p++;
          if (*p == 'n')
            o[n++] = '\n';
          else if (*p == '\\' || *p == '"')
            o[n++] = *p;
          else
            return false;
          p++;
        } else {
          o[n++] = *p++;
        }
      }
      o[n] = '\0';
      p++;
      s->n_labels++;
      if (*p == ',')
        p++;
      else if (*p != '}')
        return false;
    }
    p++;
  }
  if (*p != ' ') return false;
  return read_value(p + 1, &s->value);
}

bool prom_parse(const char *text, prom_text *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  char typed[64][128];
  size_t n_typed = 0;
  const char *p = text;
  size_t cap = 0;
  while (*p != '\0') {
    const char *nl = strchr(p, '\n');
    if (nl == NULL) {
      snprintf(err, errlen, "last line without a newline: %s", p);
      return false;
    }
    char line[2048];
    size_t n = (size_t)(nl - p);
    if (n >= sizeof line) {
      snprintf(err, errlen, "line too long");
      return false;
    }
    memcpy(line, p, n);
    line[n] = '\0';
    p = nl + 1;
    char name[128];
    if (strncmp(line, "# HELP ", 7) == 0) {
      const char *q = read_name(line + 7, name, sizeof name);
      if (q == NULL || *q != ' ') goto bad;
      for (q++; *q; q++) {
        if (*q != '\\') continue;
        if (q[1] != '\\' && q[1] != 'n') goto bad;
        q++;
      }
      out->n_help++;
      continue;
    }
    if (strncmp(line, "# TYPE ", 7) == 0) {
      const char *q = read_name(line + 7, name, sizeof name);
      if (q == NULL || *q != ' ') goto bad;
      q++;
      if (strcmp(q, "counter") != 0 && strcmp(q, "gauge") != 0 && strcmp(q, "histogram") != 0 &&
          strcmp(q, "summary") != 0 && strcmp(q, "untyped") != 0)
        goto bad;
      if (n_typed < 64) snprintf(typed[n_typed++], sizeof typed[0], "%s", name);
      out->n_type++;
      continue;
    }
    if (out->n == cap) {
      cap = cap ? cap * 2 : 64;
      prom_sample *ns = realloc(out->samples, cap * sizeof *ns);
      if (ns == NULL) goto bad;
      out->samples = ns;
    }
    prom_sample *s = &out->samples[out->n];
    if (!parse_sample(line, s)) goto bad;
    /* The family is the name, or the name less a histogram suffix. */
    bool known = false;
    for (size_t i = 0; i < n_typed && !known; i++) {
      size_t tl = strlen(typed[i]);
      if (strncmp(s->name, typed[i], tl) != 0) continue;
      const char *suf = s->name + tl;
      known = *suf == '\0' || strcmp(suf, "_bucket") == 0 || strcmp(suf, "_sum") == 0 ||
              strcmp(suf, "_count") == 0;
    }
    if (!known) goto bad;
    out->n++;
    continue;
  bad:
    snprintf(err, errlen, "bad line: %s", line);
    return false;
  }
  return true;
}

void prom_free(prom_text *t) {
  free(t->samples);
  t->samples = NULL;
  t->n = 0;
}

static bool matches(const prom_sample *s, const char *name, const char *const *pairs) {
  if (strcmp(s->name, name) != 0) return false;
  for (size_t i = 0; pairs != NULL && pairs[i] != NULL; i += 2) {
    bool found = false;
    for (size_t j = 0; j < s->n_labels && !found; j++)
      found = strcmp(s->label[j], pairs[i]) == 0 && strcmp(s->value_text[j], pairs[i + 1]) == 0;
    if (!found) return false;
  }
  return true;
}

double prom_value(const prom_text *t, const char *name, const char *const *pairs) {
  for (size_t i = 0; i < t->n; i++)
    if (matches(&t->samples[i], name, pairs)) return t->samples[i].value;
  return -1;
}

size_t prom_count(const prom_text *t, const char *name, const char *const *pairs) {
  size_t n = 0;
  for (size_t i = 0; i < t->n; i++) n += matches(&t->samples[i], name, pairs);
  return n;
}
