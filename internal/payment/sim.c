/* The simulated card processor: rules, latency, failures, and its own
 * file-backed idempotency records and ledger. See payment.h. */
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
  int64_t performed[5];
  unsigned tmp_counter;
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
  snprintf(path, sizeof path, "%s/keys", s->dir);
  ok = ok && mkdirs(path) == 0;
  snprintf(path, sizeof path, "%s/ledger", s->dir);
  ok = ok && mkdirs(path) == 0;
  snprintf(path, sizeof path, "%s/lock", s->dir);
  s->lock_fd = ok ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
  if (s->lock_fd < 0) {
    snprintf(errbuf, errlen, "payment sim: cannot use %s: %s", s->dir, strerror(errno));
    free(s);
    return STATUS_INTERNAL;
  }
  pthread_mutex_init(&s->mu, NULL);
  *out = s;
  return STATUS_OK;
}

void payment_sim_destroy(payment_sim *s) {
  if (s == NULL) return;
  close(s->lock_fd);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

void payment_sim_performed(payment_sim *s, int64_t out[5]) {
  pthread_mutex_lock(&s->mu);
  memcpy(out, s->performed, sizeof s->performed);
  pthread_mutex_unlock(&s->mu);
}

/* ---- Files: "name=value" lines ----------------------------------------------------- */

typedef struct kv {
  char text[SIM_FILE_MAX];
} kv;

static bool kv_read(const char *path, kv *f) {
  FILE *fp = fopen(path, "r");
  if (fp == NULL) return false;
  size_t n = fread(f->text, 1, sizeof f->text - 1, fp);
  fclose(fp);
  f->text[n] = '\0';
  return true;
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

/* Writes text to path atomically: a temporary file, fsync, rename, and an
 * fsync of the folder, so a crash leaves the old file or the new one. */
static bool file_write(payment_sim *s, const char *path, const char *text) {
  char tmp[SIM_PATH_MAX + 64];
  snprintf(tmp, sizeof tmp, "%s/.tmp-%d-%u", s->dir, (int)getpid(), ++s->tmp_counter);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  size_t len = strlen(text);
  bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  ok = ok && rename(tmp, path) == 0;
  if (!ok) {
    unlink(tmp);
    return false;
  }
  char dir[SIM_PATH_MAX + 32];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash != NULL) *slash = '\0';
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return true;
}

static void key_path(const payment_sim *s, const char *key, char *out, size_t len) {
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, (const unsigned char *)key, strlen(key));
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, h, sizeof h);
  snprintf(out, len, "%s/keys/%s", s->dir, hex);
}

static bool ref_valid(const char *ref) {
  if (ref == NULL || ref[0] == '\0' || strlen(ref) >= PAYMENT_REF_MAX) return false;
  for (const char *p = ref; *p != '\0'; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
  return true;
}

static void ledger_path(const payment_sim *s, const char *ref, char *out, size_t len) {
  snprintf(out, len, "%s/ledger/%s", s->dir, ref);
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
    out[o++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
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
  char path[SIM_PATH_MAX + 80], text[SIM_FILE_MAX], key[PAYMENT_KEY_MAX + 1];
  one_line(key, sizeof key, req->idempotency_key);
  snprintf(text, sizeof text,
           "kind=authorization\nkey=%s\namount=%lld\ncurrency=%s\nstate=%s\ncapture_fail=%d\n"
           "capture=%s\n",
           key, (long long)req->amount, req->currency != NULL ? req->currency : "", state,
           capture_fail ? 1 : 0, capture != NULL ? capture : "");
  ledger_path(s, ref, path, sizeof path);
  if (!file_write(s, path, text)) transient(res, "gateway storage failure");
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
  char path[SIM_PATH_MAX + 80], kind[32], state[32];
  if (!ref_valid(ref)) {
    decline(res, R(AUTHORIZATION_INVALID), "unknown authorization");
    return false;
  }
  ledger_path(s, ref, path, sizeof path);
  if (!kv_read(path, f)) {
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
  char cap[PAYMENT_REF_MAX], path[SIM_PATH_MAX + 80], text[SIM_FILE_MAX];
  char key[PAYMENT_KEY_MAX + 1], currency[8];
  new_ref(cap, "cap");
  one_line(key, sizeof key, req->idempotency_key);
  kv_get(&f, "currency", currency, sizeof currency);
  snprintf(text, sizeof text,
           "kind=capture\nkey=%s\nauthorization=%s\namount=%lld\ncurrency=%s\nstate=captured\n"
           "refund=\n",
           key, req->reference, (long long)amount, currency);
  ledger_path(s, cap, path, sizeof path);
  if (!file_write(s, path, text)) TRANSIENT(res, "gateway storage failure");
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
  char path[SIM_PATH_MAX + 80], kind[32], state[32], text[SIM_FILE_MAX];
  kv f;
  if (!ref_valid(req->reference)) DECLINE(res, R(AUTHORIZATION_INVALID), "unknown capture");
  ledger_path(s, req->reference, path, sizeof path);
  if (!kv_read(path, &f)) DECLINE(res, R(AUTHORIZATION_INVALID), "unknown capture");
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
  if (!file_write(s, path, text)) TRANSIENT(res, "gateway storage failure");
  res->outcome = PAYMENT_GW_APPROVED;
  snprintf(res->reference, sizeof res->reference, "%s", re);
  snprintf(res->message, sizeof res->message, "refunded");
}

/* ---- The gateway call ------------------------------------------------------------------ */

static void record_write(payment_sim *s, const char *path, payment_op op,
                         const payment_gw_request *req, const payment_gw_result *res) {
  char text[SIM_FILE_MAX], msg[256], key[PAYMENT_KEY_MAX + 1];
  one_line(msg, sizeof msg, res->message);
  one_line(key, sizeof key, req->idempotency_key);
  snprintf(text, sizeof text,
           "key=%s\nop=%d\namount=%lld\noutcome=%d\nreason=%d\nreference=%s\nmessage=%s\n", key,
           (int)op, (long long)req->amount, (int)res->outcome, (int)res->reason, res->reference,
           msg);
  /* A record that cannot be written makes the answer unknown: transient,
   * and the retry finds the ledger as this call left it. */
  file_write(s, path, text);
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

  char path[SIM_PATH_MAX + 80];
  key_path(s, req->idempotency_key, path, sizeof path);
  pthread_mutex_lock(&s->mu);
  while (flock(s->lock_fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  kv f;
  if (kv_read(path, &f)) {
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
    if (res->outcome != PAYMENT_GW_TRANSIENT) {
      record_write(s, path, op, req, res);
      if (res->outcome == PAYMENT_GW_APPROVED && op >= 1 && op <= 4) s->performed[op]++;
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

payment_gateway payment_sim_gateway(payment_sim *s) {
  return (payment_gateway){.call_cb = sim_call_cb, .self = s};
}
