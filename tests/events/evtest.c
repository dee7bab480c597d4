#include "evtest.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "events/outbox.h"
#include "support/account.h"
#include "testenv.h"
#include "topology/topology.h"

extern char **environ;

static char err[1024];

db_conn *evtest_db(void) {
  db_conn *m = testenv_db_connect("shop_migrate", "shop_test");
  status_code st = events_migrate(m, NULL, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "events_migrate: %s: %s", status_name(st), err);
  db_close(m);
  return testenv_db_connect("shop_test", "shop_test");
}

void evtest_publish(db_conn *db, const events_envelope *envs, size_t n, const char *topic) {
  evtest_append(db, envs, n);
  outbox_relay_opts o;
  evtest_relay_opts(&o);
  outbox_relay *r = NULL;
  cr_assert_eq(outbox_relay_create(&r, &o, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(outbox_relay_start(r, err, sizeof err), STATUS_OK, "%s", err);
  bool ok;
  WAIT_FOR(ok, evtest_unsent(db, topic) == 0, 30000);
  outbox_relay_destroy(r);
  cr_assert(ok, "rows of %s still unsent", topic);
}

db_conn *evtest_suite_init(void) {
  db_conn *db = evtest_db();
  evtest_outbox_clean(db);
  return db;
}

void evtest_suite_fini(db_conn *db) {
  evtest_outbox_clean(db);
  db_close(db);
  cr_assert(events_shutdown_wait(10000), "librdkafka handles left behind");
}

const db_params *evtest_db_params(void) {
  static char password[256];
  static db_params p;
  cr_assert(support_env_db_params(&p, "shop_test", "shop_test", password, sizeof password, err,
                                  sizeof err),
            "%s", err);
  return &p;
}

static void dlt_of(char *buf, size_t len, const char *topic, const char *group) {
  cr_assert(topology_dlt_name(buf, len, topic, group) > 0, "no DLT name for %s/%s", topic, group);
}

void evtest_topic(char *name, const char *what, int partitions, const char *group) {
  char prefix[96];
  snprintf(prefix, sizeof prefix, "test.events.%s.", what);
  testenv_unique(name, 200, prefix);
  status_code st =
      events_topic_create(testenv_kafka_brokers(), name, partitions, 30000, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "create %s: %s", name, err);
  if (group != NULL) {
    char dlt[256];
    dlt_of(dlt, sizeof dlt, name, group);
    st = events_topic_create(testenv_kafka_brokers(), dlt, TOPOLOGY_DLT_PARTITIONS, 30000, err,
                             sizeof err);
    cr_assert_eq(st, STATUS_OK, "create %s: %s", dlt, err);
  }
}

void evtest_topic_drop(const char *name, const char *group) {
  events_topic_delete(testenv_kafka_brokers(), name, 30000, NULL, 0);
  if (group != NULL) {
    char dlt[256];
    dlt_of(dlt, sizeof dlt, name, group);
    events_topic_delete(testenv_kafka_brokers(), dlt, 30000, NULL, 0);
  }
}

void evtest_count_table(db_conn *c, char *name) {
  testenv_unique(name, 64, "t_events_");
  char sql[256];
  snprintf(sql, sizeof sql,
           "CREATE TABLE %s (event_id VARCHAR(64) NOT NULL PRIMARY KEY, n INT NOT NULL)", name);
  status_code st = db_exec(c, sql, NULL, 0, NULL, NULL, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s", err);
}

int evtest_count_of(db_conn *c, const char *table, const char *event_id) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE event_id = ?", table);
  db_value p[1] = {DB_STR(event_id)};
  int64_t n = 0;
  status_code st = db_query_i64(c, sql, p, 1, &n, err, sizeof err);
  if (st == STATUS_NOT_FOUND) return 0;
  cr_assert_eq(st, STATUS_OK, "%s", err);
  return (int)n;
}

void evtest_drop_table(db_conn *c, const char *table) {
  char sql[256];
  snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
  db_exec(c, sql, NULL, 0, NULL, NULL, NULL, 0);
}

/* --- Reading a topic back --------------------------------------------------- */

static char *dupmem(const void *p, size_t n) {
  char *s = malloc(n + 1);
  cr_assert_not_null(s);
  if (n > 0) memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static int cmp_rec(const void *a, const void *b) {
  const evtest_rec *x = a, *y = b;
  if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* A topic being read to its end by evtest_read_topic. */
typedef struct topic_reader {
  rd_kafka_t *rk;
  const int64_t *end;
  int left;
  evtest_rec *recs;
  size_t n, total;
} topic_reader;

/* Copies every record that comes within 200 ms of the one before; true
 * once every partition is read to its end. */
static bool read_some(topic_reader *t) {
  rd_kafka_message_t *m;
  while (t->left > 0 && (m = rd_kafka_consumer_poll(t->rk, 200)) != NULL) {
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR || m->offset >= t->end[m->partition] ||
        t->n == t->total) {
      rd_kafka_message_destroy(m);
      continue;
    }
    evtest_rec *r = &t->recs[t->n++];
    r->partition = m->partition;
    r->offset = m->offset;
    r->key = dupmem(m->key, m->key_len);
    r->key_len = m->key_len;
    r->value = (uint8_t *)dupmem(m->payload, m->len);
    r->value_len = m->len;
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      r->nh = rd_kafka_header_cnt(h);
      r->hname = calloc(r->nh + 1, sizeof *r->hname);
      r->hval = calloc(r->nh + 1, sizeof *r->hval);
      r->hlen = calloc(r->nh + 1, sizeof *r->hlen);
      for (size_t i = 0; i < r->nh; i++) {
        const char *name;
        const void *v;
        size_t len;
        rd_kafka_header_get_all(h, i, &name, &v, &len);
        r->hname[i] = dupmem(name, strlen(name));
        r->hval[i] = dupmem(v != NULL ? v : "", v != NULL ? len : 0);
        r->hlen[i] = len;
      }
    }
    if (m->offset + 1 >= t->end[m->partition]) t->left--;
    rd_kafka_message_destroy(m);
  }
  return t->left == 0;
}

size_t evtest_read_topic(const char *topic, evtest_rec **out) {
  char errstr[512], group[128];
  testenv_unique(group, sizeof group, "evtest-reader-");
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", testenv_kafka_brokers(), NULL, 0);
  rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  cr_assert_not_null(rk, "%s", errstr);
  rd_kafka_poll_set_consumer(rk);

  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  const struct rd_kafka_metadata *md;
  cr_assert_eq(rd_kafka_metadata(rk, 0, rkt, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(md->topic_cnt, 1);
  int np = md->topics[0].partition_cnt;
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  cr_assert_gt(np, 0, "topic %s has no partitions", topic);

  int64_t *end = calloc((size_t)np, sizeof *end);
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(np);
  int left = 0;
  size_t total = 0;
  for (int p = 0; p < np; p++) {
    int64_t lo, hi;
    cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    end[p] = hi;
    rd_kafka_topic_partition_list_add(list, topic, p)->offset = lo;
    if (hi > lo) left++;
    total += (size_t)(hi - lo);
  }
  cr_assert_eq(rd_kafka_assign(rk, list), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(list);

  topic_reader tr = {.rk = rk, .end = end, .left = left, .total = total};
  tr.recs = calloc(total > 0 ? total : 1, sizeof *tr.recs);
  bool done;
  WAIT_FOR(done, read_some(&tr), 30000);
  evtest_rec *recs = tr.recs;
  size_t n = tr.n;
  cr_assert(done, "topic %s not read to its end in 30 s (%d partitions left)", topic, tr.left);
  free(end);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  qsort(recs, n, sizeof *recs, cmp_rec);
  *out = recs;
  return n;
}

void evtest_recs_free(evtest_rec *recs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(recs[i].key);
    free(recs[i].value);
    for (size_t j = 0; j < recs[i].nh; j++) {
      free(recs[i].hname[j]);
      free(recs[i].hval[j]);
    }
    free(recs[i].hname);
    free(recs[i].hval);
    free(recs[i].hlen);
  }
  free(recs);
}

const char *evtest_header(const evtest_rec *r, const char *name) {
  for (size_t i = r->nh; i > 0; i--) {
    if (strcmp(r->hname[i - 1], name) == 0) return r->hval[i - 1];
  }
  return NULL;
}

/* --- Outbox helpers ----------------------------------------------------------- */

void evtest_envelope(events_envelope *ev, events_timestamp *ts, char id_buf[EVENTS_ID_SIZE],
                     const char *topic, const char *key, const char *type, int64_t sequence,
                     const void *data, size_t len) {
  shop__events__v1__event_envelope__init(ev);
  shop__common__v1__timestamp__init(ts);
  events_now(ts);
  events_uuid_v7(id_buf);
  ev->id = id_buf;
  ev->source = "/shop/test";
  ev->type = (char *)type;
  ev->subject = (char *)key;
  ev->time = ts;
  ev->sequence = sequence;
  ev->correlation_id = (char *)key;
  ev->actor = "tester";
  ev->traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  ev->topic = (char *)topic;
  ev->key = (char *)key;
  ev->data.data = (uint8_t *)data;
  ev->data.len = len;
}

void evtest_append(db_conn *c, const events_envelope *envs, size_t n) {
  cr_assert_eq(db_begin(c, err, sizeof err), STATUS_OK, "%s", err);
  for (size_t i = 0; i < n; i++) {
    status_code st = outbox_append(c, &envs[i], NULL, err, sizeof err);
    cr_assert_eq(st, STATUS_OK, "outbox_append: %s: %s", status_name(st), err);
  }
  cr_assert_eq(db_commit(c, err, sizeof err), STATUS_OK, "%s", err);
}

void evtest_outbox_clean(db_conn *c) {
  status_code st = db_exec(c, "DELETE FROM outbox WHERE topic LIKE 'test.events.%'", NULL, 0, NULL,
                           NULL, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s", err);
}

int64_t evtest_unsent(db_conn *c, const char *topic) {
  db_value p[1] = {DB_STR(topic)};
  int64_t n = -1;
  status_code st = db_query_i64(c, "SELECT COUNT(*) FROM outbox WHERE topic = ? AND state = 0", p,
                                1, &n, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s", err);
  return n;
}

void evtest_consumer_opts(consumer_opts *o, const char *group, const char *const *topics,
                          size_t ntopics) {
  consumer_opts_init(o, NULL, NULL);
  o->brokers = testenv_kafka_brokers();
  o->group = group;
  o->topics = topics;
  o->topic_count = ntopics;
  o->db = evtest_db_params();
  o->session_timeout_ms = 6000;
  o->heartbeat_ms = 1000;
  o->max_retries = 3;
  o->retry_backoff_ms = 20;
  o->batch_size = 10;
}

void evtest_relay_opts(outbox_relay_opts *o) {
  outbox_relay_opts_init(o, NULL);
  o->brokers = testenv_kafka_brokers();
  o->db = evtest_db_params();
  o->poll_interval_ms = 100;
  o->sweep_interval_ms = 2000;
}

status_code evtest_count_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                            char *errbuf, size_t errlen) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "INSERT INTO %s (event_id, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1",
           (const char *)arg);
  for (size_t i = 0; i < n; i++) {
    db_value p[1] = {DB_STR(msgs[i].env->id)};
    status_code st = db_exec(tx, sql, p, 1, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

/* --- Processes ---------------------------------------------------------------- */

/* The folder of this test binary: <build>/tests. */
static void exe_dir(char *buf, size_t len) {
  ssize_t n = readlink("/proc/self/exe", buf, len - 1);
  cr_assert_gt(n, 0);
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash != NULL) *slash = '\0';
}

pid_t evtest_spawn(const char *crash_at, const char *const *args) {
  char path[PATH_MAX];
  const char *build = getenv("SHOP_BUILD_DIR");
  if (build != NULL && build[0] != '\0') {
    snprintf(path, sizeof path, "%s/bin/events-testproc", build);
  } else {
    char dir[PATH_MAX - 64];
    exe_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/../bin/events-testproc", dir);
  }
  cr_assert_eq(access(path, X_OK), 0, "%s is missing: build it", path);
  const char *argv[32];
  size_t a = 0;
  argv[a++] = path;
  for (size_t i = 0; args[i] != NULL && a < 31; i++) argv[a++] = args[i];
  argv[a] = NULL;
  /* The environment, without an inherited SHOP_CRASH_AT, plus ours. */
  size_t ne = 0;
  while (environ[ne] != NULL) ne++;
  char **envp = calloc(ne + 2, sizeof *envp);
  size_t k = 0;
  for (size_t i = 0; i < ne; i++) {
    if (strncmp(environ[i], "SHOP_CRASH_AT=", 14) != 0) envp[k++] = environ[i];
  }
  char crash[160];
  if (crash_at != NULL) {
    snprintf(crash, sizeof crash, "SHOP_CRASH_AT=%s", crash_at);
    envp[k++] = crash;
  }
  envp[k] = NULL;
  pid_t pid;
  int e = posix_spawn(&pid, path, NULL, NULL, (char *const *)argv, envp);
  free(envp);
  cr_assert_eq(e, 0, "posix_spawn %s: %s", path, strerror(e));
  return pid;
}

int evtest_wait_exit(pid_t pid, int timeout_ms) {
  int status;
  bool exited;
  WAIT_FOR(exited, waitpid(pid, &status, WNOHANG) == pid, timeout_ms);
  if (exited) return status;
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

/* --- The broker --------------------------------------------------------------- */

static void repo_dir(char *buf, size_t len) {
  const char *repo = getenv("SHOP_REPO");
  if (repo != NULL && repo[0] != '\0') {
    snprintf(buf, len, "%s", repo);
    return;
  }
  char dir[PATH_MAX - 16];
  exe_dir(dir, sizeof dir); /* <repo>/<build>/tests */
  snprintf(buf, len, "%s/../..", dir);
}

static void infra(const char *what) {
  char repo[PATH_MAX], cmd[PATH_MAX + 128];
  repo_dir(repo, sizeof repo);
  snprintf(cmd, sizeof cmd, "cd '%s' && scripts/infra.sh %s --profile test >&2", repo, what);
  int rc = system(cmd);
  cr_assert_eq(rc, 0, "%s failed (%d)", cmd, rc);
}

static bool kafka_killed;

void evtest_kafka_kill(void) {
  kafka_killed = true;
  infra("kill-kafka");
}

void evtest_kafka_start(void) {
  infra("start");
  kafka_killed = false;
}

void evtest_kafka_restore(void) {
  if (kafka_killed) evtest_kafka_start();
}
