/* The load generator's orders: placing them (closed and open loop) and
 * watching them complete (loadgen_internal.h). */
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

/* ---- Completion ------------------------------------------------------------------------------ */

void loadgen_slot_settle(slot *s) {
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
      loadgen_lat_push(&lg->done_lat, (double)(seen_ns - o.accepted_ns) / 1e6);
    } else {
      char what[48];
      const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
          &shop__order__v1__cancel_reason__descriptor, cancel_reason);
      const char *name = v != NULL ? v->name : "?";
      if (strncmp(name, "CANCEL_REASON_", 14) == 0) name += 14;
      snprintf(what, sizeof what, "order CANCELLED: %s", name);
      loadgen_count_locked(lg, what);
    }
    lg->open_in_window--;
    pthread_mutex_unlock(&lg->mu);
  }
  loadgen_slot_settle(o.waiter);
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
  int64_t t = loadgen_now_ns();
  if (loadgen_in_window(lg, t)) {
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
    loadgen_count_error(lg, what);
  }
  rpc_status_clear(&st);
  return code;
}

void *loadgen_poller_main(void *arg) {
  account *a = arg;
  loadgen *lg = a->lg;
  while (!atomic_load(&lg->stop_pollers)) {
    pthread_mutex_lock(&a->mu);
    if (a->n_open == 0) {
      struct timespec until;
      loadgen_abs_after_ms(&until, 50);
      pthread_cond_timedwait(&a->cv, &a->mu, &until);
      pthread_mutex_unlock(&a->mu);
      continue;
    }
    /* The oldest open order, and a page that reaches back to it: the
     * list is by creation time, acceptance numbers orders by their
     * replies, and an order created after the oldest but answered before
     * it was under way at the same time: at most peak_in_flight of them
     * (in_flight at the time of the poll can be fewer). */
    size_t oldest = 0;
    for (size_t i = 1; i < a->n_open; i++)
      if (a->open[i].seq < a->open[oldest].seq) oldest = i;
    char id[EVENTS_ID_SIZE];
    memcpy(id, a->open[oldest].id, sizeof id);
    int64_t page = a->accepted - a->open[oldest].seq + a->peak_in_flight + 2;
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
    if (code != STATUS_OK) loadgen_sleep_ms(20);
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

  bool counted = loadgen_in_window(lg, due_ns);
  pthread_mutex_lock(&a->mu);
  if (++a->in_flight > a->peak_in_flight) a->peak_in_flight = a->in_flight;
  pthread_mutex_unlock(&a->mu);
  rpc_call_opts co = {.timeout_ms = lg->o.timeout_ms, .token = a->token, .idempotency_key = key};
  ProtobufCMessage *out = NULL;
  rpc_status st;
  status_code code =
      rpc_client_call_sync(lg->order_cmd, &shop__order__v1__order_command_service__descriptor,
                           "CreateOrder", &req.base, &out, &co, &st);
  int64_t t = loadgen_now_ns();
  rpc_status_clear(&st);
  pthread_mutex_lock(&lg->mu);
  if (counted) {
    lg->sent++;
    if (code == STATUS_OK) {
      lg->accepted++;
      if (!lg->o.no_watch) lg->open_in_window++;
      loadgen_lat_push(&lg->rpc_lat, (double)(t - due_ns) / 1e6);
    } else {
      loadgen_count_locked(lg, status_name(code));
    }
  }
  pthread_mutex_unlock(&lg->mu);

  pthread_mutex_lock(&a->mu);
  a->in_flight--;
  if (code == STATUS_OK && lg->o.no_watch) {
    /* Not watched: nothing settles it, nobody waits for it. */
  } else if (code == STATUS_OK) {
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
      loadgen_count_locked(lg, "not watched (out of memory)");
      pthread_mutex_unlock(&lg->mu);
      code = STATUS_RESOURCE_EXHAUSTED;
    }
    a->accepted++;
  }
  pthread_mutex_unlock(&a->mu);
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
  return code == STATUS_OK;
}

void *loadgen_customer_main(void *arg) {
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
    if (!place(lg, n, a, loadgen_now_ns(), wait ? &c->s : NULL)) {
      loadgen_sleep_ms(20); /* an error: no busy loop against a failing service */
      continue;
    }
    if (!wait) continue;
    /* Wait for completion; give up on it (it stays watched) at the drain
     * time so the loop goes on. */
    struct timespec until;
    loadgen_abs_after_ms(&until, (int)(lg->o.drain_s * 1000));
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

void *loadgen_sender_main(void *arg) {
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
void loadgen_schedule(loadgen *lg, int64_t start_ns, int64_t end_ns) {
  double step = 1e9 / lg->o.rate;
  for (int64_t k = 0;; k++) {
    int64_t due = start_ns + (int64_t)((double)k * step);
    if (due >= end_ns) break;
    loadgen_sleep_until_ns(due);
    pthread_mutex_lock(&lg->qmu);
    if (lg->qlen < lg->qcap) {
      lg->queue[(lg->qhead + lg->qlen) % lg->qcap] = due;
      lg->qlen++;
      pthread_cond_signal(&lg->qcv);
      pthread_mutex_unlock(&lg->qmu);
    } else {
      pthread_mutex_unlock(&lg->qmu);
      if (loadgen_in_window(lg, due)) {
        pthread_mutex_lock(&lg->mu);
        lg->sent++;
        loadgen_count_locked(lg, "not sent (client queue full)");
        pthread_mutex_unlock(&lg->mu);
      }
    }
  }
}
