/*
 * shopctl_run: runs the built shopctl in a test's own folder, for the two
 * shopctl suites (against shop-echo and against the real programs).
 *
 *   shopctl_dir_make(&d, "shopctl-login");     // .init
 *   int code = shopctl_run(&d, out, sizeof out, "list", NULL);
 *   shopctl_dir_remove(&d);                    // .fini
 *
 * The folder holds XDG_CONFIG_HOME (the credentials shopctl keeps) and
 * each run's output. Fails the test on error.
 */
#ifndef SHOP_TESTS_SHOPCTL_RUN_H
#define SHOP_TESTS_SHOPCTL_RUN_H

#include <stddef.h>

typedef struct shopctl_dir {
  char path[256];
  char xdg_env[320];  /* XDG_CONFIG_HOME=<path>/xdg */
  const char *bin;    /* shopctl */
  const char *config; /* --config PATH before the arguments; NULL: SHOP_CONFIG= (none) */
  int runs;
} shopctl_dir;

/* A fresh folder /tmp/<prefix>-XXXXXX for runs of bin. */
void shopctl_dir_make(shopctl_dir *d, const char *prefix, const char *bin, const char *config);
void shopctl_dir_remove(shopctl_dir *d);

/* Runs shopctl with the arguments (a NULL-terminated list) and waits for
 * it (60 s at most); stdout and stderr land in out. Returns the exit
 * code. */
int shopctl_run(shopctl_dir *d, char *out, size_t outlen, ...);

#endif
