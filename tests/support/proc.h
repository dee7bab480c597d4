/*
 * proc: start a Shop program for a test, wait until it serves, stop it.
 *
 *   proc *p;
 *   proc_opts o = {.path = SHOP_ECHO_BIN, .argv = args, .env = env,
 *                  .probe_url = "tcp://127.0.0.1:27123"};
 *   cr_assert_eq(proc_start(&p, &o, err, sizeof err), STATUS_OK, "%s", err);
 *   ...
 *   int code;
 *   proc_stop(p, 10000, &code);   // SIGTERM, wait, collect the exit status
 *   proc_destroy(p);
 *
 * proc_start spawns the program (posix_spawn, so it is safe in a threaded
 * test) with the test's environment plus the additions, then waits until
 * it is ready, for at most ready_timeout_ms: given a ready_url, until a GET
 * there answers 200 from the child itself (X-Shop-Pid: a Shop program's
 * admin /readyz); given a probe_url,
 * until /grpc.health.v1.Health/Check there answers SERVING; given a
 * ready_file, until that file exists (the test sinks write one). A program
 * that exits while being waited for fails the start with its exit status.
 * proc_spawn and proc_wait_ready are the two halves, for starting several
 * programs at once and then waiting for each.
 *
 * Not thread-safe: one thread drives one proc.
 */
#ifndef SHOP_TESTS_PROC_H
#define SHOP_TESTS_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "status/status.h"

typedef struct proc proc;

typedef struct proc_opts {
  const char *path;        /* the program */
  const char *const *argv; /* arguments after argv[0], NULL-terminated; may be NULL */
  const char *const *env;  /* "NAME=value" additions (override), NULL-terminated; may be NULL */
  const char *ready_url;   /* http://... answering 200 when ready (/readyz); may be NULL */
  const char *probe_url;   /* Health/Check endpoint; may be NULL */
  const char *ready_file;  /* a file the program creates when ready; may be NULL */
  int ready_timeout_ms;    /* 0: 20000 */
  const char *log_path;    /* the child's stdout and stderr (appended); NULL: inherited */
} proc_opts;

/* On success *out owns the running child (stop it with proc_stop, free
 * with proc_destroy). On error the child, if any, is killed and reaped. */
status_code proc_start(proc **out, const proc_opts *o, char *errbuf, size_t errlen);

/* proc_start without the wait: on success *out owns the child. */
status_code proc_spawn(proc **out, const proc_opts *o, char *errbuf, size_t errlen);
/* Waits until the child spawned with o is ready (see above; nothing to
 * wait for: at once). Errors: DEADLINE_EXCEEDED (not ready in time, with
 * what the probe saw last), UNAVAILABLE (the child exited; errbuf has its
 * status). The child keeps running either way. */
status_code proc_wait_ready(proc *p, const proc_opts *o, char *errbuf, size_t errlen);

pid_t proc_pid(const proc *p);

/* Sends SIGTERM and waits up to timeout_ms for the child to exit; after
 * that sends SIGKILL and returns DEADLINE_EXCEEDED. *exit_code (may be
 * NULL) is the exit status, or 128 + the signal that ended it. Stopping a
 * stopped child returns its code again. */
status_code proc_stop(proc *p, int timeout_ms, int *exit_code);

/* True while the child runs (it is reaped when it has exited). */
bool proc_alive(proc *p);

/* Kills (SIGKILL) a child still running, reaps it, frees p. NULL is fine. */
void proc_destroy(proc *p);

/* Runs a short-lived program to its end: starts it (o->log_path is
 * required and receives its output), waits up to timeout_ms for it to exit
 * (then stops it, as proc_stop does), sets *exit_code and copies what it
 * printed into out (NUL-terminated, cut at outlen - 1). Errors: the
 * program could not start (errbuf says why). */
status_code proc_run(const proc_opts *o, int timeout_ms, int *exit_code, char *out, size_t outlen,
                     char *errbuf, size_t errlen);

/* Calls Health/Check at url until SERVING, up to timeout_ms. */
bool proc_wait_serving(const char *url, int timeout_ms, char *errbuf, size_t errlen);

/* The HTTP status of method ("GET", "HEAD", "POST" with a small form,
 * any other) on url; 0 when nothing answered within timeout_ms. *body
 * (body may be NULL) gets the body, NUL-terminated; the caller frees it. */
long proc_http(const char *method, const char *url, int timeout_ms, char **body);
/* The same; *pid (pid may be NULL) gets the reply's X-Shop-Pid header (the
 * Shop program that answered), 0 when it has none. */
long proc_http_pid(const char *method, const char *url, int timeout_ms, char **body, long *pid);

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
 * released); 0 on error. */
int proc_free_tcp_port(void);

/* Resident set size of a process in KiB, from /proc/<pid>/statm; -1 on
 * error. */
long proc_rss_kib(pid_t pid);
/* Peak resident set size (VmHWM) of pid in KiB, -1 if unknown. */
long proc_peak_rss_kib(pid_t pid);

#endif
