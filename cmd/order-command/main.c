/* order-command: serves shop.order.v1.OrderCommandService from database
 * shop_order, runs the order saga (consumer group "order-saga" on the
 * payment and inventory topics) and the deadline sweeper, and publishes
 * order events through its outbox.
 *
 *   order-command [--config PATH] [--listen URL]
 *
 * See internal/order/order.h and internal/app/app.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "events/tail.h"
#include "order/order.h"
#include "topology/topology.h"

typedef struct program {
  order_ctx ctx; /* first: the consumer's callbacks take it as their arg */
  order_catalog_rpc *catalog;
  order_catalog_cache *cache;
  events_tail *products; /* product events, for the cache */
  order_sweeper *sweeper;
} program;

/* A record on the product topic: its subject is the product, its sequence
 * the product's version after the event (product/v1/events.proto). */
static void product_changed_cb(const events_record *rec, void *arg) {
  char id[64] = "", seq[24] = "";
  for (size_t i = 0; i < rec->header_count; i++) {
    const events_header *h = &rec->headers[i];
    char *to = strcmp(h->name, "ce_subject") == 0    ? id
               : strcmp(h->name, "ce_sequence") == 0 ? seq
                                                     : NULL;
    size_t cap = to == id ? sizeof id : sizeof seq;
    if (to != NULL && h->len < cap) {
      memcpy(to, h->value, h->len);
      to[h->len] = '\0';
    }
  }
  if (id[0] == '\0' && rec->key_len > 0 && rec->key_len < sizeof id) {
    memcpy(id, rec->key, rec->key_len);
    id[rec->key_len] = '\0';
  }
  if (id[0] != '\0') order_catalog_cache_changed(arg, id, strtoll(seq, NULL, 10));
}

static void following_cb(void *arg) { order_catalog_cache_following(arg); }

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  program *p = arg;
  const shop_cfg *cfg = app_cfg(a);
  const char *cur = cfg->catalog.currency;
  if (strlen(cur) != 3 || cur[0] < 'A' || cur[0] > 'Z' || cur[1] < 'A' || cur[1] > 'Z' ||
      cur[2] < 'A' || cur[2] > 'Z') {
    snprintf(errbuf, errlen, "catalog.currency: must be three upper-case letters");
    return STATUS_INVALID_ARGUMENT;
  }
  status_code st =
      order_catalog_rpc_create(&p->catalog, cfg, app_name(a), app_metrics(a), errbuf, errlen);
  if (st != STATUS_OK) return st;
  st =
      order_catalog_cache_create(&p->cache, order_catalog_rpc_get(p->catalog),
                                 cfg->order.catalog_cache_ms, NULL, app_metrics(a), errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (cfg->order.catalog_cache_ms > 0) {
    st = events_tail_start(&p->products,
                           &(events_tail_opts){.brokers = cfg->kafka.brokers,
                                               .client_id = app_name(a),
                                               .topic = TOPOLOGY_TOPIC_PRODUCT,
                                               .cb = product_changed_cb,
                                               .ready_cb = following_cb,
                                               .arg = p->cache},
                           errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  order_ctx_init(&p->ctx, cfg, app_name(a), app_db(a), app_relay(a),
                 order_catalog_cache_get(p->cache));
  st = order_cmd_register(app_server(a), &p->ctx, errbuf, errlen);
  if (st != STATUS_OK) return st;
  return order_sweeper_start(&p->sweeper, &p->ctx, app_db_params(a), cfg->order.sweep_interval_ms,
                             errbuf, errlen);
}

static void teardown_cb(app *a, void *arg) {
  program *p = arg;
  order_sweeper_stop(p->sweeper);
  p->sweeper = NULL;
  events_tail_stop(p->products);
  p->products = NULL;
  order_catalog_cache_destroy(p->cache);
  p->cache = NULL;
  order_catalog_rpc_destroy(p->catalog);
  p->catalog = NULL;
  order_ctx_destroy(&p->ctx);
}

int main(int argc, char **argv) {
  static program p;
  const app_migrations migs[] = {{"order", order_migrations, order_migrations_count}};
  const app_spec spec = {
      .name = "order-command",
      .db_account = "shop_order",
      .migrations = migs,
      .n_migrations = 1,
      .relay = true,
      .consumer = &order_saga_consumer,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .arg = &p,
  };
  return app_main(&spec, argc, argv);
}
