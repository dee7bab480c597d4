/* libFuzzer targets for every service's request decode and validation,
 * without a server or a database: one source, one executable per service
 * (FUZZ_SERVICE names it: user_command, user_query, product_command,
 * product_query, order_command, order_query, audit_query).
 *
 * Input: data[0] picks the method (index into the service descriptor,
 * modulo its method count), the rest is the request's protobuf bytes. The
 * target decodes them with the method's input descriptor, exactly as the
 * RPC server does, and runs the handler's pure check (the domain's
 * *_validate_* function).
 *
 * Every method of the service descriptor must have a row in the table
 * below (checked at start-up, abort otherwise): a new RPC cannot go
 * unfuzzed.
 *
 * Invariants checked on every input (abort on violation):
 *   - a decoded message without unknown fields packs again, and the
 *     packed bytes decode and pack to the same bytes (canonical round
 *     trip; see has_unknown for why unknown fields are left out);
 *   - a check is deterministic (same count twice) and every violation it
 *     keeps names a field and a reason;
 *   - an email the user checks accepted is a fixed point of normalising. */
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "check/check.h"
#include "order/order.h"
#include "product/product.h"
#include "user/user.h"

#ifndef FUZZ_SERVICE
#error "FUZZ_SERVICE must name the service (user_command, ...)"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CURRENCY "EUR"
#define FZ_CALLER "0190c3c2-7e4a-7b3c-8f00-1234567890ab"

typedef void (*fz_check_fn)(const ProtobufCMessage *m, check_violations *v);

typedef struct fz_method {
  const char *name;
  fz_check_fn check; /* NULL: the handler has no check of the request on its own */
} fz_method;

typedef struct fz_service {
  const char *target;
  const ProtobufCServiceDescriptor *desc;
  const fz_method *methods;
  size_t n_methods;
} fz_service;

static void email_fixed_point(const char *email) {
  char again[USER_EMAIL_MAX + 1];
  if (user_email_normalize(email, again, sizeof again) != NULL || strcmp(again, email) != 0)
    abort();
}

/* ---- user ---------------------------------------------------------------------------------- */

static void fz_register_user(const ProtobufCMessage *m, check_violations *v) {
  char email[USER_EMAIL_MAX + 1];
  size_t before = v->n;
  user_validate_register_user((const void *)m, email, v);
  if (v->n == before) email_fixed_point(email);
}

static void fz_login(const ProtobufCMessage *m, check_violations *v) {
  char email[USER_EMAIL_MAX + 1];
  size_t before = v->n;
  user_validate_login((const void *)m, email, v);
  if (v->n == before) email_fixed_point(email);
}

static void fz_refresh_token(const ProtobufCMessage *m, check_violations *v) {
  const Shop__User__V1__RefreshTokenRequest *in = (const void *)m;
  user_validate_refresh_token(in->refresh_token, v);
  if (v->n == 0 && user_refresh_token_shape_ok(in->refresh_token)) {
    unsigned char h[USER_REFRESH_HASH_BYTES];
    user_refresh_token_hash(in->refresh_token, h);
  }
}

static void fz_logout(const ProtobufCMessage *m, check_violations *v) {
  const Shop__User__V1__LogoutRequest *in = (const void *)m;
  user_validate_refresh_token(in->refresh_token, v);
  if (v->n == 0) (void)user_refresh_token_shape_ok(in->refresh_token);
}

static void fz_update_profile(const ProtobufCMessage *m, check_violations *v) {
  user_validate_update_profile((const void *)m, v);
}
static void fz_change_password(const ProtobufCMessage *m, check_violations *v) {
  user_validate_change_password((const void *)m, v);
}
static void fz_set_role(const ProtobufCMessage *m, check_violations *v) {
  user_validate_set_role((const void *)m, v);
}
static void fz_get_user(const ProtobufCMessage *m, check_violations *v) {
  user_validate_get_user((const void *)m, v);
}
static void fz_list_users(const ProtobufCMessage *m, check_violations *v) {
  user_validate_list_users((const void *)m, v);
}

static const fz_method user_command_methods[] = {
    {"RegisterUser", fz_register_user},
    {"Login", fz_login},
    {"RefreshToken", fz_refresh_token},
    {"Logout", fz_logout},
    {"UpdateProfile", fz_update_profile},
    {"ChangePassword", fz_change_password},
    {"SetRole", fz_set_role},
};
static const fz_method user_query_methods[] = {
    {"GetMe", NULL}, /* the caller's own profile: nothing to check but the token */
    {"GetUser", fz_get_user},
    {"ListUsers", fz_list_users},
};

/* ---- product ------------------------------------------------------------------------------- */

static void fz_create_product(const ProtobufCMessage *m, check_violations *v) {
  product_validate_create_product((const void *)m, FZ_CURRENCY, v);
}
static void fz_update_product(const ProtobufCMessage *m, check_violations *v) {
  product_validate_update_product((const void *)m, v);
}
static void fz_archive_product(const ProtobufCMessage *m, check_violations *v) {
  product_validate_archive_product((const void *)m, v);
}
static void fz_set_price(const ProtobufCMessage *m, check_violations *v) {
  product_validate_set_price((const void *)m, FZ_CURRENCY, v);
}
static void fz_set_inventory_rule(const ProtobufCMessage *m, check_violations *v) {
  product_validate_set_inventory_rule((const void *)m, v);
}
static void fz_restock(const ProtobufCMessage *m, check_violations *v) {
  product_validate_restock((const void *)m, v);
}
static void fz_get_product(const ProtobufCMessage *m, check_violations *v) {
  product_validate_get_product((const void *)m, v);
}
static void fz_get_products(const ProtobufCMessage *m, check_violations *v) {
  product_validate_get_products((const void *)m, v);
}
static void fz_list_products(const ProtobufCMessage *m, check_violations *v) {
  product_validate_list_products((const void *)m, FZ_CURRENCY, v);
}

static const fz_method product_command_methods[] = {
    {"CreateProduct", fz_create_product},        {"UpdateProduct", fz_update_product},
    {"ArchiveProduct", fz_archive_product},      {"SetPrice", fz_set_price},
    {"SetInventoryRule", fz_set_inventory_rule}, {"Restock", fz_restock},
};
static const fz_method product_query_methods[] = {
    {"GetProduct", fz_get_product},
    {"GetProducts", fz_get_products},
    {"ListProducts", fz_list_products},
};

/* ---- order --------------------------------------------------------------------------------- */

static void fz_create_order(const ProtobufCMessage *m, check_violations *v) {
  order_validate_create_order((const void *)m, v);
}
static void fz_cancel_order(const ProtobufCMessage *m, check_violations *v) {
  order_validate_cancel_order((const void *)m, v);
}
static void fz_ship_order(const ProtobufCMessage *m, check_violations *v) {
  order_validate_ship_order((const void *)m, v);
}
static void fz_get_order(const ProtobufCMessage *m, check_violations *v) {
  order_validate_get_order((const void *)m, v);
}
static void fz_list_by_customer(const ProtobufCMessage *m, check_violations *v) {
  order_validate_list_orders_by_customer((const void *)m, FZ_CALLER, v);
}
static void fz_list_by_status(const ProtobufCMessage *m, check_violations *v) {
  order_validate_list_orders_by_status((const void *)m, v);
}
static void fz_list_stuck(const ProtobufCMessage *m, check_violations *v) {
  order_validate_list_stuck_orders((const void *)m, v);
}

static const fz_method order_command_methods[] = {
    {"CreateOrder", fz_create_order},
    {"CancelOrder", fz_cancel_order},
    {"ShipOrder", fz_ship_order},
};
static const fz_method order_query_methods[] = {
    {"GetOrder", fz_get_order},
    {"ListOrdersByCustomer", fz_list_by_customer},
    {"ListOrdersByStatus", fz_list_by_status},
    {"ListStuckOrders", fz_list_stuck},
};

/* ---- audit --------------------------------------------------------------------------------- */

static void fz_list_audit(const ProtobufCMessage *m, check_violations *v) {
  audit_validate_list_audit_events((const void *)m, v);
}
static void fz_timeline(const ProtobufCMessage *m, check_violations *v) {
  audit_validate_get_order_timeline((const void *)m, v);
}
static void fz_verify(const ProtobufCMessage *m, check_violations *v) {
  audit_validate_verify_chain((const void *)m, v);
}
static void fz_rebuild(const ProtobufCMessage *m, check_violations *v) {
  audit_validate_rebuild_order_projection((const void *)m, v);
}

static const fz_method audit_query_methods[] = {
    {"ListAuditEvents", fz_list_audit},
    {"GetOrderTimeline", fz_timeline},
    {"VerifyChain", fz_verify},
    {"RebuildOrderProjection", fz_rebuild},
};

/* ---- The harness ---------------------------------------------------------------------------- */

#define SERVICE(t, d)                                                                              \
  { #t, &d, t##_methods, sizeof t##_methods / sizeof t##_methods[0] }
static const fz_service fz_services[] = {
    SERVICE(user_command, shop__user__v1__user_command_service__descriptor),
    SERVICE(user_query, shop__user__v1__user_query_service__descriptor),
    SERVICE(product_command, shop__product__v1__product_command_service__descriptor),
    SERVICE(product_query, shop__product__v1__product_query_service__descriptor),
    SERVICE(order_command, shop__order__v1__order_command_service__descriptor),
    SERVICE(order_query, shop__order__v1__order_query_service__descriptor),
    SERVICE(audit_query, shop__audit__v1__audit_query_service__descriptor),
};

static const fz_service *fz_svc;
/* The check of each descriptor method, by method index. */
static fz_check_fn fz_checks[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (size_t i = 0; i < sizeof fz_services / sizeof fz_services[0]; i++)
    if (strcmp(fz_services[i].target, FUZZ_SERVICE) == 0) fz_svc = &fz_services[i];
  if (fz_svc == NULL || fz_svc->desc->n_methods > 64) abort();
  for (unsigned k = 0; k < fz_svc->desc->n_methods; k++) {
    const char *name = fz_svc->desc->methods[k].name;
    size_t i = 0;
    while (i < fz_svc->n_methods && strcmp(fz_svc->methods[i].name, name) != 0) i++;
    if (i == fz_svc->n_methods) {
      fprintf(stderr, "%s: method %s has no row in service_fuzz.c\n", fz_svc->target, name);
      abort();
    }
    fz_checks[k] = fz_svc->methods[i].check;
  }
  return 0;
}

static void check_vlist(const check_violations *v) {
  for (size_t i = 0; i < v->n && i < RPC_MAX_VIOLATIONS; i++)
    if (v->v[i].field[0] == '\0' || v->v[i].why == NULL || v->v[i].why[0] == '\0') abort();
}

/* True when m or a message inside it kept unknown fields. protobuf-c 1.4.1
 * keeps an unknown field numbered 0 when its tag comes as an overlong
 * varint (0x82 0x00) but refuses the same field written canonically
 * (0x02), so such a message does not survive a round trip. Harmless here:
 * nothing in Shop re-packs a decoded request or event (events travel as
 * their original bytes); found by this target. */
static bool has_unknown(const ProtobufCMessage *m) {
  if (m->n_unknown_fields > 0) return true;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    const char *at = (const char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
      ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)at;
      for (size_t k = 0; k < n; k++)
        if (has_unknown(arr[k])) return true;
    } else {
      const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)at;
      if (sub != NULL && has_unknown(sub)) return true;
    }
  }
  return false;
}

static void round_trip(const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m) {
  if (has_unknown(m)) return;
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *a = malloc(n ? n : 1), *b = NULL;
  if (a == NULL) return;
  if (protobuf_c_message_pack(m, a) != n) abort();
  ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n, a);
  if (again == NULL) abort();
  size_t n2 = protobuf_c_message_get_packed_size(again);
  b = malloc(n2 ? n2 : 1);
  if (b != NULL) {
    if (n2 != n || protobuf_c_message_pack(again, b) != n || memcmp(a, b, n) != 0) abort();
    free(b);
  }
  protobuf_c_message_free_unpacked(again, NULL);
  free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  unsigned k = data[0] % fz_svc->desc->n_methods;
  const ProtobufCMessageDescriptor *d = fz_svc->desc->methods[k].input;
  /* An exact-size copy, so that a read past the payload is caught. */
  uint8_t *payload = malloc(size - 1 ? size - 1 : 1);
  if (payload == NULL) return 0;
  memcpy(payload, data + 1, size - 1);
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, payload);
  free(payload);
  if (m == NULL) return 0;
  round_trip(d, m);
  if (fz_checks[k] != NULL) {
    check_violations v1 = {0}, v2 = {0};
    fz_checks[k](m, &v1);
    fz_checks[k](m, &v2);
    if (v1.n != v2.n) abort();
    check_vlist(&v1);
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
