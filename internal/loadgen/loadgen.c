/* The load generator: set-up, load, completion watching, report. See
 * loadgen.h; this file holds the helpers, the set-up and the run,
 * loadgen_orders.c the orders and loadgen_report.c the reports. */
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

/* ---- Small helpers ------------------------------------------------------------------------ */

int64_t loadgen_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void loadgen_sleep_until_ns(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

void loadgen_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

void loadgen_abs_after_ms(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void cond_init_mono(pthread_cond_t *cv) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}

void loadgen_lat_push(lat_vec *l, double ms) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 4096;
    double *v = realloc(l->v, cap * sizeof *v);
    if (v == NULL) return; /* a lost sample, never a crash */
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = ms;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) {
  size_t i = (size_t)((double)(n - 1) * p + 0.5);
  return v[i < n ? i : n - 1];
}

static loadgen_lat lat_summary(lat_vec *l) {
  loadgen_lat s = {0};
  if (l->n == 0) return s;
  qsort(l->v, l->n, sizeof *l->v, cmp_double);
  s.n = l->n;
  s.p50 = pct(l->v, l->n, 0.50);
  s.p90 = pct(l->v, l->n, 0.90);
  s.p99 = pct(l->v, l->n, 0.99);
  s.max = l->v[l->n - 1];
  return s;
}

/* ---- State ---------------------------------------------------------------------------------- */

bool loadgen_in_window(const loadgen *lg, int64_t t) {
  return t >= lg->window_start_ns && t < lg->window_end_ns;
}

/* Counts one error (lg->mu held). */
void loadgen_count_locked(loadgen *lg, const char *what) {
  lg->failed++;
  for (size_t i = 0; i < lg->n_counts; i++) {
    if (strcmp(lg->counts[i].what, what) == 0) {
      lg->counts[i].n++;
      return;
    }
  }
  size_t i = lg->n_counts < LOADGEN_MAX_COUNTS ? lg->n_counts++ : LOADGEN_MAX_COUNTS - 1;
  snprintf(lg->counts[i].what, sizeof lg->counts[i].what, "%s", what);
  lg->counts[i].n++;
}

void loadgen_count_error(loadgen *lg, const char *what) {
  pthread_mutex_lock(&lg->mu);
  loadgen_count_locked(lg, what);
  pthread_mutex_unlock(&lg->mu);
}

/* ---- Set-up ---------------------------------------------------------------------------------- */

static status_code client_open(rpc_client **out, const shop_cfg *cfg, const char *url, char *errbuf,
                               size_t errlen) {
  rpc_client_opts co;
  rpc_client_opts_from_cfg(&co, cfg, url, "shop-loadgen");
  status_code st = rpc_client_create(out, &co, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!rpc_client_wait_connected(*out, 10000)) {
    status_seterr(errbuf, errlen, "no connection to %s within 10 s", url);
    return STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}

status_code loadgen_call(rpc_client *c, const ProtobufCServiceDescriptor *d, const char *method,
                         const ProtobufCMessage *in, ProtobufCMessage **out, const char *token,
                         const char *key, int timeout_ms, char *errbuf, size_t errlen) {
  rpc_call_opts co = {.timeout_ms = timeout_ms, .token = token, .idempotency_key = key};
  rpc_status st;
  status_code code = rpc_client_call_sync(c, d, method, in, out, &co, &st);
  if (code != STATUS_OK)
    status_seterr(errbuf, errlen, "%s: %s: %s", method, status_name(code), st.message);
  rpc_status_clear(&st);
  return code;
}

static status_code setup_accounts(loadgen *lg, char *errbuf, size_t errlen) {
  for (int i = 0; i < lg->n_accounts; i++) {
    account *a = &lg->accounts[i];
    a->lg = lg;
    pthread_mutex_init(&a->mu, NULL);
    cond_init_mono(&a->cv);
    if (lg->o.register_users) {
      char email[128], name[64], password[64], key[96];
      snprintf(email, sizeof email, "loadgen-%s-%d@load.test", lg->run, i);
      snprintf(name, sizeof name, "Load %d", i);
      snprintf(password, sizeof password, "lg-%s-secret-%d", lg->run, i);
      snprintf(key, sizeof key, "%s-register-%d", lg->run, i);
      Shop__User__V1__RegisterUserRequest req = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
      req.email = email;
      req.name = name;
      req.password = password;
      ProtobufCMessage *out = NULL;
      status_code st =
          loadgen_call(lg->user_cmd, &shop__user__v1__user_command_service__descriptor,
                       "RegisterUser", &req.base, &out, NULL, key, 20000, errbuf, errlen);
      if (st != STATUS_OK) return st;
      snprintf(a->user_id, sizeof a->user_id, "%s",
               ((Shop__User__V1__RegisterUserResponse *)out)->user_id);
      protobuf_c_message_free_unpacked(out, NULL);
    } else {
      events_uuid_v7(a->user_id);
    }
    status_code st = auth_token_sign(lg->keys, a->user_id, AUTH_ROLE_CUSTOMER, 0, a->token,
                                     sizeof a->token, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

static status_code setup_products(loadgen *lg, char *errbuf, size_t errlen) {
  for (int i = 0; i < lg->n_products; i++) {
    char sku[64], name[64], key[96];
    snprintf(sku, sizeof sku, "%s%d", loadgen_sku_prefix(lg), i);
    snprintf(name, sizeof name, "Load item %d", i);
    snprintf(key, sizeof key, "%s-product-%d", lg->run, i);
    Shop__Product__V1__ProductDetails det = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
    det.name = name;
    det.description = "A product the load generator orders";
    det.category = "loadgen";
    Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
    price.units = 100 + i;
    price.currency = lg->o.cfg->catalog.currency;
    Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
    req.sku = sku;
    req.details = &det;
    req.price = &price;
    req.initial_stock = LOADGEN_STOCK;
    ProtobufCMessage *out = NULL;
    status_code st =
        loadgen_call(lg->product_cmd, &shop__product__v1__product_command_service__descriptor,
                     "CreateProduct", &req.base, &out, lg->admin_token, key, 20000, errbuf, errlen);
    if (st != STATUS_OK) return st;
    Shop__Product__V1__CreateProductResponse *r = (Shop__Product__V1__CreateProductResponse *)out;
    snprintf(lg->products[i], sizeof lg->products[i], "%s", r->product_id);
    /* Read it back once product-query has it: CreateOrder asks there. */
    Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
    rc.token = r->consistency;
    rc.wait_ms = 15000;
    Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
    g.product_id = lg->products[i];
    g.consistency = &rc;
    ProtobufCMessage *gout = NULL;
    st = loadgen_call(lg->product_query, &shop__product__v1__product_query_service__descriptor,
                      "GetProduct", &g.base, &gout, NULL, NULL, 20000, errbuf, errlen);
    protobuf_c_message_free_unpacked(out, NULL);
    if (gout != NULL) protobuf_c_message_free_unpacked(gout, NULL);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

status_code loadgen_setup(loadgen **out, const loadgen_opts *opts, char *errbuf, size_t errlen) {
  *out = NULL;
  loadgen_opts o = *opts;
  if (o.no_watch) o.no_wait = true;
  if (o.warmup_s < 0) o.warmup_s = 3;
  if (o.duration_s <= 0) o.duration_s = 10;
  if (o.drain_s <= 0) o.drain_s = 30;
  if (o.products <= 0) o.products = 20;
  if (o.lines <= 0) o.lines = 2;
  if (o.senders <= 0) o.senders = 64;
  if (o.timeout_ms <= 0) o.timeout_ms = 10000;
  int conc = o.mode == LOADGEN_CLOSED ? o.customers : o.senders;
  if (o.accounts <= 0) o.accounts = conc < 16 ? conc : 16;
  if (o.cfg == NULL || (o.mode == LOADGEN_CLOSED && o.customers <= 0) ||
      (o.mode == LOADGEN_OPEN && o.rate <= 0) || o.lines > o.products || o.lines > 100 ||
      o.accounts < 1 || o.accounts > LG_ACCOUNTS_MAX) {
    status_seterr(errbuf, errlen,
                  "bad options: a rate or customers > 0, lines <= products and <= 100, "
                  "1..%d accounts",
                  LG_ACCOUNTS_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  loadgen *lg = calloc(1, sizeof *lg);
  if (lg == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  lg->o = o;
  pthread_mutex_init(&lg->mu, NULL);
  pthread_mutex_init(&lg->qmu, NULL);
  cond_init_mono(&lg->qcv);
  /* A run id keeps SKUs, e-mail addresses and keys apart between runs. */
  char uuid[EVENTS_ID_SIZE];
  events_uuid_v7(uuid);
  snprintf(lg->run, sizeof lg->run, "%.8s%.4s", uuid + 24, uuid + 9);
  snprintf(lg->sku_prefix, sizeof lg->sku_prefix, "LG-%s-", lg->run);
  lg->n_products = o.products;
  lg->n_accounts = o.accounts;
  lg->products = calloc((size_t)o.products, sizeof *lg->products);
  lg->accounts = calloc((size_t)o.accounts, sizeof *lg->accounts);
  if (lg->products == NULL || lg->accounts == NULL) {
    free(lg->products);
    free(lg->accounts);
    free(lg);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *out = lg;
  const shop_cfg *cfg = o.cfg;
  status_code st = auth_keys_from_cfg(&lg->keys, cfg, errbuf, errlen);
  if (st != STATUS_OK) return st;
  char admin[EVENTS_ID_SIZE];
  events_uuid_v7(admin);
  st = auth_token_sign(lg->keys, admin, AUTH_ROLE_ADMIN, 0, lg->admin_token, sizeof lg->admin_token,
                       errbuf, errlen);
  if (st == STATUS_OK)
    st = client_open(&lg->order_cmd, cfg, cfg->endpoints.order_command, errbuf, errlen);
  if (st == STATUS_OK && !o.no_watch)
    st = client_open(&lg->order_query, cfg, cfg->endpoints.order_query, errbuf, errlen);
  if (st == STATUS_OK)
    st = client_open(&lg->product_cmd, cfg, cfg->endpoints.product_command, errbuf, errlen);
  if (st == STATUS_OK)
    st = client_open(&lg->product_query, cfg, cfg->endpoints.product_query, errbuf, errlen);
  if (st == STATUS_OK && o.register_users)
    st = client_open(&lg->user_cmd, cfg, cfg->endpoints.user_command, errbuf, errlen);
  if (st == STATUS_OK) st = setup_accounts(lg, errbuf, errlen);
  if (st == STATUS_OK) st = setup_products(lg, errbuf, errlen);
  return st;
}

const char *loadgen_sku_prefix(const loadgen *lg) { return lg->sku_prefix; }

void loadgen_destroy(loadgen *lg) {
  if (lg == NULL) return;
  rpc_client_destroy(lg->order_cmd);
  rpc_client_destroy(lg->order_query);
  rpc_client_destroy(lg->product_cmd);
  rpc_client_destroy(lg->product_query);
  rpc_client_destroy(lg->user_cmd);
  auth_keys_destroy(lg->keys);
  for (int i = 0; i < lg->n_accounts; i++) {
    account *a = &lg->accounts[i];
    if (a->lg == NULL) continue;
    free(a->open);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
  }
  free(lg->accounts);
  free(lg->products);
  free(lg->rpc_lat.v);
  free(lg->done_lat.v);
  free(lg->queue);
  pthread_mutex_destroy(&lg->mu);
  pthread_mutex_destroy(&lg->qmu);
  pthread_cond_destroy(&lg->qcv);
  free(lg);
}

/* ---- The run ------------------------------------------------------------------------------- */

status_code loadgen_run(loadgen *lg, loadgen_report *rep, char *errbuf, size_t errlen) {
  memset(rep, 0, sizeof *rep);
  int64_t t0 = loadgen_now_ns();
  lg->window_start_ns = t0 + (int64_t)(lg->o.warmup_s * 1e9);
  lg->window_end_ns = lg->window_start_ns + (int64_t)(lg->o.duration_s * 1e9);
  status_code rc = STATUS_OK;
  int started_pollers = 0;
  for (; !lg->o.no_watch && started_pollers < lg->n_accounts; started_pollers++) {
    account *a = &lg->accounts[started_pollers];
    if (pthread_create(&a->poller, NULL, loadgen_poller_main, a) != 0) break;
  }
  /* Processes whose CPU the window is charged with, and what it cost the
   * stack (MariaDB's and the programs' counters). */
  loadgen_cpu cpu0[LOADGEN_MAX_CPU];
  loadgen_costs costs0 = {0}, costs1 = {0};
  /* MariaDB's counters need only the config; the programs' (their
   * /metrics and CPU) come from the run folder's pid files. */
  db_conn *status_db = NULL;
  char status_err[256];
  if (loadgen_costs_open(&status_db, lg->o.cfg, status_err, sizeof status_err) != STATUS_OK)
    fprintf(stderr, "shop-loadgen: no MariaDB counters: %s\n", status_err);
  size_t n_cpu = 0;
  snprintf(rep->cpu[0].name, sizeof rep->cpu[0].name, "shop-loadgen");
  rep->cpu[0].pid = (long)getpid();
  n_cpu = 1;
  if (lg->o.run_dir != NULL)
    n_cpu += loadgen_processes(lg->o.run_dir, rep->cpu + 1, LOADGEN_MAX_CPU - 1);

  customer *cs = NULL;
  pthread_t *senders = NULL;
  int n_threads = 0;
  if (lg->o.mode == LOADGEN_CLOSED) {
    cs = calloc((size_t)lg->o.customers, sizeof *cs);
    for (; cs != NULL && n_threads < lg->o.customers; n_threads++) {
      customer *c = &cs[n_threads];
      c->lg = lg;
      c->index = n_threads;
      pthread_mutex_init(&c->s.mu, NULL);
      cond_init_mono(&c->s.cv);
      if (pthread_create(&c->thread, NULL, loadgen_customer_main, c) != 0) {
        pthread_mutex_destroy(&c->s.mu);
        pthread_cond_destroy(&c->s.cv);
        break;
      }
    }
  } else {
    lg->qcap = (size_t)(lg->o.rate * 10) + 16; /* ten seconds of orders */
    lg->queue = calloc(lg->qcap, sizeof *lg->queue);
    senders = calloc((size_t)lg->o.senders, sizeof *senders);
    for (; lg->queue != NULL && senders != NULL && n_threads < lg->o.senders; n_threads++)
      if (pthread_create(&senders[n_threads], NULL, loadgen_sender_main, lg) != 0) break;
  }
  if (n_threads == 0) {
    status_seterr(errbuf, errlen, "could not start threads");
    rc = STATUS_RESOURCE_EXHAUSTED;
  }

  if (rc == STATUS_OK) {
    if (lg->o.mode == LOADGEN_OPEN) {
      loadgen_schedule(lg, t0, lg->window_start_ns);
      for (size_t i = 0; i < n_cpu; i++)
        cpu0[i] = rep->cpu[i], cpu0[i].seconds = loadgen_cpu_seconds(rep->cpu[i].pid);
      loadgen_costs_read(status_db, rep->cpu, n_cpu, &costs0);
      loadgen_schedule(lg, lg->window_start_ns, lg->window_end_ns);
    } else {
      loadgen_sleep_until_ns(lg->window_start_ns);
      for (size_t i = 0; i < n_cpu; i++)
        cpu0[i] = rep->cpu[i], cpu0[i].seconds = loadgen_cpu_seconds(rep->cpu[i].pid);
      loadgen_costs_read(status_db, rep->cpu, n_cpu, &costs0);
      loadgen_sleep_until_ns(lg->window_end_ns);
    }
    for (size_t i = 0; i < n_cpu; i++) {
      double s = loadgen_cpu_seconds(rep->cpu[i].pid);
      rep->cpu[i].seconds = s >= 0 && cpu0[i].seconds >= 0 ? s - cpu0[i].seconds : -1;
    }
    rep->n_cpu = n_cpu;
    loadgen_costs_read(status_db, rep->cpu, n_cpu, &costs1);
    loadgen_costs_delta(&costs1, &costs0, &rep->costs);
  }
  db_close(status_db);
  atomic_store(&lg->stop_load, true);
  pthread_mutex_lock(&lg->qmu);
  lg->qclosed = true;
  pthread_cond_broadcast(&lg->qcv);
  pthread_mutex_unlock(&lg->qmu);
  if (senders != NULL)
    for (int i = 0; i < n_threads; i++) pthread_join(senders[i], NULL);

  /* Drain: the window's orders settle, or the time is up. */
  int64_t drain_until = loadgen_now_ns() + (int64_t)(lg->o.drain_s * 1e9);
  for (;;) {
    pthread_mutex_lock(&lg->mu);
    int64_t open = lg->open_in_window;
    pthread_mutex_unlock(&lg->mu);
    if (open <= 0 || loadgen_now_ns() >= drain_until) break;
    loadgen_sleep_ms(20);
  }
  atomic_store(&lg->stop_pollers, true);
  for (int i = 0; i < started_pollers; i++) pthread_join(lg->accounts[i].poller, NULL);
  /* Customers blocked on an order that never settled wake on stop_pollers
   * within their wait; signal them so they need not. */
  if (cs != NULL) {
    for (int i = 0; i < n_threads; i++) loadgen_slot_settle(&cs[i].s);
    for (int i = 0; i < n_threads; i++) {
      pthread_join(cs[i].thread, NULL);
      pthread_mutex_destroy(&cs[i].s.mu);
      pthread_cond_destroy(&cs[i].s.cv);
    }
  }
  free(cs);
  free(senders);

  pthread_mutex_lock(&lg->mu);
  if (lg->open_in_window > 0) {
    for (int64_t i = 0; i < lg->open_in_window; i++) loadgen_count_locked(lg, "incomplete");
  }
  rep->mode = lg->o.mode;
  rep->rate = lg->o.rate;
  rep->customers = lg->o.customers;
  rep->no_wait = lg->o.no_wait;
  rep->no_watch = lg->o.no_watch;
  rep->accounts = lg->n_accounts;
  rep->window_s = lg->o.duration_s;
  rep->sent = lg->sent;
  rep->accepted = lg->accepted;
  rep->completed = lg->completed;
  rep->failed = lg->failed;
  rep->accepted_per_s = (double)lg->accepted / lg->o.duration_s;
  rep->completed_per_s = (double)lg->completed / lg->o.duration_s;
  rep->rpc = lat_summary(&lg->rpc_lat);
  rep->completion = lat_summary(&lg->done_lat);
  rep->n_counts = lg->n_counts;
  memcpy(rep->counts, lg->counts, sizeof rep->counts);
  rep->polls = lg->polls;
  pthread_mutex_unlock(&lg->mu);
  return rc;
}
