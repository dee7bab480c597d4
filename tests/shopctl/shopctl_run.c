/* Runs of the built shopctl. See shopctl_run.h. */
#include "shopctl_run.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "support/proc.h"

void shopctl_dir_make(shopctl_dir *d, const char *prefix, const char *bin, const char *config) {
  snprintf(d->path, sizeof d->path, "/tmp/%s-XXXXXX", prefix);
  cr_assert_not_null(mkdtemp(d->path));
  snprintf(d->xdg_env, sizeof d->xdg_env, "XDG_CONFIG_HOME=%s/xdg", d->path);
  d->bin = bin;
  d->config = config;
  d->runs = 0;
}

void shopctl_dir_remove(shopctl_dir *d) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->path);
  cr_expect_eq(system(cmd), 0, "%s", cmd);
}

int shopctl_run(shopctl_dir *d, char *out, size_t outlen, ...) {
  va_list ap;
  va_start(ap, outlen);
  const char *args[32];
  int n = 0;
  if (d->config != NULL) {
    args[n++] = "--config";
    args[n++] = d->config;
  }
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && n < 31) args[n++] = a;
  va_end(ap);
  args[n] = NULL;
  char log_path[320];
  snprintf(log_path, sizeof log_path, "%s/shopctl-%d.out", d->path, ++d->runs);
  /* Without --config, no SHOP_CONFIG of the test environment either. */
  const char *env[] = {d->xdg_env, d->config == NULL ? "SHOP_CONFIG=" : NULL, NULL};
  proc_opts o = {.path = d->bin, .argv = args, .env = env, .log_path = log_path};
  char err[256];
  int code = -1;
  cr_assert_eq(proc_run(&o, 60000, &code, out, outlen, err, sizeof err), STATUS_OK, "%s", err);
  return code;
}
