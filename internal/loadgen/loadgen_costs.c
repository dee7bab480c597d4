/* What the window's orders cost (loadgen.h, loadgen_costs_*): MariaDB's
 * global counters and the programs' Kafka and event counters, read
 * before and after the window. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "loadgen/loadgen_internal.h"

/* MariaDB's global status counters of loadgen_costs, in its order. */
static const char *const status_names[] = {
    "QUESTIONS",  "COM_SELECT", "COM_INSERT",         "COM_UPDATE",
    "COM_DELETE", "COM_COMMIT", "INNODB_DATA_FSYNCS", "INNODB_LOG_WRITES",
};
#define N_STATUS (sizeof status_names / sizeof status_names[0])

/* The programs' counters summed over every program scraped. */
static const char *const metric_names[] = {
    "shop_kafka_requests_total",         "shop_kafka_fetch_requests_total",
    "shop_kafka_produce_requests_total", "shop_outbox_events_published_total",
    "shop_events_consumed_total",
};
#define N_METRICS (sizeof metric_names / sizeof metric_names[0])

const char *const loadgen_cost_names[LOADGEN_COST_COUNT] = {
    "statements",     "selects",          "inserts",        "updates",        "deletes",
    "commits",        "fsyncs",           "log_writes",     "kafka_requests", "kafka_fetches",
    "kafka_produces", "events_published", "events_consumed"};

status_code loadgen_costs_open(db_conn **out, const shop_cfg *cfg, char *errbuf, size_t errlen) {
  /* Any account may read the global status; the read-only one is used. */
  char pw[256];
  *out = NULL;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (!db_password_from_dir(cfg->mysql.secrets_dir, "shop_reconcile", pw, sizeof pw, errbuf,
                            errlen))
    return STATUS_FAILED_PRECONDITION;
  db_params p = {.host = cfg->mysql.host,
                 .port = cfg->mysql.port,
                 .socket = cfg->mysql.socket,
                 .user = "shop_reconcile",
                 .password = pw,
                 .database = "shop_audit",
                 .connect_timeout_ms = cfg->mysql.connect_timeout_ms};
  status_code st = db_connect(out, &p, errbuf, errlen);
  memset(pw, 0, sizeof pw);
  return st;
}

static bool read_status(db_conn *db, double *v) {
  char err[256];
  db_rows *r = NULL;
  if (db_query(db,
               "SELECT UPPER(VARIABLE_NAME), VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
               " WHERE VARIABLE_NAME IN ('QUESTIONS', 'COM_SELECT', 'COM_INSERT', 'COM_UPDATE',"
               " 'COM_DELETE', 'COM_COMMIT', 'INNODB_DATA_FSYNCS', 'INNODB_LOG_WRITES')",
               NULL, 0, &r, err, sizeof err) != STATUS_OK) {
    fprintf(stderr, "shop-loadgen: MariaDB status: %s\n", err);
    return false;
  }
  size_t found = 0;
  while (db_rows_next(r)) {
    const char *name = db_rows_str(r, 0, NULL), *val = db_rows_str(r, 1, NULL);
    for (size_t i = 0; i < N_STATUS; i++)
      if (name != NULL && val != NULL && strcmp(name, status_names[i]) == 0) {
        v[i] = strtod(val, NULL);
        found++;
      }
  }
  db_rows_free(r);
  return found == N_STATUS;
}

typedef struct body {
  char *p;
  size_t n;
} body;

static size_t body_cb(char *data, size_t size, size_t nmemb, void *arg) {
  body *b = arg;
  size_t len = size * nmemb;
  char *np = realloc(b->p, b->n + len + 1);
  if (np == NULL) return 0;
  memcpy(np + b->n, data, len);
  b->n += len;
  np[b->n] = '\0';
  b->p = np;
  return len;
}

/* Adds the samples of metric_names in one Prometheus text exposition to v. */
static void sum_exposition(const char *text, double *v) {
  for (const char *line = text; line != NULL && *line != '\0';) {
    const char *end = strchr(line, '\n');
    size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
    if (line[0] != '#') {
      for (size_t i = 0; i < N_METRICS; i++) {
        size_t nl = strlen(metric_names[i]);
        if (len > nl && strncmp(line, metric_names[i], nl) == 0 &&
            (line[nl] == '{' || line[nl] == ' ')) {
          const char *sp = line + len;
          while (sp > line && sp[-1] != ' ') sp--;
          v[i] += strtod(sp, NULL);
        }
      }
    }
    line = end != NULL ? end + 1 : NULL;
  }
}

static bool scrape(const char *admin_url, double *v) {
  CURL *h = curl_easy_init();
  if (h == NULL) return false;
  char url[160];
  snprintf(url, sizeof url, "%s/metrics", admin_url);
  body b = {0};
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  long code = 0;
  bool ok = curl_easy_perform(h) == CURLE_OK &&
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
  if (ok && b.p != NULL) sum_exposition(b.p, v);
  curl_easy_cleanup(h);
  free(b.p);
  return ok;
}

void loadgen_costs_read(db_conn *db, const loadgen_cpu *procs, size_t n, loadgen_costs *out) {
  memset(out, 0, sizeof *out);
  /* The status counters come first in loadgen_cost, then the metrics. */
  _Static_assert(LOADGEN_COST_KAFKA_REQUESTS == N_STATUS, "status counters first");
  _Static_assert(LOADGEN_COST_COUNT == N_STATUS + N_METRICS, "then the programs' metrics");
  out->db_ok = db != NULL && read_status(db, out->v);
  for (size_t i = 0; i < n; i++)
    if (procs[i].admin[0] != '\0' && scrape(procs[i].admin, out->v + N_STATUS)) out->scraped++;
}

void loadgen_costs_delta(const loadgen_costs *after, const loadgen_costs *before,
                         loadgen_costs *out) {
  out->db_ok = after->db_ok && before->db_ok;
  out->scraped = after->scraped < before->scraped ? after->scraped : before->scraped;
  for (size_t i = 0; i < LOADGEN_COST_COUNT; i++) out->v[i] = after->v[i] - before->v[i];
}
