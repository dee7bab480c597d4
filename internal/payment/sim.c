/* The simulated card processor: rules, latency, failures, and its own
 * file-backed idempotency records and ledger. See payment.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "payment/payment.h"

#define R(name) SHOP__PAYMENT__V1__PAYMENT_FAILURE_REASON__PAYMENT_FAILURE_REASON_##name
#define SIM_PATH_MAX 1024
#define SIM_FILE_MAX 4096

/* name -> "field=value" lines: the newest state of each record or ledger
 * entry (open addressing, linear probing, grows at half full). */
typedef struct sim_entry {
  char *name, *text;
} sim_entry;
typedef struct sim_map {
  sim_entry *e;
  size_t cap, n;
} sim_map;

static bool journal_catch_up(payment_sim *s);
static bool import_files(payment_sim *s);
static void map_free(sim_map *m);

struct payment_sim {
  char dir[SIM_PATH_MAX];
  int latency_ms;
  int failure_permille;
  int64_t amount_limit;
  char currencies[256];
  void (*sleep_ms_cb)(void *self, int ms);
  uint32_t (*random_cb)(void *self);
  void *clock_self;
  pthread_mutex_t mu; /* threads of this process */
  int lock_fd;        /* flock: other processes sharing the folder */
  int journal_fd;     /* O_APPEND: every record and ledger entry, in order */
  off_t journal_read; /* read (ours and others') up to here */
  bool dirty;         /* written since the last fdatasync */
  sim_map records;    /* idempotency records by the hex SHA-256 of their key */
  sim_map ledger;     /* authorizations and captures by id */
  char *out;          /* this call's journal lines */
  size_t out_len, out_cap;
  int64_t performed[5];
};

const char *payment_op_name(payment_op op) {
  switch (op) {
  case PAYMENT_OP_AUTHORIZE:
    return "authorize";
  case PAYMENT_OP_CAPTURE:
    return "capture";
  case PAYMENT_OP_VOID:
    return "void";
  case PAYMENT_OP_REFUND:
    return "refund";
  default:
    return "?";
  }
}

static void real_sleep_ms(void *self, int ms) {
  (void)self;
  if (ms <= 0) return;
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint32_t real_random(void *self) {
  (void)self;
  return randombytes_random();
}

void payment_sim_opts_from_cfg(payment_sim_opts *o, const shop_cfg *cfg) {
  memset(o, 0, sizeof *o);
  o->state_dir = cfg->payment.state_dir;
  o->latency_ms = cfg->payment.latency_ms;
  o->failure_permille = cfg->payment.failure_permille;
  o->amount_limit = cfg->payment.amount_limit;
  o->currencies = cfg->payment.currencies;
}

/* mkdir -p for the state folder. */
static int mkdirs(const char *path) {
  char tmp[SIM_PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p != '\0'; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -1;
  return 0;
}

status_code payment_sim_create(payment_sim **out, const payment_sim_opts *o, char *errbuf,
                               size_t errlen) {
  if (o->state_dir == NULL || o->state_dir[0] == '\0' ||
      strlen(o->state_dir) > SIM_PATH_MAX - 100 || o->latency_ms < 0 || o->failure_permille < 0 ||
      o->failure_permille > 1000 || o->amount_limit <= 0) {
    snprintf(errbuf, errlen, "payment sim: bad options (state_dir, latency, failure rate, limit)");
    return STATUS_INVALID_ARGUMENT;
  }
  if (sodium_init() < 0) {
    snprintf(errbuf, errlen, "payment sim: libsodium did not initialise");
    return STATUS_INTERNAL;
  }
  payment_sim *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  snprintf(s->dir, sizeof s->dir, "%s", o->state_dir);
  s->latency_ms = o->latency_ms;
  s->failure_permille = o->failure_permille;
  s->amount_limit = o->amount_limit;
  snprintf(s->currencies, sizeof s->currencies, "%s", o->currencies != NULL ? o->currencies : "");
  s->sleep_ms_cb = o->sleep_ms_cb != NULL ? o->sleep_ms_cb : real_sleep_ms;
  s->random_cb = o->random_cb != NULL ? o->random_cb : real_random;
  s->clock_self = o->clock_self;
  char path[SIM_PATH_MAX + 32];
  bool ok = mkdirs(s->dir) == 0;
  snprintf(path, sizeof path, "%s/lock", s->dir);
  s->lock_fd = ok ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
  snprintf(path, sizeof path, "%s/journal", s->dir);
  s->journal_fd = s->lock_fd >= 0 ? open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
  if (s->lock_fd < 0 || s->journal_fd < 0) {
    snprintf(errbuf, errlen, "payment sim: cannot use %s: %s", s->dir, strerror(errno));
    if (s->lock_fd >= 0) close(s->lock_fd);
    free(s);
    return STATUS_INTERNAL;
  }
  pthread_mutex_init(&s->mu, NULL);
  while (flock(s->lock_fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  bool loaded = journal_catch_up(s) && import_files(s);
  flock(s->lock_fd, LOCK_UN);
  if (!loaded) {
    snprintf(errbuf, errlen, "payment sim: cannot read the journal in %s: %s", s->dir,
             strerror(errno));
    payment_sim_destroy(s);
    return STATUS_INTERNAL;
  }
  *out = s;
  return STATUS_OK;
}

void payment_sim_destroy(payment_sim *s) {
  if (s == NULL) return;
  if (s->dirty) fdatasync(s->journal_fd);
  close(s->journal_fd);
  close(s->lock_fd);
  pthread_mutex_destroy(&s->mu);
  map_free(&s->records);
  map_free(&s->ledger);
  free(s->out);
  free(s);
}

void payment_sim_performed(payment_sim *s, int64_t out[5]) {
  pthread_mutex_lock(&s->mu);
  memcpy(out, s->performed, sizeof s->performed);
  pthread_mutex_unlock(&s->mu);
}

/* ---- State: "name=value" lines, kept in one journal ----------------------------------- */

/*
 * Every idempotency record and every state of a ledger entry is one line of
 * state_dir/journal: "<map><TAB><name><TAB><field=value TAB ...>\n" (map K
 * for records, L for the ledger; values hold no tab or line break). The
 * newest line of a name is its state. A call appends its lines in one
 * write(2) under the folder's flock, after reading what other processes
 * appended since; the maps in memory follow the file. fdatasync comes in
 * payment_sim_sync (the worker calls it before it commits what the answers
 * decided), so a batch of calls costs one.
 */

typedef struct kv {
  char text[SIM_FILE_MAX];
} kv;

static uint64_t name_hash(const char *name) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
    h ^= *p;
    h *= 1099511628211ULL;
  }
  return h;
}

static sim_entry *map_slot(sim_map *m, const char *name) {
  size_t i = (size_t)(name_hash(name) & (m->cap - 1));
  while (m->e[i].name != NULL && strcmp(m->e[i].name, name) != 0) i = (i + 1) & (m->cap - 1);
  return &m->e[i];
}

static bool map_grow(sim_map *m) {
  size_t cap = m->cap ? m->cap * 2 : 1024;
  sim_entry *old = m->e;
  size_t oldcap = m->cap;
  m->e = calloc(cap, sizeof *m->e);
  if (m->e == NULL) {
    m->e = old;
    return false;
  }
  m->cap = cap;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].name != NULL) *map_slot(m, old[i].name) = old[i];
  free(old);
  return true;
}

/* Sets name's text (copied). */
static bool map_put(sim_map *m, const char *name, const char *text, size_t len) {
  if ((m->n + 1) * 2 > m->cap && !map_grow(m)) return false;
  sim_entry *e = map_slot(m, name);
  char *t = malloc(len + 1);
  if (t == NULL) return false;
  memcpy(t, text, len);
  t[len] = '\0';
  if (e->name == NULL) {
    if ((e->name = strdup(name)) == NULL) {
      free(t);
      return false;
    }
    m->n++;
  }
  free(e->text);
  e->text = t;
  return true;
}

static void map_free(sim_map *m) {
  for (size_t i = 0; i < m->cap; i++) {
    free(m->e[i].name);
    free(m->e[i].text);
  }
  free(m->e);
  memset(m, 0, sizeof *m);
}

/* The state of name in map m into f ("name=value" lines); false when m has
 * none. */
static bool kv_read(payment_sim *s, sim_map *m, const char *name, kv *f) {
  (void)s;
  if (m->cap == 0) return false;
  const sim_entry *e = map_slot(m, name);
  if (e->name == NULL) return false;
  snprintf(f->text, sizeof f->text, "%s", e->text);
  return true;
}

/* Applies one journal line (without its '\n'). */
static bool journal_apply(payment_sim *s, char *line, size_t len) {
  if (len < 3 || line[1] != '\t') return true; /* not ours: skip */
  sim_map *m = line[0] == 'K' ? &s->records : line[0] == 'L' ? &s->ledger : NULL;
  char *name = line + 2, *tab = memchr(name, '\t', len - 2);
  if (m == NULL || tab == NULL) return true;
  *tab = '\0';
  char *text = tab + 1;
  size_t tlen = len - (size_t)(text - line);
  for (size_t i = 0; i < tlen; i++)
    if (text[i] == '\t') text[i] = '\n';
  return map_put(m, name, text, tlen);
}

/* Applies the lines in buf[0..n) (whole lines); returns the bytes used. */
static size_t journal_apply_all(payment_sim *s, char *buf, size_t n, bool *ok) {
  size_t used = 0;
  for (;;) {
    char *nl = memchr(buf + used, '\n', n - used);
    if (nl == NULL) break;
    size_t len = (size_t)(nl - (buf + used));
    if (!journal_apply(s, buf + used, len)) *ok = false;
    used += len + 1;
  }
  return used;
}

/* Reads what was appended since journal_read (by this process or
 * another). Under the folder's lock. */
static bool journal_catch_up(payment_sim *s) {
  struct stat st;
  if (fstat(s->journal_fd, &st) != 0) return false;
  if (st.st_size <= s->journal_read) return true;
  size_t want = (size_t)(st.st_size - s->journal_read);
  char *buf = malloc(want + 1);
  if (buf == NULL) return false;
  size_t got = 0;
  while (got < want) {
    ssize_t r = pread(s->journal_fd, buf + got, want - got, s->journal_read + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  bool ok = true;
  size_t used = journal_apply_all(s, buf, got, &ok);
  s->journal_read += (off_t)used;
  free(buf);
  return ok;
}

/* Queues the state text of name (K: a record, L: a ledger entry) for the
 * call's write. */
static void stage(payment_sim *s, char map, const char *name, const char *text) {
  size_t nl = strlen(name), tl = strlen(text);
  size_t need = s->out_len + nl + tl + 5;
  if (need > s->out_cap) {
    size_t cap = s->out_cap ? s->out_cap : 1024;
    while (cap < need) cap *= 2;
    char *p = realloc(s->out, cap);
    if (p == NULL) {
      s->out_len = (size_t)-1; /* the write fails: the call is transient */
      return;
    }
    s->out = p;
    s->out_cap = cap;
  }
  if (s->out_len == (size_t)-1) return;
  char *o = s->out + s->out_len;
  *o++ = map;
  *o++ = '\t';
  memcpy(o, name, nl);
  o += nl;
  *o++ = '\t';
  for (size_t i = 0; i < tl; i++) *o++ = text[i] == '\n' ? '\t' : text[i];
  /* A text ends with its last line's '\n', now the line's end. */
  if (tl == 0 || text[tl - 1] != '\n')
    *o++ = '\n';
  else
    o[-1] = '\n';
  s->out_len = (size_t)(o - s->out);
}

/* Appends the call's lines, then applies them to the maps. False (nothing
 * changed) when they could not be written. */
static bool journal_commit(payment_sim *s) {
  bool ok = s->out_len != (size_t)-1;
  size_t done = 0;
  while (ok && done < s->out_len) {
    ssize_t w = write(s->journal_fd, s->out + done, s->out_len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      ok = false;
    else
      done += (size_t)w;
  }
  if (ok && s->out_len > 0) {
    s->dirty = true;
    ok = journal_catch_up(s);
  } else if (!ok && done > 0) {
    /* A torn tail: the lines after the last whole one are skipped by every
     * reader (journal_apply_all stops at the last '\n'). */
    journal_catch_up(s);
  }
  s->out_len = 0;
  return ok;
}

status_code payment_sim_sync(payment_sim *s, char *errbuf, size_t errlen) {
  pthread_mutex_lock(&s->mu);
  bool ok = !s->dirty || fdatasync(s->journal_fd) == 0;
  if (ok) s->dirty = false;
  pthread_mutex_unlock(&s->mu);
  if (!ok) {
    snprintf(errbuf, errlen, "payment sim: fdatasync of the journal: %s", strerror(errno));
    return STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}

/* Moves the state of an older sim (a file per record in keys/ and per
 * ledger entry in ledger/) into an empty journal, once. */
static bool import_dir(payment_sim *s, const char *sub, char map) {
  char path[SIM_PATH_MAX + 80];
  snprintf(path, sizeof path, "%s/%s", s->dir, sub);
  DIR *d = opendir(path);
  if (d == NULL) return errno == ENOENT;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char file[SIM_PATH_MAX + 400];
    snprintf(file, sizeof file, "%s/%s", path, de->d_name);
    FILE *fp = fopen(file, "r");
    if (fp == NULL) continue;
    kv f;
    size_t n = fread(f.text, 1, sizeof f.text - 1, fp);
    fclose(fp);
    f.text[n] = '\0';
    stage(s, map, de->d_name, f.text);
  }
  closedir(d);
  return true;
}

static bool import_files(payment_sim *s) {
  if (s->journal_read > 0) return true;
  if (!import_dir(s, "keys", 'K') || !import_dir(s, "ledger", 'L')) return false;
  if (s->out_len == 0) return true;
  return journal_commit(s) && fdatasync(s->journal_fd) == 0 && (s->dirty = false, true);
}

/* The value of name in f, copied to out ("" when missing). */
static void kv_get(const kv *f, const char *name, char *out, size_t len) {
  size_t nl = strlen(name);
  out[0] = '\0';
  for (const char *p = f->text; *p != '\0';) {
    const char *eol = strchr(p, '\n');
    size_t ll = eol != NULL ? (size_t)(eol - p) : strlen(p);
    if (ll > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
      size_t vl = ll - nl - 1;
      if (vl >= len) vl = len - 1;
      memcpy(out, p + nl + 1, vl);
      out[vl] = '\0';
      return;
    }
    if (eol == NULL) break;
    p = eol + 1;
  }
}

static int64_t kv_i64(const kv *f, const char *name) {
  char v[32];
  kv_get(f, name, v, sizeof v);
  return strtoll(v, NULL, 10);
}

/* A record's name: the hex SHA-256 of its key. */
static void key_name(const char *key, char *out, size_t len) {
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, (const unsigned char *)key, strlen(key));
  sodium_bin2hex(out, len, h, sizeof h);
}

static bool ref_valid(const char *ref) {
  if (ref == NULL || ref[0] == '\0' || strlen(ref) >= PAYMENT_REF_MAX) return false;
  for (const char *p = ref; *p != '\0'; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
  return true;
}

static void new_ref(char *out, const char *prefix) {
  unsigned char b[12];
  randombytes_buf(b, sizeof b);
  char hex[25];
  sodium_bin2hex(hex, sizeof hex, b, sizeof b);
  snprintf(out, PAYMENT_REF_MAX, "%s_%s", prefix, hex);
}

/* Strips characters that would break a "name=value" line. */
static void one_line(char *out, size_t len, const char *in) {
  size_t o = 0;
  for (const char *p = in != NULL ? in : ""; *p != '\0' && o + 1 < len; p++)
    out[o++] = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
  out[o] = '\0';
}

/* ---- Rules -------------------------------------------------------------------------- */

/* Sets the answer and returns from the (void) caller. */
#define DECLINE(...)                                                                               \
  do {                                                                                             \
    decline(__VA_ARGS__);                                                                          \
    return;                                                                                        \
  } while (0)
#define TRANSIENT(...)                                                                             \
  do {                                                                                             \
    transient(__VA_ARGS__);                                                                        \
    return;                                                                                        \
  } while (0)

static void decline(payment_gw_result *res, Shop__Payment__V1__PaymentFailureReason reason,
                    const char *msg) {
  res->outcome = PAYMENT_GW_DECLINED;
  res->reason = reason;
  snprintf(res->message, sizeof res->message, "%s", msg);
}

static void transient(payment_gw_result *res, const char *msg) {
  res->outcome = PAYMENT_GW_TRANSIENT;
  res->reason = R(GATEWAY_UNAVAILABLE);
  snprintf(res->message, sizeof res->message, "%s", msg);
}

static bool token_valid(const char *t) {
  if (t == NULL || strncmp(t, "tok_", 4) != 0) return false;
  size_t n = strlen(t + 4);
  if (n < 1 || n > 64) return false;
  for (const char *p = t + 4; *p != '\0'; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
  return true;
}

static bool prefixed(const char *t, const char *prefix) {
  return strncmp(t, prefix, strlen(prefix)) == 0;
}

static bool currency_accepted(const payment_sim *s, const char *c) {
  if (c == NULL || strlen(c) != 3) return false;
  for (const char *p = s->currencies; *p != '\0';) {
    while (*p == ',' || *p == ' ') p++;
    if (strncmp(p, c, 3) == 0 && (p[3] == ',' || p[3] == '\0' || p[3] == ' ')) return true;
    while (*p != '\0' && *p != ',') p++;
  }
  return false;
}

static void ledger_write_auth(payment_sim *s, const char *ref, const payment_gw_request *req,
                              const char *state, bool capture_fail, const char *capture,
                              payment_gw_result *res) {
  char text[SIM_FILE_MAX], key[PAYMENT_KEY_MAX + 1], currency[8];
  one_line(key, sizeof key, req->idempotency_key);
  one_line(currency, sizeof currency, req->currency);
  snprintf(text, sizeof text,
           "kind=authorization\nkey=%s\namount=%lld\ncurrency=%s\nstate=%s\ncapture_fail=%d\n"
           "capture=%s\n",
           key, (long long)req->amount, currency, state, capture_fail ? 1 : 0,
           capture != NULL ? capture : "");
  (void)res;
  stage(s, 'L', ref, text);
}

static void authorize(payment_sim *s, const payment_gw_request *req, payment_gw_result *res) {
  const char *t = req->token;
  if (!token_valid(t)) DECLINE(res, R(INVALID_TOKEN), "the payment token is not valid");
  if (prefixed(t, "tok_expired")) DECLINE(res, R(INVALID_TOKEN), "the card has expired");
  if (!currency_accepted(s, req->currency))
    DECLINE(res, R(CURRENCY_NOT_SUPPORTED), "the currency is not accepted");
  if (req->amount <= 0 || req->amount > s->amount_limit)
    DECLINE(res, R(AMOUNT_LIMIT_EXCEEDED), "the amount is over the card's limit");
  if (prefixed(t, "tok_decline")) DECLINE(res, R(DECLINED), "the card was declined");
  if (prefixed(t, "tok_insufficient_funds"))
    DECLINE(res, R(INSUFFICIENT_FUNDS), "insufficient funds");
  if (prefixed(t, "tok_unavailable")) TRANSIENT(res, "the card network is unavailable");
  new_ref(res->reference, "auth");
  res->outcome = PAYMENT_GW_APPROVED;
  snprintf(res->message, sizeof res->message, "authorized");
  ledger_write_auth(s, res->reference, req, "open", prefixed(t, "tok_capture_fail"), NULL, res);
}

/* Loads an authorization for capture or void; declines when it is not
 * open. */
static bool auth_open(payment_sim *s, const char *ref, kv *f, payment_gw_result *res) {
  char kind[32], state[32];
  if (!ref_valid(ref)) {
    decline(res, R(AUTHORIZATION_INVALID), "unknown authorization");
    return false;
  }
  if (!kv_read(s, &s->ledger, ref, f)) {
    decline(res, R(AUTHORIZATION_INVALID), "unknown authorization");
    return false;
  }
  kv_get(f, "kind", kind, sizeof kind);
  kv_get(f, "state", state, sizeof state);
  if (strcmp(kind, "authorization") != 0 || strcmp(state, "open") != 0) {
    decline(res, R(AUTHORIZATION_INVALID), "the authorization is not open");
    return false;
  }
  return true;
}

static void rewrite_auth(payment_sim *s, const char *ref, const kv *f, const char *state,
                         const char *capture, payment_gw_result *res) {
  char key[PAYMENT_KEY_MAX + 1], currency[8];
  kv_get(f, "key", key, sizeof key);
  kv_get(f, "currency", currency, sizeof currency);
  payment_gw_request orig = {
      .idempotency_key = key, .amount = kv_i64(f, "amount"), .currency = currency};
  ledger_write_auth(s, ref, &orig, state, kv_i64(f, "capture_fail") != 0, capture, res);
}

static void capture(payment_sim *s, const payment_gw_request *req, payment_gw_result *res) {
  kv f;
  if (!auth_open(s, req->reference, &f, res)) return;
  if (kv_i64(&f, "capture_fail") != 0) DECLINE(res, R(DECLINED), "the issuer refused the capture");
  int64_t amount = kv_i64(&f, "amount");
  char cap[PAYMENT_REF_MAX], text[SIM_FILE_MAX];
  char key[PAYMENT_KEY_MAX + 1], currency[8];
  new_ref(cap, "cap");
  one_line(key, sizeof key, req->idempotency_key);
  kv_get(&f, "currency", currency, sizeof currency);
  snprintf(text, sizeof text,
           "kind=capture\nkey=%s\nauthorization=%s\namount=%lld\ncurrency=%s\nstate=captured\n"
           "refund=\n",
           key, req->reference, (long long)amount, currency);
  stage(s, 'L', cap, text);
  rewrite_auth(s, req->reference, &f, "captured", cap, res);
  if (res->outcome == PAYMENT_GW_TRANSIENT) return;
  res->outcome = PAYMENT_GW_APPROVED;
  snprintf(res->reference, sizeof res->reference, "%s", cap);
  snprintf(res->message, sizeof res->message, "captured");
}

static void void_auth(payment_sim *s, const payment_gw_request *req, payment_gw_result *res) {
  kv f;
  if (!auth_open(s, req->reference, &f, res)) return;
  rewrite_auth(s, req->reference, &f, "voided", NULL, res);
  if (res->outcome == PAYMENT_GW_TRANSIENT) return;
  res->outcome = PAYMENT_GW_APPROVED;
  new_ref(res->reference, "void");
  snprintf(res->message, sizeof res->message, "voided");
}

static void refund(payment_sim *s, const payment_gw_request *req, payment_gw_result *res) {
  char kind[32], state[32], text[SIM_FILE_MAX];
  kv f;
  if (!ref_valid(req->reference)) DECLINE(res, R(AUTHORIZATION_INVALID), "unknown capture");
  if (!kv_read(s, &s->ledger, req->reference, &f))
    DECLINE(res, R(AUTHORIZATION_INVALID), "unknown capture");
  kv_get(&f, "kind", kind, sizeof kind);
  kv_get(&f, "state", state, sizeof state);
  if (strcmp(kind, "capture") != 0 || strcmp(state, "captured") != 0)
    DECLINE(res, R(AUTHORIZATION_INVALID), "the capture cannot be refunded");
  char re[PAYMENT_REF_MAX], key[PAYMENT_KEY_MAX + 1], auth[PAYMENT_REF_MAX], currency[8];
  new_ref(re, "re");
  kv_get(&f, "key", key, sizeof key);
  kv_get(&f, "authorization", auth, sizeof auth);
  kv_get(&f, "currency", currency, sizeof currency);
  snprintf(text, sizeof text,
           "kind=capture\nkey=%s\nauthorization=%s\namount=%lld\ncurrency=%s\nstate=refunded\n"
           "refund=%s\n",
           key, auth, (long long)kv_i64(&f, "amount"), currency, re);
  stage(s, 'L', req->reference, text);
  res->outcome = PAYMENT_GW_APPROVED;
  snprintf(res->reference, sizeof res->reference, "%s", re);
  snprintf(res->message, sizeof res->message, "refunded");
}

/* ---- The gateway call ------------------------------------------------------------------ */

static void record_write(payment_sim *s, const char *name, payment_op op,
                         const payment_gw_request *req, const payment_gw_result *res) {
  char text[SIM_FILE_MAX], msg[256], key[PAYMENT_KEY_MAX + 1];
  one_line(msg, sizeof msg, res->message);
  one_line(key, sizeof key, req->idempotency_key);
  snprintf(text, sizeof text,
           "key=%s\nop=%d\namount=%lld\noutcome=%d\nreason=%d\nreference=%s\nmessage=%s\n", key,
           (int)op, (long long)req->amount, (int)res->outcome, (int)res->reason, res->reference,
           msg);
  stage(s, 'K', name, text);
}

static void sim_call_cb(void *self, payment_op op, const payment_gw_request *req,
                        payment_gw_result *res) {
  payment_sim *s = self;
  memset(res, 0, sizeof *res);
  if (s->latency_ms > 0) s->sleep_ms_cb(s->clock_self, s->latency_ms);
  bool fail = false, lost = false;
  if (s->failure_permille > 0) {
    uint32_t r = s->random_cb(s->clock_self);
    fail = (int)(r % 1000) < s->failure_permille;
    lost = fail && ((r >> 16) & 1) != 0;
  }
  if (fail && !lost) TRANSIENT(res, "gateway unavailable (simulated)");
  if (req->idempotency_key == NULL || req->idempotency_key[0] == '\0' ||
      strlen(req->idempotency_key) > PAYMENT_KEY_MAX)
    DECLINE(res, R(AUTHORIZATION_INVALID), "an idempotency key is required");

  char name[crypto_hash_sha256_BYTES * 2 + 1];
  key_name(req->idempotency_key, name, sizeof name);
  pthread_mutex_lock(&s->mu);
  while (flock(s->lock_fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  kv f;
  if (!journal_catch_up(s)) {
    transient(res, "gateway storage failure (reading the journal)");
  } else if (kv_read(s, &s->records, name, &f)) {
    if (kv_i64(&f, "op") != (int64_t)op || kv_i64(&f, "amount") != req->amount) {
      decline(res, R(AUTHORIZATION_INVALID), "the idempotency key was used for another request");
    } else {
      res->outcome = (payment_gw_outcome)kv_i64(&f, "outcome");
      res->reason = (Shop__Payment__V1__PaymentFailureReason)kv_i64(&f, "reason");
      kv_get(&f, "reference", res->reference, sizeof res->reference);
      kv_get(&f, "message", res->message, sizeof res->message);
    }
  } else {
    switch (op) {
    case PAYMENT_OP_AUTHORIZE:
      authorize(s, req, res);
      break;
    case PAYMENT_OP_CAPTURE:
      capture(s, req, res);
      break;
    case PAYMENT_OP_VOID:
      void_auth(s, req, res);
      break;
    case PAYMENT_OP_REFUND:
      refund(s, req, res);
      break;
    default:
      decline(res, R(UNSPECIFIED), "unknown operation");
      break;
    }
    /* The record and the ledger lines of the call go out together, or
     * nothing does: a call that cannot write is transient, and its retry
     * finds the state as it was. */
    if (res->outcome != PAYMENT_GW_TRANSIENT) record_write(s, name, op, req, res);
    if (!journal_commit(s)) {
      transient(res, "gateway storage failure");
    } else if (res->outcome == PAYMENT_GW_APPROVED && op >= 1 && op <= 4) {
      s->performed[op]++;
    }
  }
  flock(s->lock_fd, LOCK_UN);
  pthread_mutex_unlock(&s->mu);
  if (lost) {
    /* Done, but the answer never reaches the caller. */
    memset(res, 0, sizeof *res);
    transient(res, "gateway timeout (simulated; the operation may have happened)");
  }
}

static status_code sim_sync_cb(void *self, char *errbuf, size_t errlen) {
  return payment_sim_sync(self, errbuf, errlen);
}

payment_gateway payment_sim_gateway(payment_sim *s) {
  return (payment_gateway){.call_cb = sim_call_cb, .sync_cb = sim_sync_cb, .self = s};
}
