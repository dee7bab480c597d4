/* user-query: the read model users_view, built only from user events, and
 * the handlers of shop.user.v1.UserQueryService. See user.h.
 *
 * Each event sets one part of a row, so each part has its own projection
 * version (events/projection.h): "user.profile" (UserRegistered,
 * UserProfileUpdated) and "user.role" (UserRegistered, UserRoleChanged).
 * The email and the registration time never change. users_view.version is
 * the highest version applied to the row, whatever the part: what a
 * consistency token is compared with. A row that some event reached before
 * its UserRegistered (possible only after a dead letter) has
 * registered_ms = 0 and is not shown until the registration arrives. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "consistency/consistency.h"
#include "events/projection.h"
#include "handler/handler.h"
#include "log/log.h"
#include "page/page.h"
#include "topology/topology.h"
#include "user/user.h"

typedef Shop__User__V1__UserQueryService_Service user_query_service;
typedef Shop__User__V1__User user_pb;

/* ---- Projection ------------------------------------------------------------------- */

/* Upserts the row's version and update time, with extra columns set. */
static status_code view_bump(db_conn *tx, const char *user_id, int64_t version, int64_t t,
                             char *errbuf, size_t errlen) {
  db_value p[3] = {DB_STR(user_id), DB_I64(version), DB_I64(t)};
  return db_exec(tx,
                 "INSERT INTO users_view (user_id, version, updated_ms) VALUES (?, ?, ?) "
                 "ON DUPLICATE KEY UPDATE version = GREATEST(version, VALUES(version)), "
                 "updated_ms = GREATEST(updated_ms, VALUES(updated_ms))",
                 p, 3, NULL, NULL, errbuf, errlen);
}

typedef struct part_arg {
  const char *user_id;
  const Shop__User__V1__UserProfile *profile;
  int role;
} part_arg;

static status_code profile_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                              char *errbuf, size_t errlen) {
  const part_arg *a = arg;
  const Shop__User__V1__UserProfile *p = a->profile;
  const Shop__User__V1__NotificationPreferences *np =
      p != NULL ? p->notification_preferences : NULL;
  status_code st = view_bump(tx, a->user_id, version, events_time_ms(ev), errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value v[6] = {DB_STR(p != NULL ? p->name : ""), DB_STR(p != NULL ? p->phone : ""),
                   DB_I64(np != NULL && np->email),  DB_I64(np != NULL && np->sms),
                   DB_I64(np != NULL && np->push),   DB_STR(a->user_id)};
  return db_exec(tx,
                 "UPDATE users_view SET name = ?, phone = ?, notify_email = ?, notify_sms = ?, "
                 "notify_push = ? WHERE user_id = ?",
                 v, 6, NULL, NULL, errbuf, errlen);
}

static status_code role_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                           char *errbuf, size_t errlen) {
  const part_arg *a = arg;
  status_code st = view_bump(tx, a->user_id, version, events_time_ms(ev), errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value v[2] = {DB_I64(a->role), DB_STR(a->user_id)};
  return db_exec(tx, "UPDATE users_view SET role = ? WHERE user_id = ?", v, 2, NULL, NULL, errbuf,
                 errlen);
}

static status_code apply_registered(db_conn *tx, const events_envelope *ev,
                                    const Shop__User__V1__UserRegistered *e, char *errbuf,
                                    size_t errlen) {
  if (!check_id(e->user_id)) {
    snprintf(errbuf, errlen, "UserRegistered without a valid user id");
    return STATUS_INVALID_ARGUMENT;
  }
  int64_t t = events_time_ms(ev);
  status_code st = view_bump(tx, e->user_id, ev->sequence, t, errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value v[3] = {DB_STR(e->email), DB_I64(t > 0 ? t : 1), DB_STR(e->user_id)};
  st = db_exec(tx, "UPDATE users_view SET email = ?, registered_ms = ? WHERE user_id = ?", v, 3,
               NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  part_arg a = {.user_id = e->user_id, .profile = e->profile, .role = (int)e->role};
  st = projection_apply_state(tx, "user.profile", e->user_id, ev->sequence, ev, profile_cb, &a,
                              NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  return projection_apply_state(tx, "user.role", e->user_id, ev->sequence, ev, role_cb, &a, NULL,
                                errbuf, errlen);
}

static const char *sequence_check(const ProtobufCMessage *m, const events_envelope *ev) {
  return ev->sequence < 1 ? "without a sequence" : NULL;
}

static status_code registered_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                    size_t errlen) {
  return apply_registered(tx, m->env, (const void *)m->msg, errbuf, errlen);
}

static status_code profile_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  const Shop__User__V1__UserProfileUpdated *e = (const void *)m->msg;
  part_arg a = {.user_id = e->user_id, .profile = e->profile};
  return projection_apply_state(tx, "user.profile", e->user_id, m->env->sequence, m->env,
                                profile_cb, &a, NULL, errbuf, errlen);
}

static status_code role_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                              size_t errlen) {
  const Shop__User__V1__UserRoleChanged *e = (const void *)m->msg;
  part_arg a = {.user_id = e->user_id, .role = (int)e->role};
  return projection_apply_state(tx, "user.role", e->user_id, m->env->sequence, m->env, role_cb, &a,
                                NULL, errbuf, errlen);
}

static status_code password_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__User__V1__PasswordChanged *e = (const void *)m->msg;
  return view_bump(tx, e->user_id, m->env->sequence, events_time_ms(m->env), errbuf, errlen);
}

static void projection_committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  user_query_ctx *ctx = arg;
  consistency_notifier_committed(&ctx->notifier, msgs, n, TOPOLOGY_TOPIC_USER);
}

static const consumer_event_type projection_types[] = {
    {&shop__user__v1__user_registered__descriptor, sequence_check, registered_apply, 0},
    {&shop__user__v1__user_profile_updated__descriptor, sequence_check, profile_apply, 0},
    {&shop__user__v1__user_role_changed__descriptor, sequence_check, role_apply, 0},
    {&shop__user__v1__password_changed__descriptor, sequence_check, password_apply, 0},
};

const consumer_spec user_projection_consumer = {
    .group = TOPOLOGY_GROUP_USER_QUERY,
    .types = projection_types,
    .n_types = sizeof projection_types / sizeof projection_types[0],
    .committed = projection_committed_cb};

/* ---- Reading the view ------------------------------------------------------------ */

#define VIEW_COLS                                                                                  \
  "user_id, email, role, name, phone, notify_email, notify_sms, notify_push, registered_ms, "      \
  "updated_ms, version"

/* One user of the view, with the storage its message borrows. */
typedef struct user_out {
  user_pb user;
  Shop__User__V1__UserProfile profile;
  Shop__User__V1__NotificationPreferences prefs;
  Shop__Common__V1__Timestamp registered, updated;
  char user_id[CHECK_ID_SIZE];
  char email[USER_EMAIL_MAX + 1];
  char name[USER_NAME_MAX * 4 + 1];
  char phone[USER_PHONE_MAX + 1];
  int64_t registered_ms; /* for page tokens */
} user_out;

static void user_out_fill(user_out *o, const db_rows *r) {
  snprintf(o->user_id, sizeof o->user_id, "%s", db_rows_str(r, 0, NULL));
  snprintf(o->email, sizeof o->email, "%s", db_rows_str(r, 1, NULL));
  snprintf(o->name, sizeof o->name, "%s", db_rows_str(r, 3, NULL));
  snprintf(o->phone, sizeof o->phone, "%s", db_rows_str(r, 4, NULL));
  shop__user__v1__user__init(&o->user);
  shop__user__v1__user_profile__init(&o->profile);
  shop__user__v1__notification_preferences__init(&o->prefs);
  o->prefs.email = db_rows_i64(r, 5) != 0;
  o->prefs.sms = db_rows_i64(r, 6) != 0;
  o->prefs.push = db_rows_i64(r, 7) != 0;
  o->registered_ms = db_rows_i64(r, 8);
  clock_timestamp_set(&o->registered, o->registered_ms);
  clock_timestamp_set(&o->updated, db_rows_i64(r, 9));
  o->profile.name = o->name;
  o->profile.phone = o->phone;
  o->profile.notification_preferences = &o->prefs;
  o->user.user_id = o->user_id;
  o->user.email = o->email;
  o->user.role = (Shop__User__V1__Role)db_rows_i64(r, 2);
  o->user.profile = &o->profile;
  o->user.registered_at = &o->registered;
  o->user.updated_at = &o->updated;
  o->user.version = db_rows_i64(r, 10);
}

static status_code view_version(db_conn *c, const char *user_id, int64_t *version, char *errbuf,
                                size_t errlen) {
  db_value p[1] = {DB_STR(user_id)};
  status_code st = db_query_i64(c,
                                "SELECT IF(registered_ms > 0, version, 0) FROM users_view WHERE "
                                "user_id = ?",
                                p, 1, version, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    *version = 0;
    return STATUS_OK;
  }
  return st;
}

/* A token on GetMe or GetUser must name the user read: versions of other
 * users are not the caller's business. */
static bool token_names(rpc_call *call, const Shop__Common__V1__ReadConsistency *rc,
                        const char *user_id) {
  if (rc == NULL || rc->token == NULL || strcmp(rc->token->aggregate_id, user_id) == 0) return true;
  int bad = 0;
  handler_violation(call, &bad, "consistency.token.aggregate_id", "must name the user read");
  return false;
}

/* Reads one user into o: true when found; false with the status on the
 * call otherwise. */
static bool view_get(rpc_call *call, user_query_ctx *ctx, const char *user_id, user_out *o) {
  char err[512];
  db_conn *c = NULL;
  if (!handler_db_get(call, ctx->db, &c)) return false;
  status_code st;
  db_value p[1] = {DB_STR(user_id)};
  db_rows *r = NULL;
  st = db_query(c, "SELECT " VIEW_COLS " FROM users_view WHERE user_id = ? AND registered_ms > 0",
                p, 1, &r, err, sizeof err);
  db_pool_put(ctx->db, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, "reading users_view", err);
    return false;
  }
  bool found = db_rows_next(r);
  if (found) user_out_fill(o, r);
  db_rows_free(r);
  if (!found) rpc_call_set_status(call, STATUS_NOT_FOUND, "no such user");
  return found;
}

/* ---- Handlers ----------------------------------------------------------------------- */

static void user_query_get_me(user_query_service *svc, const Shop__User__V1__GetMeRequest *in,
                              Shop__User__V1__GetMeResponse_Closure closure, void *data) {
  rpc_call *call = data;
  user_query_ctx *ctx = rpc_call_service_ctx(call);
  if (!token_names(call, in->consistency, rpc_call_user_id(call))) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;
  user_out o;
  if (!view_get(call, ctx, rpc_call_user_id(call), &o)) return;
  Shop__User__V1__GetMeResponse r = SHOP__USER__V1__GET_ME_RESPONSE__INIT;
  r.user = &o.user;
  closure(&r, data);
}

static void user_query_get_user(user_query_service *svc, const Shop__User__V1__GetUserRequest *in,
                                Shop__User__V1__GetUserResponse_Closure closure, void *data) {
  rpc_call *call = data;
  user_query_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  user_validate_get_user(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (strcmp(in->user_id, rpc_call_user_id(call)) != 0 && rpc_call_role(call) != AUTH_ROLE_ADMIN) {
    rpc_call_set_status(call, STATUS_PERMISSION_DENIED, "only an admin may read another user");
    return;
  }
  if (!token_names(call, in->consistency, in->user_id)) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;
  user_out o;
  if (!view_get(call, ctx, in->user_id, &o)) return;
  Shop__User__V1__GetUserResponse r = SHOP__USER__V1__GET_USER_RESPONSE__INIT;
  r.user = &o.user;
  closure(&r, data);
}

#define LIST_TEXT_MAX USER_LIST_TEXT_MAX

static void user_query_list_users(user_query_service *svc,
                                  const Shop__User__V1__ListUsersRequest *in,
                                  Shop__User__V1__ListUsersResponse_Closure closure, void *data) {
  rpc_call *call = data;
  user_query_ctx *ctx = rpc_call_service_ctx(call);
  int size = 0;
  if (!page_size(call, in->page, &size)) return;
  check_violations v = {0};
  user_validate_list_users(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  char filters[LIST_TEXT_MAX * 4 + 64];
  snprintf(filters, sizeof filters, "users|role=%d|text=%s", (int)in->role, in->text);
  page_pos pos;
  if (!page_token_decode(call, in->page != NULL ? in->page->page_token : NULL, filters, &pos))
    return;
  if (pos.n != 2) pos.n = 0;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;

  /* The statement is put together from fixed pieces; every value is a
   * parameter. */
  char where[512] = "registered_ms > 0";
  db_value params[8];
  size_t np = 0;
  char pattern[LIST_TEXT_MAX * 8 + 3];
  if (in->role != SHOP__USER__V1__ROLE__ROLE_UNSPECIFIED) {
    strcat(where, " AND role = ?");
    params[np++] = DB_I64(in->role);
  }
  if (in->text[0] != '\0') {
    db_like_pattern(in->text, pattern, sizeof pattern);
    strcat(where, " AND (email LIKE ? ESCAPE '!' OR name LIKE ? ESCAPE '!')");
    params[np++] = DB_STR(pattern);
    params[np++] = DB_STR(pattern);
  }
  size_t nfilter = np;
  char count_sql[700], page_sql[1000];
  snprintf(count_sql, sizeof count_sql, "SELECT COUNT(*) FROM users_view WHERE %s", where);
  int64_t after_ms = 0;
  if (pos.n == 2) {
    after_ms = strtoll(pos.field[0], NULL, 10);
    strcat(where, " AND (registered_ms < ? OR (registered_ms = ? AND user_id < ?))");
    params[np++] = DB_I64(after_ms);
    params[np++] = DB_I64(after_ms);
    params[np++] = DB_STR(pos.field[1]);
  }
  params[np++] = DB_I64(size + 1);
  snprintf(page_sql, sizeof page_sql,
           "SELECT " VIEW_COLS
           " FROM users_view WHERE %s ORDER BY registered_ms DESC, user_id "
           "DESC LIMIT ?",
           where);

  int64_t total = 0;
  db_rows *r = NULL;
  if (!page_list(call, ctx->db, count_sql, params, nfilter, page_sql, params, np,
                 "listing users_view", &total, &r))
    return;
  size_t rows = db_rows_count(r);
  size_t n = rows > (size_t)size ? (size_t)size : rows;
  user_out *outs = calloc(n > 0 ? n : 1, sizeof *outs);
  user_pb **list = calloc(n > 0 ? n : 1, sizeof *list);
  if (outs == NULL || list == NULL) {
    free(outs);
    free(list);
    db_rows_free(r);
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  for (size_t i = 0; i < n && db_rows_next(r); i++) {
    user_out_fill(&outs[i], r);
    list[i] = &outs[i].user;
  }
  db_rows_free(r);
  char next[PAGE_TOKEN_MAX] = "";
  if (rows > (size_t)size && n > 0) {
    page_pos np_pos = {.n = 2};
    snprintf(np_pos.field[0], PAGE_FIELD_MAX, "%lld", (long long)outs[n - 1].registered_ms);
    snprintf(np_pos.field[1], PAGE_FIELD_MAX, "%s", outs[n - 1].user_id);
    page_token_encode(next, filters, &np_pos);
  }
  Shop__Common__V1__PageResponse page = SHOP__COMMON__V1__PAGE_RESPONSE__INIT;
  page.next_page_token = next;
  page.total_size = total;
  Shop__User__V1__ListUsersResponse resp = SHOP__USER__V1__LIST_USERS_RESPONSE__INIT;
  resp.n_users = n;
  resp.users = list;
  resp.page = &page;
  closure(&resp, data);
  free(outs);
  free(list);
}

/* ---- Registration ------------------------------------------------------------------ */

static user_query_service user_query_svc = SHOP__USER__V1__USER_QUERY_SERVICE__INIT(user_query_);

static const rpc_method_policy user_query_policies[] = {
    {"GetMe", RPC_AUTHENTICATED},
    {"GetUser", RPC_AUTHENTICATED},
    {"ListUsers", RPC_ADMIN},
};

status_code user_query_register(rpc_server *s, user_query_ctx *ctx, char *errbuf, size_t errlen) {
  rpc_service_opts o = {.default_policy = RPC_ADMIN,
                        .policies = user_query_policies,
                        .n_policies = sizeof user_query_policies / sizeof user_query_policies[0],
                        .ctx = ctx};
  return rpc_server_register(s, &user_query_svc.base, &o, errbuf, errlen);
}

void user_query_ctx_init(user_query_ctx *ctx, db_pool *db) {
  ctx->db = db;
  consistency_notifier_init(&ctx->notifier);
}

void user_query_ctx_destroy(user_query_ctx *ctx) { consistency_notifier_destroy(&ctx->notifier); }
