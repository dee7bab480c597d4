/* The load generator: set-up, load, completion watching, report. See
 * loadgen.h. */
#include "loadgen/loadgen.h"

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

#define LG_ACCOUNTS_MAX 256
#define LG_PAGE_MAX 500

/* ---- Small helpers ------------------------------------------------------------------------ */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until_ns(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void abs_after_ms(struct timespec *ts, int ms) {
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

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, errlen, fmt, ap);
  va_end(ap);
}

/* A growable array of latencies in milliseconds. */
typedef struct lat_vec {
  double *v;
  size_t n, cap;
} lat_vec;

static void lat_push(lat_vec *l, double ms) {
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

/* A closed-loop slot waiting for its order (no_wait off). */
typedef struct slot {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done; /* 0 waiting, 1 settled */
} slot;

/* An accepted order not yet seen settled. */
typedef struct open_order {
  char id[EVENTS_ID_SIZE];
  int64_t accepted_ns;
  int64_t seq; /* the account's count of accepted orders when it was added */
  bool in_window;
  slot *waiter; /* may be NULL */
} open_order;

typedef struct account {
  char user_id[AUTH_SUB_MAX + 1];
  char token[AUTH_TOKEN_MAX];
  pthread_mutex_t mu;
  pthread_cond_t cv; /* a new open order */
  open_order *open;
  size_t n_open, cap_open;
  int64_t accepted; /* orders accepted for this account so far */
  int in_flight;    /* CreateOrder calls under way */
  pthread_t poller;
  struct loadgen *lg;
} account;

struct loadgen {
  loadgen_opts o;
  rpc_client *order_cmd, *order_query, *product_cmd, *product_query, *user_cmd;
  auth_keys *keys;
  char run[40];
  char sku_prefix[48];
  char admin_token[AUTH_TOKEN_MAX];
  char (*products)[EVENTS_ID_SIZE];
  int n_products;
  account *accounts;
  int n_accounts;

  /* The run. */
  atomic_bool stop_load, stop_pollers;
  atomic_llong orders_sent; /* numbering of idempotency keys and accounts (open loop) */
  int64_t window_start_ns, window_end_ns;
  pthread_mutex_t mu; /* guards what follows */
  lat_vec rpc_lat, done_lat;
  int64_t sent, accepted, completed, failed, polls;
  loadgen_count counts[LOADGEN_MAX_COUNTS];
  size_t n_counts;
  int64_t open_in_window; /* accepted in the window, not yet settled */

  /* Open loop: due times waiting for a sender. */
  pthread_mutex_t qmu;
  pthread_cond_t qcv;
  int64_t *queue;
  size_t qcap, qhead, qlen;
  bool qclosed;
};

static bool in_window(const loadgen *lg, int64_t t) {
  return t >= lg->window_start_ns && t < lg->window_end_ns;
}

/* Counts one error (lg->mu held). */
static void count_locked(loadgen *lg, const char *what) {
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

static void count_error(loadgen *lg, const char *what) {
  pthread_mutex_lock(&lg->mu);
  count_locked(lg, what);
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
    seterr(errbuf, errlen, "no connection to %s within 10 s", url);
    return STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}

static status_code call(rpc_client *c, const ProtobufCServiceDescriptor *d, const char *method,
                        const ProtobufCMessage *in, ProtobufCMessage **out, const char *token,
                        const char *key, int timeout_ms, char *errbuf, size_t errlen) {
  rpc_call_opts co = {.timeout_ms = timeout_ms, .token = token, .idempotency_key = key};
  rpc_status st;
  status_code code = rpc_client_call_sync(c, d, method, in, out, &co, &st);
  if (code != STATUS_OK)
    seterr(errbuf, errlen, "%s: %s: %s", method, status_name(code), st.message);
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
      status_code st = call(lg->user_cmd, &shop__user__v1__user_command_service__descriptor,
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
        call(lg->product_cmd, &shop__product__v1__product_command_service__descriptor,
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
    st = call(lg->product_query, &shop__product__v1__product_query_service__descriptor,
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
    seterr(errbuf, errlen,
           "bad options: a rate or customers > 0, lines <= products and <= 100, "
           "1..%d accounts",
           LG_ACCOUNTS_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  loadgen *lg = calloc(1, sizeof *lg);
  if (lg == NULL) {
    seterr(errbuf, errlen, "out of memory");
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
    seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *out = lg;
  const shop_cfg *cfg = o.cfg;
  status_code st = auth_keys_create(&lg->keys, cfg->auth.jwt_key,
                                    cfg->auth.jwt_key != NULL ? strlen(cfg->auth.jwt_key) : 0,
                                    cfg->auth.issuer, cfg->auth.access_ttl_s, errbuf, errlen);
  if (st != STATUS_OK) return st;
  char admin[EVENTS_ID_SIZE];
  events_uuid_v7(admin);
  st = auth_token_sign(lg->keys, admin, AUTH_ROLE_ADMIN, 0, lg->admin_token, sizeof lg->admin_token,
                       errbuf, errlen);
  if (st == STATUS_OK)
    st = client_open(&lg->order_cmd, cfg, cfg->endpoints.order_command, errbuf, errlen);
  if (st == STATUS_OK)
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

/* ---- Completion ------------------------------------------------------------------------------ */

static void slot_settle(slot *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->mu);
  s->done = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Removes open order i of a (a->mu held) and records how it ended. */
static void settle_locked(account *a, size_t i, int status, int cancel_reason, int64_t seen_ns) {
  loadgen *lg = a->lg;
  open_order o = a->open[i];
  a->open[i] = a->open[--a->n_open]; /* order among open orders is not kept */
  if (o.in_window) {
    pthread_mutex_lock(&lg->mu);
    if (status == SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED) {
      lg->completed++;
      lat_push(&lg->done_lat, (double)(seen_ns - o.accepted_ns) / 1e6);
    } else {
      char what[48];
      const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
          &shop__order__v1__cancel_reason__descriptor, cancel_reason);
      const char *name = v != NULL ? v->name : "?";
      if (strncmp(name, "CANCEL_REASON_", 14) == 0) name += 14;
      snprintf(what, sizeof what, "order CANCELLED: %s", name);
      count_locked(lg, what);
    }
    lg->open_in_window--;
    pthread_mutex_unlock(&lg->mu);
  }
  slot_settle(o.waiter);
}

static void settle_page(account *a, const Shop__Order__V1__ListOrdersByCustomerResponse *r,
                        int64_t seen_ns) {
  pthread_mutex_lock(&a->mu);
  for (size_t k = 0; k < r->n_orders; k++) {
    const Shop__Order__V1__Order *o = r->orders[k];
    if (o->status != SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED &&
        o->status != SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED)
      continue;
    for (size_t i = 0; i < a->n_open; i++) {
      if (strcmp(a->open[i].id, o->order_id) == 0) {
        settle_locked(a, i, o->status, o->cancel_reason, seen_ns);
        break;
      }
    }
  }
  pthread_mutex_unlock(&a->mu);
}

/* One list call: with a token on the oldest open order when oldest is not
 * NULL. Returns the call's code; settles what the page shows. */
static status_code poll_once(account *a, const char *oldest, int page) {
  loadgen *lg = a->lg;
  Shop__Common__V1__ConsistencyToken tok = SHOP__COMMON__V1__CONSISTENCY_TOKEN__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  Shop__Common__V1__PageRequest pr = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  Shop__Order__V1__ListOrdersByCustomerRequest req =
      SHOP__ORDER__V1__LIST_ORDERS_BY_CUSTOMER_REQUEST__INIT;
  pr.page_size = page;
  req.page = &pr;
  if (oldest != NULL) {
    tok.aggregate_id = (char *)oldest;
    tok.version = 2; /* OrderConfirmed or OrderCancelled */
    rc.token = &tok;
    rc.wait_ms = LOADGEN_POLL_WAIT_MS;
    req.consistency = &rc;
  }
  rpc_call_opts co = {.timeout_ms = LOADGEN_POLL_WAIT_MS + 5000, .token = a->token};
  ProtobufCMessage *out = NULL;
  rpc_status st;
  status_code code =
      rpc_client_call_sync(lg->order_query, &shop__order__v1__order_query_service__descriptor,
                           "ListOrdersByCustomer", &req.base, &out, &co, &st);
  int64_t t = now_ns();
  if (in_window(lg, t)) {
    pthread_mutex_lock(&lg->mu);
    lg->polls++;
    pthread_mutex_unlock(&lg->mu);
  }
  if (code == STATUS_OK) {
    settle_page(a, (Shop__Order__V1__ListOrdersByCustomerResponse *)out, t);
    protobuf_c_message_free_unpacked(out, NULL);
  } else if (code != STATUS_FAILED_PRECONDITION) {
    char what[48];
    snprintf(what, sizeof what, "poll %s", status_name(code));
    count_error(lg, what);
  }
  rpc_status_clear(&st);
  return code;
}

static void *poller_main(void *arg) {
  account *a = arg;
  loadgen *lg = a->lg;
  while (!atomic_load(&lg->stop_pollers)) {
    pthread_mutex_lock(&a->mu);
    if (a->n_open == 0) {
      struct timespec until;
      abs_after_ms(&until, 50);
      pthread_cond_timedwait(&a->cv, &a->mu, &until);
      pthread_mutex_unlock(&a->mu);
      continue;
    }
    /* The oldest open order, and a page that reaches back to it. */
    size_t oldest = 0;
    for (size_t i = 1; i < a->n_open; i++)
      if (a->open[i].seq < a->open[oldest].seq) oldest = i;
    char id[EVENTS_ID_SIZE];
    memcpy(id, a->open[oldest].id, sizeof id);
    int64_t page = a->accepted - a->open[oldest].seq + a->in_flight + 2;
    pthread_mutex_unlock(&a->mu);
    if (page > LG_PAGE_MAX) page = LG_PAGE_MAX;
    status_code code = poll_once(a, id, (int)page);
    if (code == STATUS_FAILED_PRECONDITION) {
      /* The oldest is not done; others may be. */
      pthread_mutex_lock(&a->mu);
      bool others = a->n_open > 1;
      pthread_mutex_unlock(&a->mu);
      code = others ? poll_once(a, NULL, (int)page) : STATUS_OK;
    }
    if (code != STATUS_OK) sleep_ms(20);
  }
  return NULL;
}

/* ---- Placing orders ------------------------------------------------------------------------- */

/* Places order number n for account a; due_ns is when it was due (open
 * loop) or sent (closed loop). waiter (may be NULL) is settled when the
 * order is. Returns true when it was accepted. */
static bool place(loadgen *lg, int64_t n, account *a, int64_t due_ns, slot *waiter) {
  Shop__Order__V1__CreateOrderLine lines[100];
  Shop__Order__V1__CreateOrderLine *lp[100];
  int first = (int)(n % lg->n_products);
  for (int i = 0; i < lg->o.lines; i++) {
    shop__order__v1__create_order_line__init(&lines[i]);
    lines[i].product_id = lg->products[(first + i) % lg->n_products];
    lines[i].quantity = 1;
    lp[i] = &lines[i];
  }
  Shop__Order__V1__ShippingAddress addr = SHOP__ORDER__V1__SHIPPING_ADDRESS__INIT;
  addr.recipient = "Load Generator";
  addr.line1 = "1 Benchmark Street";
  addr.city = "Paris";
  addr.postal_code = "75001";
  addr.country = "FR";
  Shop__Order__V1__CreateOrderRequest req = SHOP__ORDER__V1__CREATE_ORDER_REQUEST__INIT;
  req.n_lines = (size_t)lg->o.lines;
  req.lines = lp;
  req.payment_token = "tok_visa";
  req.shipping_address = &addr;
  char key[96];
  snprintf(key, sizeof key, "%s-%lld", lg->run, (long long)n);

  bool counted = in_window(lg, due_ns);
  pthread_mutex_lock(&a->mu);
  a->in_flight++;
  pthread_mutex_unlock(&a->mu);
  rpc_call_opts co = {.timeout_ms = lg->o.timeout_ms, .token = a->token, .idempotency_key = key};
  ProtobufCMessage *out = NULL;
  rpc_status st;
  status_code code =
      rpc_client_call_sync(lg->order_cmd, &shop__order__v1__order_command_service__descriptor,
                           "CreateOrder", &req.base, &out, &co, &st);
  int64_t t = now_ns();
  rpc_status_clear(&st);
  pthread_mutex_lock(&lg->mu);
  if (counted) {
    lg->sent++;
    if (code == STATUS_OK) {
      lg->accepted++;
      lg->open_in_window++;
      lat_push(&lg->rpc_lat, (double)(t - due_ns) / 1e6);
    } else {
      count_locked(lg, status_name(code));
    }
  }
  pthread_mutex_unlock(&lg->mu);

  pthread_mutex_lock(&a->mu);
  a->in_flight--;
  if (code == STATUS_OK) {
    if (a->n_open == a->cap_open) {
      size_t cap = a->cap_open ? 2 * a->cap_open : 64;
      open_order *v = realloc(a->open, cap * sizeof *v);
      if (v != NULL) {
        a->open = v;
        a->cap_open = cap;
      }
    }
    if (a->n_open < a->cap_open) {
      open_order *o = &a->open[a->n_open++];
      snprintf(o->id, sizeof o->id, "%s", ((Shop__Order__V1__CreateOrderResponse *)out)->order_id);
      o->accepted_ns = t;
      o->seq = a->accepted;
      o->in_window = counted;
      o->waiter = waiter;
      pthread_cond_signal(&a->cv);
    } else if (counted) {
      /* Out of memory: the order cannot be watched. */
      pthread_mutex_lock(&lg->mu);
      lg->open_in_window--;
      count_locked(lg, "not watched (out of memory)");
      pthread_mutex_unlock(&lg->mu);
      code = STATUS_RESOURCE_EXHAUSTED;
    }
    a->accepted++;
  }
  pthread_mutex_unlock(&a->mu);
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
  return code == STATUS_OK;
}

typedef struct customer {
  loadgen *lg;
  int index;
  slot s;
  pthread_t thread;
} customer;

static void *customer_main(void *arg) {
  customer *c = arg;
  loadgen *lg = c->lg;
  account *a = &lg->accounts[c->index % lg->n_accounts];
  while (!atomic_load(&lg->stop_load)) {
    int64_t n = atomic_fetch_add(&lg->orders_sent, 1);
    bool wait = !lg->o.no_wait;
    if (wait) {
      pthread_mutex_lock(&c->s.mu);
      c->s.done = 0;
      pthread_mutex_unlock(&c->s.mu);
    }
    if (!place(lg, n, a, now_ns(), wait ? &c->s : NULL)) {
      sleep_ms(20); /* an error: no busy loop against a failing service */
      continue;
    }
    if (!wait) continue;
    /* Wait for completion; give up on it (it stays watched) at the drain
     * time so the loop goes on. */
    struct timespec until;
    abs_after_ms(&until, (int)(lg->o.drain_s * 1000));
    pthread_mutex_lock(&c->s.mu);
    while (c->s.done == 0 && !atomic_load(&lg->stop_pollers)) {
      if (pthread_cond_timedwait(&c->s.cv, &c->s.mu, &until) == ETIMEDOUT) break;
    }
    bool settled = c->s.done != 0;
    pthread_mutex_unlock(&c->s.mu);
    /* Stuck or stopping: this customer stops (its slot stays valid until
     * the join, so a late settlement is harmless). */
    if (!settled) break;
  }
  return NULL;
}

static void *sender_main(void *arg) {
  loadgen *lg = arg;
  for (;;) {
    pthread_mutex_lock(&lg->qmu);
    while (lg->qlen == 0 && !lg->qclosed) pthread_cond_wait(&lg->qcv, &lg->qmu);
    if (lg->qlen == 0) {
      pthread_mutex_unlock(&lg->qmu);
      return NULL;
    }
    int64_t due = lg->queue[lg->qhead];
    lg->qhead = (lg->qhead + 1) % lg->qcap;
    lg->qlen--;
    pthread_mutex_unlock(&lg->qmu);
    int64_t n = atomic_fetch_add(&lg->orders_sent, 1);
    place(lg, n, &lg->accounts[n % lg->n_accounts], due, NULL);
  }
}

/* Open loop: orders due at fixed intervals until end_ns. */
static void schedule(loadgen *lg, int64_t start_ns, int64_t end_ns) {
  double step = 1e9 / lg->o.rate;
  for (int64_t k = 0;; k++) {
    int64_t due = start_ns + (int64_t)((double)k * step);
    if (due >= end_ns) break;
    sleep_until_ns(due);
    pthread_mutex_lock(&lg->qmu);
    if (lg->qlen < lg->qcap) {
      lg->queue[(lg->qhead + lg->qlen) % lg->qcap] = due;
      lg->qlen++;
      pthread_cond_signal(&lg->qcv);
      pthread_mutex_unlock(&lg->qmu);
    } else {
      pthread_mutex_unlock(&lg->qmu);
      if (in_window(lg, due)) {
        pthread_mutex_lock(&lg->mu);
        lg->sent++;
        count_locked(lg, "not sent (client queue full)");
        pthread_mutex_unlock(&lg->mu);
      }
    }
  }
}

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
    n++;
  }
  return n;
}

/* ---- The run ------------------------------------------------------------------------------- */

status_code loadgen_run(loadgen *lg, loadgen_report *rep, char *errbuf, size_t errlen) {
  memset(rep, 0, sizeof *rep);
  int64_t t0 = now_ns();
  lg->window_start_ns = t0 + (int64_t)(lg->o.warmup_s * 1e9);
  lg->window_end_ns = lg->window_start_ns + (int64_t)(lg->o.duration_s * 1e9);
  status_code rc = STATUS_OK;
  int started_pollers = 0;
  for (; started_pollers < lg->n_accounts; started_pollers++) {
    account *a = &lg->accounts[started_pollers];
    if (pthread_create(&a->poller, NULL, poller_main, a) != 0) break;
  }
  /* Processes whose CPU the window is charged with. */
  loadgen_cpu cpu0[LOADGEN_MAX_CPU];
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
      if (pthread_create(&c->thread, NULL, customer_main, c) != 0) {
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
      if (pthread_create(&senders[n_threads], NULL, sender_main, lg) != 0) break;
  }
  if (n_threads == 0) {
    seterr(errbuf, errlen, "could not start threads");
    rc = STATUS_RESOURCE_EXHAUSTED;
  }

  if (rc == STATUS_OK) {
    if (lg->o.mode == LOADGEN_OPEN) {
      schedule(lg, t0, lg->window_start_ns);
      for (size_t i = 0; i < n_cpu; i++)
        cpu0[i] = rep->cpu[i], cpu0[i].seconds = loadgen_cpu_seconds(rep->cpu[i].pid);
      schedule(lg, lg->window_start_ns, lg->window_end_ns);
    } else {
      sleep_until_ns(lg->window_start_ns);
      for (size_t i = 0; i < n_cpu; i++)
        cpu0[i] = rep->cpu[i], cpu0[i].seconds = loadgen_cpu_seconds(rep->cpu[i].pid);
      sleep_until_ns(lg->window_end_ns);
    }
    for (size_t i = 0; i < n_cpu; i++) {
      double s = loadgen_cpu_seconds(rep->cpu[i].pid);
      rep->cpu[i].seconds = s >= 0 && cpu0[i].seconds >= 0 ? s - cpu0[i].seconds : -1;
    }
    rep->n_cpu = n_cpu;
  }
  atomic_store(&lg->stop_load, true);
  pthread_mutex_lock(&lg->qmu);
  lg->qclosed = true;
  pthread_cond_broadcast(&lg->qcv);
  pthread_mutex_unlock(&lg->qmu);
  if (senders != NULL)
    for (int i = 0; i < n_threads; i++) pthread_join(senders[i], NULL);

  /* Drain: the window's orders settle, or the time is up. */
  int64_t drain_until = now_ns() + (int64_t)(lg->o.drain_s * 1e9);
  for (;;) {
    pthread_mutex_lock(&lg->mu);
    int64_t open = lg->open_in_window;
    pthread_mutex_unlock(&lg->mu);
    if (open <= 0 || now_ns() >= drain_until) break;
    sleep_ms(20);
  }
  atomic_store(&lg->stop_pollers, true);
  for (int i = 0; i < started_pollers; i++) pthread_join(lg->accounts[i].poller, NULL);
  /* Customers blocked on an order that never settled wake on stop_pollers
   * within their wait; signal them so they need not. */
  if (cs != NULL) {
    for (int i = 0; i < n_threads; i++) slot_settle(&cs[i].s);
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
    for (int64_t i = 0; i < lg->open_in_window; i++) count_locked(lg, "incomplete");
  }
  rep->mode = lg->o.mode;
  rep->rate = lg->o.rate;
  rep->customers = lg->o.customers;
  rep->no_wait = lg->o.no_wait;
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

/* ---- Reports ------------------------------------------------------------------------------- */

void loadgen_report_print(const loadgen_report *r, FILE *f) {
  if (r->mode == LOADGEN_CLOSED)
    fprintf(f, "closed loop: %d customers%s, %d accounts, window %.0f s\n", r->customers,
            r->no_wait ? " (not waiting for completion)" : "", r->accounts, r->window_s);
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
  json_t *o =
      json_pack("{s:s,s:f,s:i,s:b,s:i,s:f,s:I,s:I,s:I,s:I,s:f,s:f,s:o,s:o,s:o,s:I,s:o}", "mode",
                r->mode == LOADGEN_CLOSED ? "closed" : "open", "rate", r->rate, "customers",
                r->customers, "no_wait", r->no_wait, "accounts", r->accounts, "window_s",
                r->window_s, "sent", (json_int_t)r->sent, "accepted", (json_int_t)r->accepted,
                "completed", (json_int_t)r->completed, "errors_total", (json_int_t)r->failed,
                "accepted_per_s", r->accepted_per_s, "completed_per_s", r->completed_per_s,
                "create_order", lat_json(&r->rpc), "completion", lat_json(&r->completion), "errors",
                errors, "polls", (json_int_t)r->polls, "cpu_s", cpu);
  if (o == NULL) return NULL;
  if (extra != NULL) {
    json_t *x = json_loads(extra, 0, NULL);
    if (json_is_object(x)) json_object_update(o, x);
    json_decref(x);
  }
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}
