/* The admin HTTP server of a Shop program: /livez, /readyz and /metrics on
 * a loopback port, served by libmicrohttpd with a thread per connection
 * (a slow scrape never holds up a liveness probe). See app_internal.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/app_internal.h"

#define ADMIN_TEXT "text/plain; charset=utf-8"
/* The content type of the Prometheus text format 0.0.4. */
#define ADMIN_METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define ADMIN_CONNECTION_TIMEOUT_S 30
#define ADMIN_PID_HEADER "X-Shop-Pid"

struct app_admin {
  struct MHD_Daemon *d;
  int fd;
  int port;
  metrics_registry *reg;
  app_admin_ready_cb ready;
  void *ready_arg;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *type,
                             char *body, size_t len, bool owned, const char *allow) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
  if (r == NULL) {
    if (owned) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (allow != NULL) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  /* Which process answered: a script waiting for a restarted program to
   * be ready tells the new run from the old one (and from a stranger on
   * the port) by it. */
  char pid[24];
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  MHD_add_response_header(r, ADMIN_PID_HEADER, pid);
  enum MHD_Result ret = MHD_queue_response(conn, code, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *text,
                                  const char *allow) {
  return reply(conn, code, ADMIN_TEXT, (char *)text, strlen(text), false, allow);
}

static enum MHD_Result admin_request_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                        const char *method, const char *version,
                                        const char *upload_data, size_t *upload_data_size,
                                        void **con_cls) {
  app_admin *ad = cls;
  bool known =
      strcmp(url, "/livez") == 0 || strcmp(url, "/readyz") == 0 || strcmp(url, "/metrics") == 0;
  if (!known) return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, HEAD");
  if (strcmp(url, "/livez") == 0) return reply_text(conn, MHD_HTTP_OK, "ok\n", NULL);
  if (strcmp(url, "/readyz") == 0) {
    char why[STATUS_ERRBUF_SIZE];
    why[0] = '\0';
    if (ad->ready(ad->ready_arg, why, sizeof why - 1))
      return reply_text(conn, MHD_HTTP_OK, "ok\n", NULL);
    size_t n = strlen(why);
    why[n] = '\n';
    return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, ADMIN_TEXT, why, n + 1, false, NULL);
  }
  char *text = NULL;
  size_t len = 0;
  if (metrics_render(ad->reg, &text, &len) != STATUS_OK)
    return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
  return reply(conn, MHD_HTTP_OK, ADMIN_METRICS_TYPE, text, len, true, NULL);
}

/* Binds the socket ourselves: a port in use is then a clear error, and
 * port 0 tells us which port the kernel picked. */
static int admin_bind(const char *host, int port, int *bound, char *errbuf, size_t errlen) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    status_seterr(errbuf, errlen, "admin.host %s is not an IPv4 address", host);
    return -1;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    status_seterr(errbuf, errlen, "admin socket: %s", strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0) {
    status_seterr(errbuf, errlen, "admin port %s:%d: %s", host, port, strerror(errno));
    close(fd);
    return -1;
  }
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *bound = ntohs(sa.sin_port);
  return fd;
}

status_code app_admin_start(app_admin **out, const char *host, int port, metrics_registry *reg,
                            app_admin_ready_cb ready, void *ready_arg, char *errbuf,
                            size_t errlen) {
  *out = NULL;
  app_admin *ad = calloc(1, sizeof *ad);
  if (ad == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  ad->reg = reg;
  ad->ready = ready;
  ad->ready_arg = ready_arg;
  ad->fd = admin_bind(host, port, &ad->port, errbuf, errlen);
  if (ad->fd < 0) {
    free(ad);
    return STATUS_UNAVAILABLE;
  }
  ad->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                           NULL, admin_request_cb, ad, MHD_OPTION_LISTEN_SOCKET, ad->fd,
                           MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_CONNECTION_TIMEOUT_S,
                           MHD_OPTION_END);
  if (ad->d == NULL) {
    status_seterr(errbuf, errlen, "admin HTTP server on %s:%d did not start", host, ad->port);
    close(ad->fd);
    free(ad);
    return STATUS_INTERNAL;
  }
  *out = ad;
  return STATUS_OK;
}

int app_admin_port(const app_admin *ad) { return ad != NULL ? ad->port : 0; }

void app_admin_stop(app_admin *ad) {
  if (ad == NULL) return;
  /* Waits for the connection threads: no callback runs afterwards. It
   * also closes the listening socket, which MHD owns once started. */
  MHD_stop_daemon(ad->d);
  free(ad);
}
