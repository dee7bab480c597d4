/* The programs of programs.list, as config_program rows and lookups over
 * a loaded config (config.h). */
#include <stddef.h>
#include <string.h>

#include "config/config.h"

static const config_program programs[] = {
#define X(key, name, endpoint, service) {name, #key, endpoint, service},
    SHOP_PROGRAM_LIST(X)
#undef X
};

static const size_t admin_offs[] = {
#define X(key, name, endpoint, service) offsetof(shop_cfg, admin.key),
    SHOP_PROGRAM_LIST(X)
#undef X
};

static const struct {
  const char *key;
  size_t off;
} endpoint_offs[] = {
#define X(key, name, service) {#key, offsetof(shop_cfg, endpoints.key)},
    SHOP_ENDPOINT_LIST(X)
#undef X
};

#define N_PROGRAMS (sizeof programs / sizeof programs[0])
#define N_ENDPOINTS (sizeof endpoint_offs / sizeof endpoint_offs[0])

const config_program *config_programs(size_t *n) {
  *n = N_PROGRAMS;
  return programs;
}

const config_program *config_program_find(const char *name) {
  for (size_t i = 0; name != NULL && i < N_PROGRAMS; i++)
    if (strcmp(programs[i].name, name) == 0) return &programs[i];
  return NULL;
}

const char *config_program_endpoint(const shop_cfg *cfg, const config_program *p) {
  for (size_t j = 0; p->endpoint != NULL && j < N_ENDPOINTS; j++)
    if (strcmp(endpoint_offs[j].key, p->endpoint) == 0)
      return *(char *const *)((const char *)cfg + endpoint_offs[j].off);
  return NULL;
}

int config_program_admin_port(const shop_cfg *cfg, const config_program *p) {
  size_t i = (size_t)(p - programs);
  return i < N_PROGRAMS ? *(const int *)((const char *)cfg + admin_offs[i]) : 0;
}

const char *config_service_endpoint(const shop_cfg *cfg, const char *service) {
  for (size_t i = 0; service != NULL && i < N_PROGRAMS; i++)
    if (programs[i].service != NULL && strcmp(programs[i].service, service) == 0)
      return config_program_endpoint(cfg, &programs[i]);
  return NULL;
}
