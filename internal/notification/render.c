/* Templates per event type and channel (notification.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notification/notification.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/notification/v1/events.pb-c.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "shop/user/v1/events.pb-c.h"

#define CH_EMAIL SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_EMAIL
#define CH_SMS SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_SMS

void notify_text_free(notify_text *t) {
  free(t->subject);
  free(t->body);
  t->subject = t->body = NULL;
}

/* "12.50 EUR"; currencies without minor units (JPY) print whole. */
static void money(char *out, size_t len, const Shop__Common__V1__Money *m) {
  if (m == NULL) {
    snprintf(out, len, "-");
    return;
  }
  const char *cur = m->currency != NULL ? m->currency : "";
  if (strcmp(cur, "JPY") == 0) {
    snprintf(out, len, "%" PRId64 " %s", m->units, cur);
    return;
  }
  int64_t u = m->units < 0 ? -m->units : m->units;
  snprintf(out, len, "%s%" PRId64 ".%02d %s", m->units < 0 ? "-" : "", u / 100, (int)(u % 100),
           cur);
}

static void lines(FILE *f, Shop__Order__V1__OrderLine **l, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char up[64], lt[64];
    money(up, sizeof up, l[i]->unit_price);
    money(lt, sizeof lt, l[i]->line_total);
    fprintf(f, "  %d x %s (%s) at %s = %s\n", l[i]->quantity,
            l[i]->product_name[0] ? l[i]->product_name : l[i]->product_id, l[i]->sku, up, lt);
  }
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v) {
  const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
  return ev != NULL ? ev->name : "UNSPECIFIED";
}

static const char *short_id(const char *id) { return id != NULL ? id : ""; }

bool notify_render(const events_envelope *ev, int channel, const char *name, notify_text *out) {
  memset(out, 0, sizeof *out);
  const uint8_t *d = ev->data.data;
  size_t dl = ev->data.len;
  char *body = NULL, *subject = NULL;
  size_t blen = 0, slen = 0;
  FILE *b = open_memstream(&body, &blen);
  FILE *s = open_memstream(&subject, &slen);
  if (b == NULL || s == NULL) {
    if (b != NULL) fclose(b);
    if (s != NULL) fclose(s);
    free(body);
    free(subject);
    return false;
  }
  bool email = channel == CH_EMAIL;
  bool ok = true;
  const char *hello = name != NULL && name[0] != '\0' ? name : "there";
  char total[64];
  if (strcmp(ev->type, "shop.user.v1.UserRegistered") == 0) {
    fprintf(s, "Welcome to Shop");
    fprintf(b, "Hello %s,\n\nwelcome to Shop: your account is ready.\n", hello);
  } else if (strcmp(ev->type, "shop.order.v1.OrderConfirmed") == 0) {
    Shop__Order__V1__OrderConfirmed *m = shop__order__v1__order_confirmed__unpack(NULL, dl, d);
    if (m == NULL) goto bad;
    money(total, sizeof total, m->total);
    fprintf(s, "Your order %s is confirmed", short_id(m->order_id));
    if (email) {
      fprintf(b, "Hello %s,\n\nyour order %s is confirmed:\n\n", hello, m->order_id);
      lines(b, m->lines, m->n_lines);
      fprintf(b, "\nTotal: %s\n", total);
    } else {
      fprintf(b, "Shop: order %s confirmed, total %s.", m->order_id, total);
    }
    shop__order__v1__order_confirmed__free_unpacked(m, NULL);
  } else if (strcmp(ev->type, "shop.order.v1.OrderCancelled") == 0) {
    Shop__Order__V1__OrderCancelled *m = shop__order__v1__order_cancelled__unpack(NULL, dl, d);
    if (m == NULL) goto bad;
    money(total, sizeof total, m->total);
    const char *reason = enum_name(&shop__order__v1__cancel_reason__descriptor, (int)m->reason);
    fprintf(s, "Your order %s was cancelled", m->order_id);
    if (email) {
      fprintf(b, "Hello %s,\n\nyour order %s was cancelled.\nReason: %s%s%s\n\n", hello,
              m->order_id, reason, m->reason_text[0] ? ": " : "", m->reason_text);
      lines(b, m->lines, m->n_lines);
      fprintf(b, "\nTotal: %s\nAnything held or charged is given back.\n", total);
    } else {
      fprintf(b, "Shop: order %s cancelled (%s%s%s).", m->order_id, reason,
              m->reason_text[0] ? ": " : "", m->reason_text);
    }
    shop__order__v1__order_cancelled__free_unpacked(m, NULL);
  } else if (strcmp(ev->type, "shop.order.v1.OrderShipped") == 0) {
    Shop__Order__V1__OrderShipped *m = shop__order__v1__order_shipped__unpack(NULL, dl, d);
    if (m == NULL) goto bad;
    fprintf(s, "Your order %s has shipped", m->order_id);
    if (email) {
      fprintf(b, "Hello %s,\n\nyour order %s has shipped (%s %s):\n\n", hello, m->order_id,
              m->carrier, m->tracking_number);
      lines(b, m->lines, m->n_lines);
    } else {
      fprintf(b, "Shop: order %s shipped, %s %s.", m->order_id, m->carrier, m->tracking_number);
    }
    shop__order__v1__order_shipped__free_unpacked(m, NULL);
  } else if (strcmp(ev->type, "shop.payment.v1.PaymentFailed") == 0) {
    Shop__Payment__V1__PaymentFailed *m = shop__payment__v1__payment_failed__unpack(NULL, dl, d);
    if (m == NULL) goto bad;
    money(total, sizeof total, m->amount);
    const char *reason =
        enum_name(&shop__payment__v1__payment_failure_reason__descriptor, (int)m->reason);
    fprintf(s, "Payment for order %s failed", m->order_id);
    fprintf(b, "%sthe payment of %s for order %s failed: %s%s%s.\n",
            email ? "Hello,\n\n" : "Shop: ", total, m->order_id, reason,
            m->reason_text[0] ? ": " : "", m->reason_text);
    shop__payment__v1__payment_failed__free_unpacked(m, NULL);
  } else if (strcmp(ev->type, "shop.payment.v1.PaymentRefunded") == 0) {
    Shop__Payment__V1__PaymentRefunded *m =
        shop__payment__v1__payment_refunded__unpack(NULL, dl, d);
    if (m == NULL) goto bad;
    money(total, sizeof total, m->amount);
    fprintf(s, "Refund for order %s", m->order_id);
    fprintf(b, "%s%s for order %s has been refunded.\n", email ? "Hello,\n\n" : "Shop: ", total,
            m->order_id);
    shop__payment__v1__payment_refunded__free_unpacked(m, NULL);
  } else if (strcmp(ev->type, "shop.inventory.v1.InventoryLow") == 0) {
    Shop__Inventory__V1__InventoryLow *m = shop__inventory__v1__inventory_low__unpack(NULL, dl, d);
    if (m == NULL) goto bad;
    fprintf(s, "Low stock: %s", m->sku);
    fprintf(b, "Stock of %s (product %s) is low: %" PRId64 " available, threshold %" PRId64 ".\n",
            m->sku, m->product_id, m->available, m->threshold);
    shop__inventory__v1__inventory_low__free_unpacked(m, NULL);
  } else {
    ok = false;
  }
  fclose(b);
  fclose(s);
  if (!ok) {
    free(body);
    free(subject);
    return false;
  }
  out->subject = subject;
  out->body = body;
  return true;
bad:
  fclose(b);
  fclose(s);
  free(body);
  free(subject);
  return false;
}
