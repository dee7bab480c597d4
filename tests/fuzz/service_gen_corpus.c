/* Writes the seed corpora of the service fuzz targets (service_fuzz.c)
 * under ROOT/<target>/: valid requests (and a few near misses) of every
 * method, written as JSON here and packed with shopctl's JSON mapping.
 * Run by hand once (the seeds are committed):
 *
 *   build/tests/service_gen_corpus tests/fuzz/corpus
 *
 * Each seed is the method's index in its service descriptor (one byte)
 * followed by the request's bytes, the input format of service_fuzz.c. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pbjson/pbjson.h"

typedef struct seed {
  const char *target;  /* directory, = FUZZ_SERVICE */
  const char *service; /* full service name */
  const char *method;
  const char *json;
} seed;

#define U "shop.user.v1.UserCommandService"
#define UQ "shop.user.v1.UserQueryService"
#define P "shop.product.v1.ProductCommandService"
#define PQ "shop.product.v1.ProductQueryService"
#define O "shop.order.v1.OrderCommandService"
#define OQ "shop.order.v1.OrderQueryService"
#define A "shop.audit.v1.AuditQueryService"
#define ID "0190c3c2-7e4a-7b3c-8f00-1234567890ab"
#define ID2 "0190c3c2-7e4a-7b3c-8f00-1234567890ac"
#define RT "rt1." ID ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define TOKEN "{\"token\":{\"aggregateId\":\"" ID "\",\"version\":\"3\"},\"waitMs\":100}"
#define PAGE "{\"pageSize\":20,\"pageToken\":\"AAAA\"}"

static const seed seeds[] = {
    {"user_command", U, "RegisterUser",
     "{\"email\":\"Ada.Lovelace@Example.COM\",\"password\":\"correct horse battery\","
     "\"name\":\"Ada\",\"phone\":\"+33612345678\",\"notificationPreferences\":{\"email\":true,"
     "\"sms\":true}}"},
    {"user_command", U, "RegisterUser",
     "{\"email\":\"bad@@x\",\"password\":\"aaaaaaaaaaaa\",\"name\":\" \",\"phone\":\"0612\"}"},
    {"user_command", U, "Login", "{\"email\":\"ada@example.com\",\"password\":\"correct horse\"}"},
    {"user_command", U, "RefreshToken", "{\"refreshToken\":\"" RT "\"}"},
    {"user_command", U, "Logout", "{\"refreshToken\":\"" RT "\"}"},
    {"user_command", U, "UpdateProfile",
     "{\"userId\":\"" ID "\",\"name\":\"Ada L.\",\"phone\":\"+4915123456789\","
     "\"expectedVersion\":\"2\"}"},
    {"user_command", U, "ChangePassword",
     "{\"oldPassword\":\"correct horse battery\",\"newPassword\":\"staple battery horse\"}"},
    {"user_command", U, "SetRole",
     "{\"userId\":\"" ID "\",\"role\":\"ROLE_ADMIN\",\"expectedVersion\":\"1\"}"},
    {"user_query", UQ, "GetMe", "{\"consistency\":" TOKEN "}"},
    {"user_query", UQ, "GetUser", "{\"userId\":\"" ID "\",\"consistency\":" TOKEN "}"},
    {"user_query", UQ, "ListUsers",
     "{\"page\":" PAGE ",\"role\":\"ROLE_CUSTOMER\",\"text\":\"ada\"}"},
    {"product_command", P, "CreateProduct",
     "{\"sku\":\"MUG-1\",\"details\":{\"name\":\"Mug\",\"description\":\"A mug\\nwith a handle\","
     "\"category\":\"kitchen\"},\"price\":{\"units\":\"1299\",\"currency\":\"EUR\"},"
     "\"initialStock\":\"10\",\"inventoryRule\":{\"lowStockThreshold\":\"2\","
     "\"maxQuantityPerOrder\":5}}"},
    {"product_command", P, "UpdateProduct",
     "{\"productId\":\"" ID "\",\"name\":\"Big mug\",\"description\":\"\",\"category\":\"home\","
     "\"expectedVersion\":\"4\"}"},
    {"product_command", P, "ArchiveProduct", "{\"productId\":\"" ID "\"}"},
    {"product_command", P, "SetPrice",
     "{\"productId\":\"" ID "\",\"price\":{\"units\":\"1499\",\"currency\":\"EUR\"}}"},
    {"product_command", P, "SetInventoryRule",
     "{\"productId\":\"" ID "\",\"inventoryRule\":{\"lowStockThreshold\":\"3\","
     "\"maxQuantityPerOrder\":10}}"},
    {"product_command", P, "Restock",
     "{\"productId\":\"" ID "\",\"quantity\":\"25\",\"reference\":\"PO-2024-17\"}"},
    {"product_query", PQ, "GetProduct", "{\"productId\":\"" ID "\",\"consistency\":" TOKEN "}"},
    {"product_query", PQ, "GetProducts",
     "{\"productIds\":[\"" ID "\",\"" ID "\"],\"consistency\":" TOKEN "}"},
    {"product_query", PQ, "ListProducts",
     "{\"page\":" PAGE ",\"category\":\"kitchen\",\"text\":\"mug\",\"minPrice\":{\"units\":\"100\","
     "\"currency\":\"EUR\"},\"maxPrice\":{\"units\":\"5000\",\"currency\":\"EUR\"},"
     "\"sort\":\"PRODUCT_SORT_PRICE_DESC\",\"includeArchived\":true}"},
    {"order_command", O, "CreateOrder",
     "{\"lines\":[{\"productId\":\"" ID "\",\"quantity\":2},{\"productId\":\"" ID2 "\","
     "\"quantity\":1}],\"paymentToken\":\"tok_visa\",\"shippingAddress\":{\"recipient\":\"Ada\","
     "\"line1\":\"1 Main St\",\"line2\":\"Flat 2\",\"city\":\"Paris\",\"region\":\"IDF\","
     "\"postalCode\":\"75001\",\"country\":\"FR\",\"phone\":\"+33612345678\"},"
     "\"expectedTotal\":{\"units\":\"3897\",\"currency\":\"EUR\"}}"},
    {"order_command", O, "CancelOrder", "{\"orderId\":\"" ID "\",\"reason\":\"changed my mind\"}"},
    {"order_command", O, "ShipOrder",
     "{\"orderId\":\"" ID "\",\"carrier\":\"La Poste\",\"trackingNumber\":\"LP123456789FR\"}"},
    {"order_query", OQ, "GetOrder", "{\"orderId\":\"" ID "\",\"consistency\":" TOKEN "}"},
    {"order_query", OQ, "ListOrdersByCustomer", "{\"customerId\":\"" ID "\",\"page\":" PAGE "}"},
    {"order_query", OQ, "ListOrdersByStatus", "{\"status\":\"ORDER_STATUS_CONFIRMED\"}"},
    {"order_query", OQ, "ListStuckOrders",
     "{\"olderThanSeconds\":\"600\",\"status\":\"ORDER_STATUS_PENDING\"}"},
    {"audit_query", A, "ListAuditEvents",
     "{\"aggregateId\":\"" ID "\",\"type\":\"shop.order.v1.OrderCreated\","
     "\"topic\":\"shop.order.events.v1\"}"},
    {"audit_query", A, "GetOrderTimeline", "{\"orderId\":\"" ID "\"}"},
    {"audit_query", A, "VerifyChain", "{\"fromRowId\":\"1\",\"maxRows\":\"1000\"}"},
    {"audit_query", A, "RebuildOrderProjection", "{\"maxDifferences\":100}"},
};

static const ProtobufCServiceDescriptor *service_find(const char *name) {
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++)
    if (strcmp(pbjson_service_registry[i]->name, name) == 0) return pbjson_service_registry[i];
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s ROOT\n", argv[0]);
    return 2;
  }
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    const seed *s = &seeds[i];
    const ProtobufCServiceDescriptor *sd = service_find(s->service);
    if (sd == NULL) {
      fprintf(stderr, "no service %s\n", s->service);
      return 1;
    }
    unsigned k = 0;
    while (k < sd->n_methods && strcmp(sd->methods[k].name, s->method) != 0) k++;
    if (k == sd->n_methods) {
      fprintf(stderr, "no method %s.%s\n", s->service, s->method);
      return 1;
    }
    json_error_t je;
    json_t *j = json_loads(s->json, 0, &je);
    uint8_t *bytes = NULL;
    size_t len = 0;
    char err[256];
    if (j == NULL ||
        pbjson_to_bytes(&bytes, &len, sd->methods[k].input, j, err, sizeof err) != STATUS_OK) {
      fprintf(stderr, "%s.%s: %s\n", s->service, s->method, j == NULL ? je.text : err);
      return 1;
    }
    json_decref(j);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", argv[1], s->target);
    mkdir(path, 0755);
    unsigned nth = 0; /* earlier seeds of the same method */
    for (size_t e = 0; e < i; e++) nth += strcmp(seeds[e].method, s->method) == 0;
    snprintf(path, sizeof path, "%s/%s/%s_%u", argv[1], s->target, s->method, nth);
    FILE *f = fopen(path, "wb");
    uint8_t idx = (uint8_t)k;
    if (f == NULL || fwrite(&idx, 1, 1, f) != 1 || (len > 0 && fwrite(bytes, 1, len, f) != len)) {
      perror(path);
      return 1;
    }
    fclose(f);
    free(bytes);
  }
  return 0;
}
