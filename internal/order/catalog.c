/* The catalog as order-command sees it: GetProducts on product-query, one
 * service-to-service call for an order's products that carries the
 * caller's remaining deadline and trace. See order.h. */
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
