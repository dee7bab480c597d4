/* The load generator's reports: the CPU of the stack's processes, the
 * text and JSON reports (loadgen.h). */
#include "loadgen/loadgen_internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "events/events.h"
#include "rpc/rpc.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

/* ---- CPU ------------------------------------------------------------------------------------- */

double loadgen_cpu_seconds(long pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL) return -1;
  unsigned long ut = 0, st = 0;
  /* After the name: state(3) ppid pgrp session tty tpgid flags minflt
   * cminflt majflt cmajflt utime(14) stime(15). */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long pid_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long pid = -1;
  if (fscanf(f, "%ld", &pid) != 1) pid = -1;
  fclose(f);
  return pid;
}

/* The first child of pid (a supervisor's program), or -1. */
static long child_of(long pid) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", pid, pid);
  return pid_file(path);
}

size_t loadgen_processes(const char *run_dir, loadgen_cpu *out, size_t max) {
  size_t n = 0;
  char path[1200];
  snprintf(path, sizeof path, "%s/pids", run_dir);
  DIR *d = opendir(path);
  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
      size_t len = strlen(e->d_name);
      if (len < 5 || strcmp(e->d_name + len - 4, ".pid") != 0) continue;
      snprintf(path, sizeof path, "%s/pids/%s", run_dir, e->d_name);
      long pid = child_of(pid_file(path));
      if (pid <= 0) continue;
      snprintf(out[n].name, sizeof out[n].name, "%.*s", (int)(len - 4), e->d_name);
      out[n].pid = pid;
      out[n].admin[0] = '\0';
      snprintf(path, sizeof path, "%s/pids/%.*s.admin", run_dir, (int)(len - 4), e->d_name);
      FILE *f = fopen(path, "r");
      if (f != NULL) {
        if (fgets(out[n].admin, sizeof out[n].admin, f) == NULL) out[n].admin[0] = '\0';
        out[n].admin[strcspn(out[n].admin, "\r\n")] = '\0';
        fclose(f);
      }
      n++;
    }
    closedir(d);
  }
  const char *infra[][2] = {{"mysqld", "mysql/mysqld.pid"}, {"kafka", "kafka/kafka.pid"}};
  for (size_t i = 0; i < 2 && n < max; i++) {
    snprintf(path, sizeof path, "%s/%s", run_dir, infra[i][1]);
    long pid = pid_file(path);
    if (pid <= 0) continue;
    snprintf(out[n].name, sizeof out[n].name, "%s", infra[i][0]);
    out[n].pid = pid;
    out[n].admin[0] = '\0';
    n++;
  }
  return n;
}

/* ---- Reports ------------------------------------------------------------------------------- */

/* Orders the costs are charged to: the completed ones, or the accepted
 * ones when none is watched to completion (no wait). */
static double cost_orders(const loadgen_report *r) {
  return (double)(r->completed > 0 ? r->completed : r->accepted);
}

static bool costs_known(const loadgen_report *r) { return r->costs.db_ok || r->costs.scraped > 0; }

void loadgen_report_print(const loadgen_report *r, FILE *f) {
  if (r->mode == LOADGEN_CLOSED)
    fprintf(f, "closed loop: %d customers%s, %d accounts, window %.0f s\n", r->customers,
            r->no_watch  ? " (not waiting for completion, not watching it)"
            : r->no_wait ? " (not waiting for completion)"
                         : "",
            r->accounts, r->window_s);
  else
    fprintf(f, "open loop: %.1f orders/s, %d accounts, window %.0f s\n", r->rate, r->accounts,
            r->window_s);
  fprintf(f, "  %-34s %10s %10s %10s %10s %8s\n", "", "p50 ms", "p90 ms", "p99 ms", "max ms", "n");
  fprintf(f, "  %-34s %10.1f %10.1f %10.1f %10.1f %8zu\n", "CreateOrder RPC", r->rpc.p50,
          r->rpc.p90, r->rpc.p99, r->rpc.max, r->rpc.n);
  fprintf(f, "  %-34s %10.1f %10.1f %10.1f %10.1f %8zu\n", "completion (accepted->CONFIRMED)",
          r->completion.p50, r->completion.p90, r->completion.p99, r->completion.max,
          r->completion.n);
  fprintf(f,
          "  sent %lld, accepted %lld (%.1f/s), completed %lld (%.1f/s), errors %lld, polls %lld\n",
          (long long)r->sent, (long long)r->accepted, r->accepted_per_s, (long long)r->completed,
          r->completed_per_s, (long long)r->failed, (long long)r->polls);
  for (size_t i = 0; i < r->n_counts; i++)
    fprintf(f, "  error %-40s %lld\n", r->counts[i].what, (long long)r->counts[i].n);
  if (r->n_cpu > 0 && r->completed > 0) {
    fprintf(f, "  CPU per completed order (ms):");
    for (size_t i = 0; i < r->n_cpu; i++)
      if (r->cpu[i].seconds >= 0)
        fprintf(f, " %s %.2f", r->cpu[i].name, 1000.0 * r->cpu[i].seconds / (double)r->completed);
    fprintf(f, "\n");
  }
  double n = cost_orders(r);
  if (costs_known(r) && n > 0) {
    const double *v = r->costs.v;
    fprintf(f,
            "  per order: %.1f statements (%.1f SELECT, %.1f INSERT, %.1f UPDATE), %.2f commits,"
            " %.2f fsyncs, %.1f Kafka requests (%.1f fetch, %.1f produce), %.1f events published,"
            " %.1f consumed (%d programs)\n",
            v[LOADGEN_COST_STATEMENTS] / n, v[LOADGEN_COST_SELECTS] / n,
            v[LOADGEN_COST_INSERTS] / n, v[LOADGEN_COST_UPDATES] / n, v[LOADGEN_COST_COMMITS] / n,
            v[LOADGEN_COST_DATA_FSYNCS] / n, v[LOADGEN_COST_KAFKA_REQUESTS] / n,
            v[LOADGEN_COST_KAFKA_FETCHES] / n, v[LOADGEN_COST_KAFKA_PRODUCES] / n,
            v[LOADGEN_COST_EVENTS_PUBLISHED] / n, v[LOADGEN_COST_EVENTS_CONSUMED] / n,
            r->costs.scraped);
  }
}

static json_t *costs_json(const loadgen_report *r) {
  json_t *window = json_object(), *per = json_object();
  double n = cost_orders(r);
  for (size_t i = 0; i < LOADGEN_COST_COUNT; i++) {
    json_object_set_new(window, loadgen_cost_names[i], json_real(r->costs.v[i]));
    json_object_set_new(per, loadgen_cost_names[i],
                        n > 0 ? json_real(r->costs.v[i] / n) : json_null());
  }
  return json_pack("{s:b,s:i,s:f,s:o,s:o}", "db_ok", r->costs.db_ok, "programs_scraped",
                   r->costs.scraped, "orders", n, "window", window, "per_order", per);
}

static json_t *lat_json(const loadgen_lat *l) {
  return json_pack("{s:I,s:f,s:f,s:f,s:f}", "n", (json_int_t)l->n, "p50_ms", l->p50, "p90_ms",
                   l->p90, "p99_ms", l->p99, "max_ms", l->max);
}

char *loadgen_report_json(const loadgen_report *r, const char *extra) {
  json_t *errors = json_object();
  for (size_t i = 0; i < r->n_counts; i++)
    json_object_set_new(errors, r->counts[i].what, json_integer(r->counts[i].n));
  json_t *cpu = json_object();
  for (size_t i = 0; i < r->n_cpu; i++) {
    json_object_set_new(
        cpu, r->cpu[i].name,
        json_pack("{s:I,s:f}", "pid", (json_int_t)r->cpu[i].pid, "seconds", r->cpu[i].seconds));
  }
  json_t *o = json_pack("{s:s,s:f,s:i,s:b,s:b,s:i,s:f,s:I,s:I,s:I,s:I,s:f,s:f,s:o,s:o,s:o,s:I,s:o}",
                        "mode", r->mode == LOADGEN_CLOSED ? "closed" : "open", "rate", r->rate,
                        "customers", r->customers, "no_wait", r->no_wait, "no_watch", r->no_watch,
                        "accounts", r->accounts, "window_s", r->window_s, "sent",
                        (json_int_t)r->sent, "accepted", (json_int_t)r->accepted, "completed",
                        (json_int_t)r->completed, "errors_total", (json_int_t)r->failed,
                        "accepted_per_s", r->accepted_per_s, "completed_per_s", r->completed_per_s,
                        "create_order", lat_json(&r->rpc), "completion", lat_json(&r->completion),
                        "errors", errors, "polls", (json_int_t)r->polls, "cpu_s", cpu);
  if (o == NULL) return NULL;
  if (costs_known(r)) json_object_set_new(o, "costs", costs_json(r));
  if (extra != NULL) {
    json_t *x = json_loads(extra, 0, NULL);
    if (json_is_object(x)) json_object_update(o, x);
    json_decref(x);
  }
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}
