/* The metrics registry and its Prometheus text exposition: every line the
 * registry writes is read back by a strict parser (promtext.h). */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"
#include "promtext.h"

static char *render(metrics_registry *r, prom_text *t) {
  char *text = NULL;
  size_t len = 0;
  cr_assert_eq(metrics_render(r, &text, &len), STATUS_OK);
  cr_assert_eq(strlen(text), len);
  char err[2200];
  cr_assert(prom_parse(text, t, err, sizeof err), "%s\n%s", err, text);
  return text;
}

Test(metrics, counters_with_labels_read_back_with_help_and_type) {
  metrics_registry *r;
  cr_assert_eq(metrics_registry_create(&r), STATUS_OK);
  static const char *const l[] = {"topic", "group", NULL};
  metrics_family *f = metrics_counter_family(r, "shop_x_total", "Things seen.", l);
  cr_assert_not_null(f);
  metrics_counter_add(metrics_series_get(f, (const char *[]){"a", "g"}), 2);
  metrics_counter_add(metrics_series_get(f, (const char *[]){"a", "g"}), 3);
  metrics_counter_add(metrics_series_get(f, (const char *[]){"b", "g"}), 1);
  metrics_counter_add(metrics_series_get(f, (const char *[]){"b", "g"}), -5); /* ignored */
  prom_text t;
  char *text = render(r, &t);
  cr_assert_eq(t.n_help, 1);
  cr_assert_eq(t.n_type, 1);
  cr_assert(strstr(text, "# HELP shop_x_total Things seen.\n# TYPE shop_x_total counter\n"));
  cr_assert_eq(prom_value(&t, "shop_x_total", (const char *[]){"topic", "a", "group", "g", NULL}),
               5);
  cr_assert_eq(prom_value(&t, "shop_x_total", (const char *[]){"topic", "b", NULL}), 1);
  cr_assert_eq(t.n, 2);
  prom_free(&t);
  free(text);
  metrics_registry_destroy(r);
}

Test(metrics, label_values_and_help_are_escaped) {
  metrics_registry *r;
  metrics_registry_create(&r);
  static const char *const l[] = {"v", NULL};
  metrics_family *f = metrics_gauge_family(r, "g", "a \\ back\nslash", l);
  const char *odd = "q\"uote \\ back\nline {x=\"1\"}";
  metrics_gauge_set(metrics_series_get(f, (const char *[]){odd}), -2.5);
  prom_text t;
  char *text = render(r, &t);
  cr_assert(strstr(text, "# HELP g a \\\\ back\\nslash\n"), "%s", text);
  cr_assert(strstr(text, "g{v=\"q\\\"uote \\\\ back\\nline {x=\\\"1\\\"}\"} -2.5\n"), "%s", text);
  cr_assert_eq(t.n, 1);
  cr_assert_str_eq(t.samples[0].value_text[0], odd);
  cr_assert_eq(t.samples[0].value, -2.5);
  prom_free(&t);
  free(text);
  metrics_registry_destroy(r);
}

Test(metrics, histograms_have_cumulative_buckets_inf_sum_and_count) {
  metrics_registry *r;
  metrics_registry_create(&r);
  static const char *const l[] = {"m", NULL};
  metrics_family *f = metrics_histogram_family(r, "h_seconds", "Latency.", l, NULL, 0);
  metrics_series *s = metrics_series_get(f, (const char *[]){"x"});
  double obs[] = {0.001, 0.005, 0.2, 0.2, 3, 50};
  for (size_t i = 0; i < 6; i++) metrics_histogram_observe(s, obs[i]);
  prom_text t;
  char *text = render(r, &t);
  static const char *const les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                    "0.5",   "1",    "2.5",   "5",    "10",  "+Inf"};
  static const double want[] = {2, 2, 2, 2, 2, 4, 4, 4, 4, 5, 5, 6};
  for (size_t i = 0; i < 12; i++)
    cr_assert_eq(prom_value(&t, "h_seconds_bucket", (const char *[]){"m", "x", "le", les[i], NULL}),
                 want[i], "le=%s", les[i]);
  cr_assert_eq(prom_count(&t, "h_seconds_bucket", NULL), 12);
  cr_assert_eq(prom_value(&t, "h_seconds_count", NULL), 6);
  cr_assert_float_eq(prom_value(&t, "h_seconds_sum", NULL), 53.406, 1e-9);
  cr_assert_eq(metrics_series_value(s), 6);
  prom_free(&t);
  free(text);
  metrics_registry_destroy(r);
}

Test(metrics, numbers_are_written_in_their_shortest_exact_form) {
  char b[40];
  double v[] = {0, 1, -3, 0.1, 2.5, 1e20, 123456789.125, INFINITY, -INFINITY, NAN};
  const char *want[] = {"0",    "1",    "-3", "0.1", "2.5", "1e+20", "123456789.125",
                        "+Inf", "-Inf", "NaN"};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    metrics_format_double(v[i], b, sizeof b);
    cr_assert_str_eq(b, want[i]);
  }
}

Test(metrics, a_family_is_found_again_by_name_and_clashes_are_refused) {
  metrics_registry *r;
  metrics_registry_create(&r);
  static const char *const a[] = {"a", NULL};
  static const char *const b[] = {"b", NULL};
  static const char *const le[] = {"le", NULL};
  metrics_family *f = metrics_counter_family(r, "c_total", "x", a);
  cr_assert_eq(metrics_counter_family(r, "c_total", "other help", a), f);
  cr_assert_null(metrics_gauge_family(r, "c_total", "x", a));
  cr_assert_null(metrics_counter_family(r, "c_total", "x", b));
  cr_assert_null(metrics_counter_family(r, "9bad", "x", NULL));
  cr_assert_null(metrics_counter_family(r, "bad-name", "x", NULL));
  cr_assert_null(metrics_counter_family(r, "ok", "x", (const char *[]){"bad:label", NULL}));
  cr_assert_null(metrics_histogram_family(r, "h", "x", le, NULL, 0));
  cr_assert_null(metrics_histogram_family(r, "h", "x", NULL, (const double[]){2, 1}, 2));
  /* Updates of the wrong kind, and on NULL, do nothing. */
  metrics_series *s = metrics_series_get(f, (const char *[]){"v"});
  metrics_gauge_set(s, 7);
  metrics_histogram_observe(s, 1);
  metrics_counter_add(NULL, 1);
  cr_assert_eq(metrics_series_value(s), 0);
  metrics_registry_destroy(r);
}

static void collect_cb(metrics_registry *r, void *arg) {
  int *calls = arg;
  (*calls)++;
  metrics_gauge_set(metrics_series_get(metrics_gauge_family(r, "scrapes", "Scrapes.", NULL), NULL),
                    *calls);
}

Test(metrics, collectors_run_before_each_render) {
  metrics_registry *r;
  metrics_registry_create(&r);
  int calls = 0;
  cr_assert_eq(metrics_collector_add(r, collect_cb, &calls), STATUS_OK);
  for (int i = 1; i <= 2; i++) {
    prom_text t;
    char *text = render(r, &t);
    cr_assert_eq(prom_value(&t, "scrapes", NULL), i);
    prom_free(&t);
    free(text);
  }
  metrics_registry_destroy(r);
}

typedef struct hammer {
  metrics_family *c, *h;
  int id;
} hammer;

static void *hammer_main(void *arg) {
  hammer *hm = arg;
  char id[8];
  snprintf(id, sizeof id, "%d", hm->id % 2);
  for (int i = 0; i < 20000; i++) {
    metrics_counter_add(metrics_series_get(hm->c, (const char *[]){id}), 1);
    metrics_histogram_observe(metrics_series_get(hm->h, NULL), 0.01);
  }
  return NULL;
}

Test(metrics, concurrent_updates_are_all_counted) {
  metrics_registry *r;
  metrics_registry_create(&r);
  hammer hm[4];
  pthread_t th[4];
  metrics_family *c = metrics_counter_family(r, "n_total", "n", (const char *[]){"t", NULL});
  metrics_family *h = metrics_histogram_family(r, "lat", "l", NULL, NULL, 0);
  for (int i = 0; i < 4; i++) {
    hm[i] = (hammer){.c = c, .h = h, .id = i};
    pthread_create(&th[i], NULL, hammer_main, &hm[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  prom_text t;
  char *text = render(r, &t);
  cr_assert_eq(prom_value(&t, "n_total", (const char *[]){"t", "0", NULL}), 40000);
  cr_assert_eq(prom_value(&t, "n_total", (const char *[]){"t", "1", NULL}), 40000);
  cr_assert_eq(prom_value(&t, "lat_count", NULL), 80000);
  cr_assert_eq(prom_value(&t, "lat_bucket", (const char *[]){"le", "0.01", NULL}), 80000);
  prom_free(&t);
  free(text);
  metrics_registry_destroy(r);
}
