/* shopctl mail list / show: the messages make run's mail catcher kept
 * (notify.mail_dir, one <n>.eml per message; scripts/services.sh). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli_internal.h"
#include "config/config.h"

/* The catcher's folder: notify.mail_dir of the config shopctl read (the
 * defaults when it found none). */
static const char *mail_dir(cli_opts *o) {
  if (o->cfg == NULL) {
    char err[STATUS_ERRBUF_SIZE];
    if (config_load(&o->cfg, NULL, err, sizeof err) != 0) {
      fprintf(stderr, "shopctl: %s\n", err);
      return NULL;
    }
  }
  return o->cfg->notify.mail_dir;
}

/* n of "<n>.eml" (digits only), or -1. */
static long eml_number(const char *name) {
  size_t len = strlen(name);
  if (len < 5 || len > 24 || strcmp(name + len - 4, ".eml") != 0) return -1;
  long n = 0;
  for (size_t i = 0; i < len - 4; i++) {
    if (name[i] < '0' || name[i] > '9') return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

/* The numbers of dir's messages, ascending (free them); -1 on error. */
static long list_numbers(const char *dir, long **out) {
  DIR *d = opendir(dir);
  if (d == NULL) return -1;
  long *v = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    long k = eml_number(e->d_name);
    if (k < 0) continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      long *nv = realloc(v, nc * sizeof *nv);
      if (nv == NULL) break;
      v = nv, cap = nc;
    }
    v[n++] = k;
  }
  closedir(d);
  if (n > 0) qsort(v, n, sizeof *v, cmp_long);
  *out = v;
  return (long)n;
}

/* The header named name (e.g. "Subject:") of f's header block into out. */
static void header_of(FILE *f, const char *name, char *out, size_t len) {
  out[0] = '\0';
  rewind(f);
  char line[1024];
  size_t nl = strlen(name);
  while (fgets(line, sizeof line, f) != NULL) {
    if (line[0] == '\r' || line[0] == '\n') break; /* end of the headers */
    if (strncasecmp(line, name, nl) == 0) {
      const char *v = line + nl;
      while (*v == ' ') v++;
      snprintf(out, len, "%s", v);
      out[strcspn(out, "\r\n")] = '\0';
      return;
    }
  }
}

static void path_of(char *path, size_t len, const char *dir, long k) {
  snprintf(path, len, "%s/%04ld.eml", dir, k);
}

static int mail_list(const char *dir) {
  long *v = NULL;
  long n = list_numbers(dir, &v);
  if (n < 0) {
    fprintf(stderr, "shopctl: mail: %s: %s (make run starts the mail catcher)\n", dir,
            strerror(errno));
    return 1;
  }
  printf("%-6s %-31s %-28s %s\n", "ID", "DATE", "TO", "SUBJECT");
  for (long i = 0; i < n; i++) {
    char path[4200], to[256], date[64], subject[512];
    path_of(path, sizeof path, dir, v[i]);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    header_of(f, "X-Envelope-To:", to, sizeof to);
    header_of(f, "Date:", date, sizeof date);
    header_of(f, "Subject:", subject, sizeof subject);
    fclose(f);
    printf("%-6ld %-31s %-28s %s\n", v[i], date, to, subject);
  }
  if (n == 0) fprintf(stderr, "(no mail yet in %s)\n", dir);
  free(v);
  return 0;
}

static int mail_show(const char *dir, const char *id) {
  long k = -1;
  if (strcmp(id, "last") == 0) {
    long *v = NULL;
    long n = list_numbers(dir, &v);
    if (n > 0) k = v[n - 1];
    free(v);
    if (k < 0) return fprintf(stderr, "shopctl: mail: no mail in %s\n", dir), 1;
  } else {
    char name[32];
    snprintf(name, sizeof name, "%.20s.eml", id);
    k = strlen(id) <= 20 ? eml_number(name) : -1;
    if (k < 0)
      return fprintf(stderr, "shopctl: mail show: bad id '%s' (a number, or last)\n", id), 2;
  }
  char path[4200];
  path_of(path, sizeof path, dir, k);
  FILE *f = fopen(path, "rb");
  if (f == NULL) return fprintf(stderr, "shopctl: mail: %s: %s\n", path, strerror(errno)), 1;
  char buf[8192];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
    /* The message as sent, with Unix line ends for the terminal. */
    for (size_t i = 0; i < got; i++)
      if (buf[i] != '\r') putchar(buf[i]);
  }
  fclose(f);
  return 0;
}

int cli_cmd_mail(cli_opts *o) {
  const char *sub = o->n_args > 1 ? o->args[1] : "";
  const char *dir = mail_dir(o);
  if (dir == NULL) return 2;
  if (strcmp(sub, "list") == 0 && o->n_args == 2) return mail_list(dir);
  if (strcmp(sub, "show") == 0 && o->n_args == 3) return mail_show(dir, o->args[2]);
  fprintf(stderr, "usage: shopctl mail list | mail show <id|last>\n");
  return 2;
}
