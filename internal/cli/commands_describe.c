/* shopctl list and describe: the services and messages, local or by
 * reflection. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "config/config.h"
#include "events/events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "reconcile/reconcile.h"
#include "rpc/rpc.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"

/* ---- list and describe ------------------------------------------------- */

/* What a server reports through reflection: the names of the services it
 * serves and, from its descriptor set, their methods. */
typedef struct remote {
  json_t *names;    /* ["pkg.Service", ...] */
  json_t *services; /* cli_descriptor_set_services() */
} remote;

static void remote_free(remote *r) {
  json_decref(r->names);
  json_decref(r->services);
}

/* False on error (printed, *code set). */
static bool reflect(const cli_opts *o, remote *out, int *code) {
  *out = (remote){0};
  rpc_client *cli;
  status_code rc = cli_client_open(&cli, o, o->server);
  if (rc != STATUS_OK) {
    *code = status_exit_code(rc);
    return false;
  }
  Shop__Rpc__V1__GetDescriptorSetRequest req = SHOP__RPC__V1__GET_DESCRIPTOR_SET_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  rpc_status st;
  rc = cli_call_typed(cli, o, "/shop.rpc.v1.ServerReflectionService/GetDescriptorSet", &req.base,
                      &shop__rpc__v1__get_descriptor_set_response__descriptor, &resp, NULL, NULL,
                      &st);
  rpc_client_destroy(cli);
  if (rc != STATUS_OK) {
    cli_print_status(&st, o->server);
    *code = status_exit_code(rc);
    return false;
  }
  Shop__Rpc__V1__GetDescriptorSetResponse *r = (Shop__Rpc__V1__GetDescriptorSetResponse *)resp;
  out->names = json_array();
  for (size_t i = 0; i < r->n_services; i++)
    json_array_append_new(out->names, json_string(r->services[i]));
  out->services =
      cli_descriptor_set_services(r->file_descriptor_set.data, r->file_descriptor_set.len);
  protobuf_c_message_free_unpacked(resp, NULL);
  if (out->services == NULL) {
    remote_free(out);
    *code = cli_fail_code(STATUS_INTERNAL, "%s sent a descriptor set that does not decode%s",
                          o->server, "");
    return false;
  }
  return true;
}

/* The served service named by text (full or short name): its full name
 * and methods, or NULL. */
static const char *remote_service(const remote *r, const char *text, size_t len, json_t **methods) {
  size_t i;
  json_t *v;
  json_array_foreach(r->names, i, v) {
    const char *full = json_string_value(v);
    const char *dot = strrchr(full, '.');
    const char *shrt = dot ? dot + 1 : full;
    if ((strlen(full) == len && strncmp(full, text, len) == 0) ||
        (strlen(shrt) == len && strncmp(shrt, text, len) == 0)) {
      *methods = json_object_get(r->services, full);
      return full;
    }
  }
  return NULL;
}

static void print_remote_method(const char *svc, const json_t *m) {
  const char *name = json_string_value(json_object_get(m, "name"));
  printf("rpc %s(%s) returns (%s);  // /%s/%s%s\n", name,
         json_string_value(json_object_get(m, "input")),
         json_string_value(json_object_get(m, "output")), svc, name,
         rpc_service_name_is_command(svc) ? ", command" : "");
}

int cli_cmd_list(cli_opts *o) {
  int code = 0;
  if (o->server != NULL) {
    remote r;
    if (!reflect(o, &r, &code)) return code;
    json_t *methods = NULL;
    size_t i;
    json_t *v;
    if (o->n_args >= 2) {
      const char *full = remote_service(&r, o->args[1], strlen(o->args[1]), &methods);
      if (full == NULL)
        code = cli_fail_code(STATUS_NOT_FOUND, "no service %s on %s", o->args[1], o->server);
      json_array_foreach(methods, i, v)
          printf("%s.%s\n", full, json_string_value(json_object_get(v, "name")));
    } else {
      json_array_foreach(r.names, i, v) puts(json_string_value(v));
    }
    remote_free(&r);
    return code;
  }
  if (o->n_args >= 2) {
    const ProtobufCServiceDescriptor *s = cli_service_find(o->args[1], strlen(o->args[1]));
    if (s == NULL) return cli_fail_code(STATUS_NOT_FOUND, "no service %s%s", o->args[1], "");
    for (unsigned i = 0; i < s->n_methods; i++) printf("%s.%s\n", s->name, s->methods[i].name);
    return 0;
  }
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++)
    puts(pbjson_service_registry[i]->name);
  return 0;
}

static const char *type_name(const ProtobufCFieldDescriptor *f) {
  static const char *const names[] = {
      [PROTOBUF_C_TYPE_INT32] = "int32",       [PROTOBUF_C_TYPE_SINT32] = "sint32",
      [PROTOBUF_C_TYPE_SFIXED32] = "sfixed32", [PROTOBUF_C_TYPE_INT64] = "int64",
      [PROTOBUF_C_TYPE_SINT64] = "sint64",     [PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
      [PROTOBUF_C_TYPE_UINT32] = "uint32",     [PROTOBUF_C_TYPE_FIXED32] = "fixed32",
      [PROTOBUF_C_TYPE_UINT64] = "uint64",     [PROTOBUF_C_TYPE_FIXED64] = "fixed64",
      [PROTOBUF_C_TYPE_FLOAT] = "float",       [PROTOBUF_C_TYPE_DOUBLE] = "double",
      [PROTOBUF_C_TYPE_BOOL] = "bool",         [PROTOBUF_C_TYPE_STRING] = "string",
      [PROTOBUF_C_TYPE_BYTES] = "bytes",
  };
  if (f->type == PROTOBUF_C_TYPE_MESSAGE)
    return ((const ProtobufCMessageDescriptor *)f->descriptor)->name;
  if (f->type == PROTOBUF_C_TYPE_ENUM)
    return ((const ProtobufCEnumDescriptor *)f->descriptor)->name;
  return names[f->type];
}

static void describe_message(const ProtobufCMessageDescriptor *d) {
  printf("message %s {\n", d->name);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    printf("  %s%s %s = %u;%s\n", f->label == PROTOBUF_C_LABEL_REPEATED ? "repeated " : "",
           type_name(f), f->name, f->id,
           (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ? " // in a oneof" : "");
  }
  puts("}");
}

static void describe_method(const ProtobufCServiceDescriptor *s,
                            const ProtobufCMethodDescriptor *m) {
  printf("rpc %s(%s) returns (%s);  // /%s/%s%s\n", m->name, m->input->name, m->output->name,
         s->name, m->name, rpc_service_is_command(s) ? ", command" : "");
}

static void describe_message_named(const char *name) {
  const ProtobufCMessageDescriptor *d = pbjson_message_find(name);
  if (d != NULL)
    describe_message(d);
  else
    printf("message %s { /* not known to this shopctl */ }\n", name);
}

/* describe with --server: services and methods as the server has them;
 * message fields from the linked descriptors. */
static int describe_remote(cli_opts *o, const char *what) {
  int code = 0;
  remote r;
  if (!reflect(o, &r, &code)) return code;
  const char *text = what[0] == '/' ? what + 1 : what;
  json_t *methods = NULL;
  const char *full = remote_service(&r, text, strlen(text), &methods);
  size_t i;
  json_t *v;
  if (full != NULL) {
    printf("service %s {\n", full);
    json_array_foreach(methods, i, v) {
      fputs("  ", stdout);
      print_remote_method(full, v);
    }
    puts("}");
    goto out;
  }
  const char *sep = strrchr(text, '/');
  if (sep == NULL) sep = strrchr(text, '.');
  if (sep != NULL && (full = remote_service(&r, text, (size_t)(sep - text), &methods)) != NULL) {
    json_array_foreach(methods, i, v) {
      if (strcmp(json_string_value(json_object_get(v, "name")), sep + 1) != 0) continue;
      print_remote_method(full, v);
      describe_message_named(json_string_value(json_object_get(v, "input")));
      describe_message_named(json_string_value(json_object_get(v, "output")));
      goto out;
    }
  }
  const ProtobufCMessageDescriptor *md = pbjson_message_find(what);
  if (md != NULL)
    describe_message(md);
  else
    code = cli_fail_code(STATUS_NOT_FOUND, "%s serves no service or method %s", o->server, what);
out:
  remote_free(&r);
  return code;
}

int cli_cmd_describe(cli_opts *o) {
  if (o->n_args != 2) return cli_usage(stderr), 2;
  const char *what = o->args[1];
  if (o->server != NULL) return describe_remote(o, what);
  const char *text = what[0] == '/' ? what + 1 : what;
  const ProtobufCServiceDescriptor *s = cli_service_find(text, strlen(text));
  const ProtobufCMethodDescriptor *m = NULL;
  const ProtobufCMessageDescriptor *md = NULL;
  if (s != NULL) {
    printf("service %s {\n", s->name);
    for (unsigned i = 0; i < s->n_methods; i++) {
      fputs("  ", stdout);
      describe_method(s, &s->methods[i]);
    }
    puts("}");
  } else if (cli_method_resolve(what, &s, &m)) {
    describe_method(s, m);
    describe_message(m->input);
    describe_message(m->output);
  } else if ((md = pbjson_message_find(what)) != NULL) {
    describe_message(md);
  } else {
    return cli_fail_code(STATUS_NOT_FOUND, "no service, method or message named %s%s", what, "");
  }
  return 0;
}
