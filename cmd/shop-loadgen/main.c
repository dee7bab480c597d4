/*
 * shop-loadgen: places orders against a running Shop and reports what a
 * customer sees, then checks the books (internal/loadgen/loadgen.h has the
 * method).
 *
 *   shop-loadgen [--config PATH] (--customers N [--no-wait] | --rate R)
 *                [--duration S] [--warmup S] [--drain S] [--accounts K]
 *                [--senders W] [--products P] [--lines L] [--no-register]
 *                [--run-dir DIR] [--settle S] [--no-reconcile | --reconcile-all]
 *                [--shopctl PATH] [--json]
 *   shop-loadgen [--config PATH] --print-config [KEY]
 *
 * The config is found as every program finds it (config_path_find:
 * --config, $SHOP_CONFIG, else config/shop.yaml in the current folder).
 * The books check runs `shopctl reconcile --settle S --json`, narrowed
 * with --sku-prefix to the orders of this run's products; --reconcile-all
 * checks every order and product of the stack.
 *
 * Exit status: 0 when orders completed (were accepted, with --no-watch)
 * and the books are clean; 1 on a set-up failure or when none did; 2 on
 * bad arguments; 3 when `shopctl reconcile` found broken orders (or could
 * not run).
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/config.h"
#include "loadgen/loadgen.h"
#include "log/log.h"

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: shop-loadgen [--config PATH] (--customers N [--no-wait [--no-watch]] | --rate R)\n"
      "                    [--duration S] [--warmup S] [--drain S] [--accounts K]\n"
      "                    [--senders W] [--products P] [--lines L] [--no-register]\n"
      "                    [--run-dir DIR] [--settle S] [--no-reconcile | --reconcile-all]\n"
      "                    [--shopctl PATH] [--json]\n"
      "       shop-loadgen [--config PATH] --print-config [KEY]\n"
      "  --config PATH   else $SHOP_CONFIG, else config/shop.yaml here\n"
      "  --customers N   closed loop: N customers, each waits for its order's\n"
      "                  completion (or only for the reply with --no-wait)\n"
      "  --no-watch      with --no-wait: orders are not watched for completion\n"
      "                  (order-query need not run; CreateOrder alone)\n"
      "  --rate R        open loop: R orders/s whatever the replies\n"
      "  --duration S    measured window (default 10); --warmup S before it (3);\n"
      "                  --drain S: wait this long for the window's orders (30)\n"
      "  --accounts K    customer accounts (default min(N or senders, 16))\n"
      "  --no-register   mint tokens for fresh ids instead of RegisterUser\n"
      "  --run-dir DIR   charge CPU of the run folder's processes to the window\n"
      "  --settle S      passed to `shopctl reconcile --settle` (default 10)\n"
      "  --reconcile-all check the whole stack, not only this run's orders\n"
      "  --json          one JSON object instead of the table\n");
}

/* shopctl next to this program, else on PATH. */
static void shopctl_path(char *out, size_t len) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL) {
      *slash = '\0';
      if ((size_t)snprintf(out, len, "%.*s/shopctl", (int)(len - 9), self) < len &&
          access(out, X_OK) == 0)
        return;
    }
  }
  snprintf(out, len, "shopctl");
}

/* Runs `shopctl [--config C] reconcile --settle S --json [--sku-prefix
 * P]`; *exit_code is its exit status (-1: could not run). Returns its
 * stdout (malloc'd). */
static char *reconcile_run_cmd(const char *shopctl, const char *config, int settle,
                               const char *sku_prefix, int *exit_code) {
  *exit_code = -1;
  int fds[2];
  if (pipe(fds) != 0) return NULL;
  char settle_s[32];
  snprintf(settle_s, sizeof settle_s, "%d", settle);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return NULL;
  }
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    const char *argv[12];
    int n = 0;
    argv[n++] = shopctl;
    if (config != NULL) argv[n++] = "--config", argv[n++] = config;
    argv[n++] = "reconcile";
    argv[n++] = "--settle";
    argv[n++] = settle_s;
    argv[n++] = "--json";
    if (sku_prefix != NULL) argv[n++] = "--sku-prefix", argv[n++] = sku_prefix;
    argv[n] = NULL;
    execvp(shopctl, (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (buf != NULL && n + 1024 > cap) {
      char *b = realloc(buf, cap * 2);
      if (b == NULL) {
        free(buf);
        buf = NULL;
      } else {
        buf = b;
        cap *= 2;
      }
    }
    char sink[1024];
    ssize_t r = buf != NULL ? read(fds[0], buf + n, cap - n - 1) : read(fds[0], sink, sizeof sink);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (buf != NULL) n += (size_t)r;
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (buf != NULL) buf[n] = '\0';
  return buf;
}

int main(int argc, char **argv) {
  loadgen_opts o = {.warmup_s = -1, .register_users = true};
  const char *config_path = config_path_find(argc, argv);
  const char *print_key = NULL;
  bool print_config = config_print_arg(argc, argv, &print_key);
  const char *shopctl = NULL;
  bool json = false, reconcile = true, reconcile_all = false;
  int settle = 10;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool has = v != NULL;
    if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (strcmp(a, "--no-wait") == 0) {
      o.no_wait = true;
    } else if (strcmp(a, "--no-watch") == 0) {
      o.no_watch = true;
    } else if (strcmp(a, "--no-register") == 0) {
      o.register_users = false;
    } else if (strcmp(a, "--no-reconcile") == 0) {
      reconcile = false;
    } else if (strcmp(a, "--reconcile-all") == 0) {
      reconcile_all = true;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (has && strcmp(a, "--config") == 0) {
      i++;
    } else if (strcmp(a, "--print-config") == 0) {
      if (print_key != NULL) i++;
    } else if (has && strcmp(a, "--customers") == 0) {
      o.mode = LOADGEN_CLOSED, o.customers = atoi(v), i++;
    } else if (has && strcmp(a, "--rate") == 0) {
      o.mode = LOADGEN_OPEN, o.rate = atof(v), i++;
    } else if (has && strcmp(a, "--duration") == 0) {
      o.duration_s = atof(v), i++;
    } else if (has && strcmp(a, "--warmup") == 0) {
      o.warmup_s = atof(v), i++;
    } else if (has && strcmp(a, "--drain") == 0) {
      o.drain_s = atof(v), i++;
    } else if (has && strcmp(a, "--accounts") == 0) {
      o.accounts = atoi(v), i++;
    } else if (has && strcmp(a, "--senders") == 0) {
      o.senders = atoi(v), i++;
    } else if (has && strcmp(a, "--products") == 0) {
      o.products = atoi(v), i++;
    } else if (has && strcmp(a, "--lines") == 0) {
      o.lines = atoi(v), i++;
    } else if (has && strcmp(a, "--run-dir") == 0) {
      o.run_dir = v, i++;
    } else if (has && strcmp(a, "--settle") == 0) {
      settle = atoi(v), i++;
    } else if (has && strcmp(a, "--shopctl") == 0) {
      shopctl = v, i++;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (!print_config && ((o.customers <= 0 && o.rate <= 0) || settle < 0)) {
    usage(stderr);
    return 2;
  }
  char err[STATUS_ERRBUF_SIZE];
  shop_cfg *cfg = NULL;
  if (config_load(&cfg, config_path, err, sizeof err) != 0) {
    fprintf(stderr, "shop-loadgen: %s\n", err);
    return 1;
  }
  if (print_config) {
    int prc = config_print(cfg, print_key, stdout);
    config_free(cfg);
    return prc;
  }
  log_setup("shop-loadgen", LOG_LEVEL_WARN, NULL);
  o.cfg = cfg;
  loadgen *lg = NULL;
  status_code st = loadgen_setup(&lg, &o, err, sizeof err);
  if (st != STATUS_OK) {
    fprintf(stderr, "shop-loadgen: set-up: %s (%s)\n", err, status_name(st));
    loadgen_destroy(lg);
    config_free(cfg);
    return st == STATUS_INVALID_ARGUMENT ? 2 : 1;
  }
  loadgen_report rep;
  st = loadgen_run(lg, &rep, err, sizeof err);
  char sku_prefix[64];
  snprintf(sku_prefix, sizeof sku_prefix, "%s", loadgen_sku_prefix(lg));
  loadgen_destroy(lg);
  if (st != STATUS_OK) {
    fprintf(stderr, "shop-loadgen: %s\n", err);
    config_free(cfg);
    return 1;
  }

  /* The books: every order's money and stock add up (shopctl reconcile). */
  int rc_exit = 0;
  char *rc_out = NULL;
  bool clean = true;
  if (reconcile) {
    char path[PATH_MAX];
    if (shopctl == NULL) {
      shopctl_path(path, sizeof path);
      shopctl = path;
    }
    rc_out = reconcile_run_cmd(shopctl, config_path, settle, reconcile_all ? NULL : sku_prefix,
                               &rc_exit);
    clean = rc_exit == 0;
  }
  json_t *extra = json_object();
  if (reconcile) {
    json_t *detail = rc_out != NULL ? json_loads(rc_out, 0, NULL) : NULL;
    json_object_set_new(extra, "reconcile",
                        json_pack("{s:b,s:i,s:s,s:o}", "clean", clean, "exit", rc_exit, "scope",
                                  reconcile_all ? "all" : sku_prefix, "report",
                                  detail != NULL ? detail : json_string(rc_out ? rc_out : "")));
  }
  char *extra_s = json_dumps(extra, JSON_COMPACT);
  json_decref(extra);
  if (json) {
    char *s = loadgen_report_json(&rep, extra_s);
    printf("%s\n", s != NULL ? s : "{}");
    free(s);
  } else {
    loadgen_report_print(&rep, stdout);
    if (reconcile) {
      printf("  books (shopctl reconcile): %s (exit %d)\n", clean ? "clean" : "NOT CLEAN", rc_exit);
      if (!clean && rc_out != NULL) printf("%s\n", rc_out);
    }
  }
  free(extra_s);
  free(rc_out);
  config_free(cfg);
  if (!clean) return 3;
  /* Not watched, an order counts once accepted. */
  return (rep.no_watch ? rep.accepted : rep.completed) > 0 ? 0 : 1;
}
