/* Prometheus metrics of the RPC server, named and labelled as
 * go-grpc-prometheus names them (grpc_server_*), so that the dashboards
 * and alerts written for gRPC services work unchanged. See rpc_internal.h. */
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc_internal.h"

/* grpc-go's codes.Code.String(), which go-grpc-prometheus puts in
 * grpc_code: "OK", "InvalidArgument", ... */
static const char *const grpc_code_names[17] = {
    "OK",       "Canceled",        "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",   "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",      "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated",
};

struct rpc_metrics {
  bool client;
  metrics_family *started, *handled, *received, *sent, *seconds;
};

const char *rpc_metrics_code_name(status_code code) {
  return status_is_valid((int)code) ? grpc_code_names[code] : "Unknown";
}

/* go-grpc-prometheus' names and help texts: [0] server side, [1] client side;
 * per side started, handled, msg_received, msg_sent, handling_seconds. */
static const char *const family_names[2][5][2] = {
    {{"grpc_server_started_total", "Total number of RPCs started on the server."},
     {"grpc_server_handled_total",
      "Total number of RPCs completed on the server, regardless of success or failure."},
     {"grpc_server_msg_received_total",
      "Total number of RPC stream messages received on the server."},
     {"grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server."},
     {"grpc_server_handling_seconds",
      "Histogram of response latency (seconds) of gRPC that had "
      "been application-level handled by the server."}},
    {{"grpc_client_started_total", "Total number of RPCs started on the client."},
     {"grpc_client_handled_total",
      "Total number of RPCs completed by the client, regardless of success or failure."},
     {"grpc_client_msg_received_total",
      "Total number of RPC stream messages received by the client."},
     {"grpc_client_msg_sent_total", "Total number of gRPC stream messages sent by the client."},
     {"grpc_client_handling_seconds",
      "Histogram of response latency (seconds) of the gRPC until "
      "it is finished by the application."}},
};

rpc_metrics *rpc_metrics_create(metrics_registry *reg, bool client) {
  if (reg == NULL) return NULL;
  rpc_metrics *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  m->client = client;
  static const char *const l3[] = {"grpc_type", "grpc_service", "grpc_method", NULL};
  static const char *const l4[] = {"grpc_type", "grpc_service", "grpc_method", "grpc_code", NULL};
  const char *const(*n)[2] = family_names[client ? 1 : 0];
  m->started = metrics_counter_family(reg, n[0][0], n[0][1], l3);
  m->handled = metrics_counter_family(reg, n[1][0], n[1][1], l4);
  m->received = metrics_counter_family(reg, n[2][0], n[2][1], l3);
  m->sent = metrics_counter_family(reg, n[3][0], n[3][1], l3);
  m->seconds = metrics_histogram_family(reg, n[4][0], n[4][1], l3, NULL, 0);
  return m;
}

void rpc_metrics_destroy(rpc_metrics *m) { free(m); }

void rpc_metrics_init_method(rpc_metrics *m, const char *service, const char *method) {
  if (m == NULL) return;
  const char *v[] = {"unary", service, method, NULL};
  metrics_series_get(m->started, v);
  metrics_series_get(m->received, v);
  metrics_series_get(m->sent, v);
  metrics_series_get(m->seconds, v);
  for (int code = 0; code < 17; code++) {
    v[3] = grpc_code_names[code];
    metrics_series_get(m->handled, v);
  }
}

void rpc_metrics_started(rpc_metrics *m, const char *service, const char *method) {
  if (m == NULL) return;
  const char *v[] = {"unary", service, method};
  metrics_counter_add(metrics_series_get(m->started, v), 1);
  metrics_counter_add(metrics_series_get(m->client ? m->sent : m->received, v), 1);
}

void rpc_metrics_handled(rpc_metrics *m, const char *service, const char *method, status_code code,
                         double seconds) {
  if (m == NULL) return;
  const char *v[] = {"unary", service, method, rpc_metrics_code_name(code)};
  metrics_counter_add(metrics_series_get(m->handled, v), 1);
  if (code == STATUS_OK)
    metrics_counter_add(metrics_series_get(m->client ? m->received : m->sent, v), 1);
  metrics_histogram_observe(metrics_series_get(m->seconds, v), seconds);
}
