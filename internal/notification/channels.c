/* The libcurl channels (notification.h): SMTP and JSON webhooks. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log.h"
#include "notification/notification.h"
#include "shop/notification/v1/events.pb-c.h"
#include "status/status.h"

struct notify_smtp {
  char *url;
  char *from;
  int tls; /* 0 none, 1 starttls, 2 tls */
  int timeout_ms;
  /* One handle kept across sends: libcurl keeps its connection open and
   * the next mail goes on the same SMTP session (a mail queue does the
   * same, RFC 5321 3.3: several transactions per session). mu makes the
   * channel safe from any thread (one sender thread uses it). */
  pthread_mutex_t mu;
  CURL *h;
};

struct notify_webhook {
  int channel;
  char *url;
  int timeout_ms;
};

status_code notify_smtp_create(notify_smtp **out, const shop_cfg *cfg, char *errbuf,
                               size_t errlen) {
  int tls;
  if (strcmp(cfg->notify.smtp_tls, "none") == 0)
    tls = 0;
  else if (strcmp(cfg->notify.smtp_tls, "starttls") == 0)
    tls = 1;
  else if (strcmp(cfg->notify.smtp_tls, "tls") == 0)
    tls = 2;
  else {
    status_seterr(errbuf, errlen, "notify.smtp_tls: %s is not none, starttls or tls",
                  cfg->notify.smtp_tls);
    return STATUS_INVALID_ARGUMENT;
  }
  notify_smtp *s = calloc(1, sizeof *s);
  if (s == NULL) return STATUS_RESOURCE_EXHAUSTED;
  pthread_mutex_init(&s->mu, NULL);
  s->url = strdup(cfg->notify.smtp_url);
  s->from = strdup(cfg->notify.smtp_from);
  s->tls = tls;
  s->timeout_ms = cfg->notify.timeout_ms;
  if (s->url == NULL || s->from == NULL) {
    notify_smtp_destroy(s);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  if (tls == 2 && strncmp(s->url, "smtps://", 8) != 0) {
    status_seterr(errbuf, errlen,
                  "notify.smtp_url: %s must start with smtps:// when smtp_tls is tls", s->url);
    notify_smtp_destroy(s);
    return STATUS_INVALID_ARGUMENT;
  }
  *out = s;
  return STATUS_OK;
}

void notify_smtp_destroy(notify_smtp *s) {
  if (s == NULL) return;
  if (s->h != NULL) curl_easy_cleanup(s->h);
  pthread_mutex_destroy(&s->mu);
  free(s->url);
  free(s->from);
  free(s);
}

typedef struct payload {
  const char *p;
  size_t left;
} payload;

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg) {
  payload *pl = arg;
  size_t n = size * nmemb;
  if (n > pl->left) n = pl->left;
  memcpy(buf, pl->p, n);
  pl->p += n;
  pl->left -= n;
  return n;
}

static size_t sink_cb(char *buf, size_t size, size_t nmemb, void *arg) {
  char *out = arg; /* 512 bytes: the start of the response body */
  size_t have = strlen(out), n = size * nmemb;
  if (have < 511) {
    size_t k = n < 511 - have ? n : 511 - have;
    memcpy(out + have, buf, k);
    out[have + k] = '\0';
  }
  return n;
}

static char *mail_text(const notify_smtp *s, const notify_message *m) {
  char date[64];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  size_t len = strlen(m->subject) + strlen(m->body) * 2 + strlen(s->from) + strlen(m->to) +
               strlen(m->message_id) + 512;
  char *t = malloc(len);
  if (t == NULL) return NULL;
  int n = snprintf(t, len,
                   "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@shop>\r\n"
                   "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n\r\n",
                   date, s->from, m->to, m->subject, m->message_id);
  /* The body with CRLF line ends (and dot-stuffing is libcurl's). */
  for (const char *b = m->body; *b != '\0' && (size_t)n + 3 < len; b++) {
    if (*b == '\n') t[n++] = '\r';
    t[n++] = *b;
  }
  t[n] = '\0';
  return t;
}

/* One SMTP transaction on s's handle (s->mu held). fresh: open a new
 * connection instead of reusing the kept one. *reused tells whether the
 * kept connection carried it. */
static CURLcode smtp_perform(notify_smtp *s, const notify_message *m, const char *text, bool fresh,
                             long *code, bool *reused, char cerr[CURL_ERROR_SIZE]) {
  char from[400], to[400];
  snprintf(from, sizeof from, "<%s>", s->from);
  snprintf(to, sizeof to, "<%s>", m->to);
  struct curl_slist *rcpt = curl_slist_append(NULL, to);
  payload pl = {text, strlen(text)};
  cerr[0] = '\0';
  /* reset clears the options and keeps the open connection. */
  curl_easy_reset(s->h);
  curl_easy_setopt(s->h, CURLOPT_URL, s->url);
  curl_easy_setopt(s->h, CURLOPT_MAIL_FROM, from);
  curl_easy_setopt(s->h, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(s->h, CURLOPT_READFUNCTION, read_cb);
  curl_easy_setopt(s->h, CURLOPT_READDATA, &pl);
  curl_easy_setopt(s->h, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
  curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, cerr);
  if (fresh) curl_easy_setopt(s->h, CURLOPT_FRESH_CONNECT, 1L);
  if (s->tls >= 1) curl_easy_setopt(s->h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
  CURLcode rc = curl_easy_perform(s->h);
  long connects = 0;
  *code = 0;
  curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, code);
  curl_easy_getinfo(s->h, CURLINFO_NUM_CONNECTS, &connects);
  *reused = connects == 0;
  curl_slist_free_all(rcpt);
  return rc;
}

static notify_result smtp_send_cb(void *self, const notify_message *m, char *errbuf,
                                  size_t errlen) {
  notify_smtp *s = self;
  char *text = mail_text(s, m);
  if (text == NULL) return NOTIFY_TRANSIENT;
  pthread_mutex_lock(&s->mu);
  if (s->h == NULL) s->h = curl_easy_init();
  if (s->h == NULL) {
    pthread_mutex_unlock(&s->mu);
    free(text);
    status_seterr(errbuf, errlen, "curl_easy_init failed");
    return NOTIFY_TRANSIENT;
  }
  char cerr[CURL_ERROR_SIZE];
  long code = 0;
  bool reused = false;
  CURLcode rc = smtp_perform(s, m, text, false, &code, &reused, cerr);
  /* A kept connection the server has dropped meanwhile (its idle timeout,
   * a restart) fails without a reply, or with the 421 of a server closing
   * it: that says nothing about the server now, so the mail is tried once
   * more on a new connection. */
  if (rc != CURLE_OK && reused && (code == 0 || code == 421)) {
    log_debug(NULL, "notification: the kept SMTP connection failed (%s); a new one",
              cerr[0] ? cerr : curl_easy_strerror(rc));
    rc = smtp_perform(s, m, text, true, &code, &reused, cerr);
  }
  pthread_mutex_unlock(&s->mu);
  free(text);
  if (rc == CURLE_OK) return NOTIFY_OK;
  status_seterr(errbuf, errlen, "smtp: %s (reply %ld)", cerr[0] ? cerr : curl_easy_strerror(rc),
                code);
  if (code >= 500 && code < 600) return NOTIFY_PERMANENT;
  /* No reply, or 421 (the server closes): the server is not there; any
   * other 4xx is about this message. */
  return code == 0 || code == 421 ? NOTIFY_UNREACHABLE : NOTIFY_TRANSIENT;
}

notify_channel notify_smtp_channel(notify_smtp *s) {
  return (notify_channel){.channel = SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_EMAIL,
                          .send_cb = smtp_send_cb,
                          .self = s};
}

status_code notify_webhook_create(notify_webhook **out, int channel, const char *url,
                                  int timeout_ms, char *errbuf, size_t errlen) {
  notify_webhook *w = calloc(1, sizeof *w);
  if (w == NULL) return STATUS_RESOURCE_EXHAUSTED;
  w->channel = channel;
  w->url = strdup(url != NULL ? url : "");
  w->timeout_ms = timeout_ms;
  if (w->url == NULL) {
    free(w);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *out = w;
  return STATUS_OK;
}

void notify_webhook_destroy(notify_webhook *w) {
  if (w == NULL) return;
  free(w->url);
  free(w);
}

static notify_result webhook_send_cb(void *self, const notify_message *m, char *errbuf,
                                     size_t errlen) {
  notify_webhook *w = self;
  if (w->url[0] == '\0') {
    status_seterr(errbuf, errlen, "webhook: no URL configured");
    return NOTIFY_PERMANENT;
  }
  json_t *j = json_object();
  json_object_set_new(j, "message_id", json_string(m->message_id));
  json_object_set_new(j, "event_type", json_string(m->event_type));
  json_object_set_new(j, "user_id", json_string(m->user_id));
  if (w->channel == SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_SMS) {
    json_object_set_new(j, "to", json_string(m->to));
    json_object_set_new(j, "text", json_string(m->body));
  } else {
    json_object_set_new(j, "title", json_string(m->subject));
    json_object_set_new(j, "body", json_string(m->body));
  }
  char *body = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (body == NULL) return NOTIFY_TRANSIENT;
  CURL *h = curl_easy_init();
  if (h == NULL) {
    free(body);
    return NOTIFY_TRANSIENT;
  }
  char idh[200];
  snprintf(idh, sizeof idh, "X-Message-Id: %s", m->message_id);
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  hdr = curl_slist_append(hdr, idh);
  /* The receiver joins the trace of the event being handled (log.h): a
   * child traceparent, as for an RPC call. */
  char tph[16 + LOG_TRACEPARENT_SIZE];
  if (log_current_traceparent()[0] != '\0') {
    memcpy(tph, "traceparent: ", 13);
    log_traceparent_child(log_current_traceparent(), tph + 13);
    hdr = curl_slist_append(hdr, tph);
  }
  char cerr[CURL_ERROR_SIZE] = "", resp[512] = "";
  curl_easy_setopt(h, CURLOPT_URL, w->url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)w->timeout_ms);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_cb);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
  CURLcode rc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  free(body);
  if (rc != CURLE_OK) {
    status_seterr(errbuf, errlen, "webhook: %s", cerr[0] ? cerr : curl_easy_strerror(rc));
    return NOTIFY_UNREACHABLE;
  }
  if (code >= 200 && code < 300) return NOTIFY_OK;
  status_seterr(errbuf, errlen, "webhook: %s (HTTP %ld)", resp, code);
  if (code >= 500 || code == 429) return NOTIFY_UNREACHABLE;
  if (code == 408) return NOTIFY_TRANSIENT;
  return NOTIFY_PERMANENT;
}

notify_channel notify_webhook_channel(notify_webhook *w) {
  return (notify_channel){.channel = w->channel, .send_cb = webhook_send_cb, .self = w};
}
