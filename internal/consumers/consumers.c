/* Every consumer group of Shop (consumers.h). */
#include "consumers/consumers.h"

#include <string.h>

#include "audit/audit.h"
#include "inventory/inventory.h"
#include "notification/notification.h"
#include "order/order.h"
#include "payment/payment.h"
#include "product/product.h"
#include "user/user.h"

const consumer_spec *const consumers_all[] = {
    &user_projection_consumer,  &product_projection_consumer,
    &order_projection_consumer, &order_saga_consumer,
    &inventory_consumer,        &payment_consumer,
    &notify_consumer,           &audit_consumer,
};
const size_t consumers_all_count = sizeof consumers_all / sizeof consumers_all[0];

const consumer_spec *consumers_find(const char *group) {
  for (size_t i = 0; group != NULL && i < consumers_all_count; i++)
    if (strcmp(consumers_all[i]->group, group) == 0) return consumers_all[i];
  return NULL;
}
