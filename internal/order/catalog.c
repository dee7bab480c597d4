/* The catalog as order-command sees it: GetProducts on product-query, one
 * service-to-service call for an order's products that carries the
 * caller's remaining deadline and trace, and the cache in front of it that
 * product events keep honest. See order.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "order/order.h"
#include "shop/product/v1/queries.pb-c.h"

struct order_catalog_rpc {
  rpc_client *client;
};

status_code order_catalog_rpc_create(order_catalog_rpc **out, const shop_cfg *cfg,
                                     const char *caller, metrics_registry *metrics, char *errbuf,
                                     size_t errlen) {
  order_catalog_rpc *c = calloc(1, sizeof *c);
  if (c == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, cfg, cfg->endpoints.product_query, caller);
  o.metrics = metrics;
  status_code st = rpc_client_create(&c->client, &o, errbuf, errlen);
  if (st != STATUS_OK) {
    free(c);
    return st;
  }
  *out = c;
  return STATUS_OK;
}

void order_catalog_rpc_destroy(order_catalog_rpc *c) {
  if (c == NULL) return;
  rpc_client_destroy(c->client);
  free(c);
}

static void product_copy(order_product *out, const Shop__Product__V1__Product *p) {
  out->found = true;
  out->archived = p->archived;
  snprintf(out->sku, sizeof out->sku, "%s", p->sku);
  if (p->details != NULL) snprintf(out->name, sizeof out->name, "%s", p->details->name);
  if (p->price != NULL) {
    out->price_units = p->price->units;
    snprintf(out->currency, sizeof out->currency, "%s", p->price->currency);
  }
  if (p->inventory_rule != NULL)
    out->max_quantity_per_order = p->inventory_rule->max_quantity_per_order;
  out->version = p->version;
}

static status_code get_cb(void *self, const rpc_call *parent, const char *const *ids, size_t n,
                          order_product *out, char *errbuf, size_t errlen) {
  order_catalog_rpc *c = self;
  memset(out, 0, n * sizeof *out);
  Shop__Product__V1__GetProductsRequest req = SHOP__PRODUCT__V1__GET_PRODUCTS_REQUEST__INIT;
  req.n_product_ids = n;
  req.product_ids = (char **)ids;
  rpc_call_opts opts = {.parent = parent};
  rpc_status st;
  ProtobufCMessage *reply = NULL;
  status_code code =
      rpc_client_call_sync(c->client, &shop__product__v1__product_query_service__descriptor,
                           "GetProducts", &req.base, &reply, &opts, &st);
  if (code != STATUS_OK) {
    snprintf(errbuf, errlen, "GetProducts: %s: %s", status_name(code), st.message);
    return code == STATUS_DEADLINE_EXCEEDED ? STATUS_DEADLINE_EXCEEDED : STATUS_UNAVAILABLE;
  }
  const Shop__Product__V1__GetProductsResponse *r = (const void *)reply;
  for (size_t k = 0; k < r->n_products; k++) {
    const Shop__Product__V1__Product *p = r->products[k];
    for (size_t i = 0; i < n; i++) {
      if (out[i].found || strcmp(ids[i], p->product_id) != 0) continue;
      product_copy(&out[i], p);
      break;
    }
  }
  protobuf_c_message_free_unpacked(reply, NULL);
  return STATUS_OK;
}

order_catalog order_catalog_rpc_get(order_catalog_rpc *c) {
  return (order_catalog){.get_cb = get_cb, .self = c};
}

/* ---- The cache (order.h) -------------------------------------------------------------------- */

/* Open addressing over product ids; a slot, once taken, keeps its id (the
 * catalog's products are few; past CACHE_FILL ids nothing new is kept). */
#define CACHE_SLOTS 8192
#define CACHE_FILL (CACHE_SLOTS / 4 * 3)

typedef struct cache_slot {
  char id[37];
  bool held;          /* product holds an answer */
  int64_t fetched_ms; /* when it was asked for */
  int64_t floor;      /* the newest version heard of: older answers are stale */
  order_product product;
} cache_slot;

struct order_catalog_cache {
  order_catalog inner;
  int ttl_ms;
  shop_clock clock;
  bool following; /* order_catalog_cache_following was called */
  pthread_mutex_t mu;
  cache_slot **slots; /* CACHE_SLOTS, each allocated at its id's first use */
  size_t used;
  metrics_series *hits, *misses, *changes;
};

status_code order_catalog_cache_create(order_catalog_cache **out, order_catalog inner, int ttl_ms,
                                       const shop_clock *clock, metrics_registry *metrics,
                                       char *errbuf, size_t errlen) {
  order_catalog_cache *c = calloc(1, sizeof *c);
  if (c == NULL || (c->slots = calloc(CACHE_SLOTS, sizeof *c->slots)) == NULL) {
    free(c);
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  c->inner = inner;
  c->ttl_ms = ttl_ms;
  if (clock != NULL) c->clock = *clock;
  pthread_mutex_init(&c->mu, NULL);
  metrics_family *f = metrics_counter_family(metrics, "shop_order_catalog_lookups_total",
                                             "Products order-command priced from its catalog cache "
                                             "(hit) or asked product-query for (miss).",
                                             (const char *[]){"result", NULL});
  c->hits = metrics_series_get(f, (const char *[]){"hit"});
  c->misses = metrics_series_get(f, (const char *[]){"miss"});
  c->changes = metrics_series_get(
      metrics_counter_family(metrics, "shop_order_catalog_changes_total",
                             "Product events the catalog cache heard of (each makes older "
                             "answers for its product stale).",
                             NULL),
      NULL);
  *out = c;
  return STATUS_OK;
}

void order_catalog_cache_following(order_catalog_cache *c) {
  pthread_mutex_lock(&c->mu);
  c->following = true;
  pthread_mutex_unlock(&c->mu);
}

void order_catalog_cache_destroy(order_catalog_cache *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < CACHE_SLOTS; i++) free(c->slots[i]);
  free(c->slots);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* The slot of id (made when make and there is room), or NULL. Under mu. */
static cache_slot *slot_of(order_catalog_cache *c, const char *id, bool make) {
  if (strlen(id) >= sizeof c->slots[0]->id) return NULL;
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (const char *p = id; *p != '\0'; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  for (size_t k = 0; k < CACHE_SLOTS; k++) {
    size_t i = (size_t)((h + k) % CACHE_SLOTS);
    cache_slot *s = c->slots[i];
    if (s != NULL && strcmp(s->id, id) == 0) return s;
    if (s != NULL) continue;
    if (!make || c->used >= CACHE_FILL || (s = calloc(1, sizeof *s)) == NULL) return NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    c->slots[i] = s;
    c->used++;
    return s;
  }
  return NULL;
}

void order_catalog_cache_changed(order_catalog_cache *c, const char *product_id, int64_t version) {
  pthread_mutex_lock(&c->mu);
  cache_slot *s = slot_of(c, product_id, true);
  if (s != NULL) {
    if (version <= 0) version = s->held ? s->product.version + 1 : s->floor;
    if (version > s->floor) s->floor = version;
    if (s->held && s->product.version < s->floor) s->held = false;
  }
  pthread_mutex_unlock(&c->mu);
  metrics_counter_add(c->changes, 1);
}

static bool fresh(const order_catalog_cache *c, const cache_slot *s, int64_t now) {
  return s != NULL && s->held && s->product.version >= s->floor && now - s->fetched_ms >= 0 &&
         now - s->fetched_ms < c->ttl_ms;
}

static status_code cache_get_cb(void *self, const rpc_call *parent, const char *const *ids,
                                size_t n, order_product *out, char *errbuf, size_t errlen) {
  order_catalog_cache *c = self;
  const char *miss_ids[ORDER_LINES_MAX];
  size_t miss_at[ORDER_LINES_MAX], misses = 0;
  if (n > ORDER_LINES_MAX)
    return c->inner.get_cb(c->inner.self, parent, ids, n, out, errbuf, errlen);
  int64_t asked = clock_now(&c->clock);
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < n; i++) {
    cache_slot *s = c->ttl_ms > 0 ? slot_of(c, ids[i], false) : NULL;
    if (fresh(c, s, asked)) {
      out[i] = s->product;
    } else {
      miss_at[misses] = i;
      miss_ids[misses++] = ids[i];
    }
  }
  pthread_mutex_unlock(&c->mu);
  metrics_counter_add(c->hits, (double)(n - misses));
  metrics_counter_add(c->misses, (double)misses);
  if (misses == 0) return STATUS_OK;
  order_product *got = calloc(misses, sizeof *got);
  if (got == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  status_code st = c->inner.get_cb(c->inner.self, parent, miss_ids, misses, got, errbuf, errlen);
  if (st != STATUS_OK) {
    free(got);
    return st;
  }
  pthread_mutex_lock(&c->mu);
  bool keep = c->ttl_ms > 0 && c->following;
  for (size_t k = 0; k < misses; k++) {
    out[miss_at[k]] = got[k];
    cache_slot *s = keep && got[k].found ? slot_of(c, miss_ids[k], true) : NULL;
    /* Kept only when no newer version was heard of, and timed from
     * before the question: an event that came while it was asked is
     * either in floor or still to come. */
    if (s == NULL || got[k].version < s->floor) continue;
    if (s->held && s->product.version > got[k].version) continue;
    s->product = got[k];
    s->fetched_ms = asked;
    s->held = true;
  }
  pthread_mutex_unlock(&c->mu);
  free(got);
  return STATUS_OK;
}

order_catalog order_catalog_cache_get(order_catalog_cache *c) {
  return (order_catalog){.get_cb = cache_get_cb, .self = c};
}
