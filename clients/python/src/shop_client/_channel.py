"""Channel: calls over an NNG REQ socket with the semantics of the C client
(internal/rpc/client.c, internal/rpc/rpc.h).

- One REQ/REP exchange per attempt, on a pooled NNG context, so that any
  number of threads may call at once.
- Deadlines: a per-call ``timeout`` (seconds) or absolute ``deadline``
  (time.monotonic()), else the channel's default; cut to ``max_timeout``.
  Each attempt sends the remaining budget as ``timeout_ms``.
- Retries on UNAVAILABLE only, with jittered exponential backoff (a wait in
  [b/2, b], b doubling from ``retry_backoff`` up to 10 s, at least the
  server's retry delay), never past the deadline. Every attempt carries the
  same request id, trace and idempotency key; ``attempt`` counts up from 1.
- NNG's own resend (NNG_OPT_REQ_RESENDTIME) is set past ``max_timeout``.
- With no server connected a call fails at once with UNAVAILABLE (the
  channel watches its pipes), and calls in flight when the last pipe drops
  fail with UNAVAILABLE too; both are retried like any UNAVAILABLE. Only
  the first call of a new channel first waits up to ``connect_timeout``
  (within its budget) for the first connection, which the C client leaves
  to its caller (shopctl waits for it after opening a client).
- A request frame over ``max_message_bytes`` is refused with
  RESOURCE_EXHAUSTED before it is sent (NNG would drop the connection).
- An undecodable reply, or one for another request id, is INTERNAL.
"""
from __future__ import annotations

import os
import random
import re
import secrets
import threading
import time
import weakref
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import pynng  # type: ignore[import-untyped]
from pynng import ffi, lib  # type: ignore[import-untyped]

from shop_client._status import Code, ShopError
from shop_client._wire import decode_response, encode_request

BACKOFF_CAP_MS = 10000
RESEND_MARGIN_MS = 5000  # RPC_RESEND_MARGIN_MS
TOKEN_MAX = 1024  # AUTH_TOKEN_MAX

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562): 48-bit milliseconds, then random
    bits; what shopctl uses for idempotency keys."""
    ms = time.time_ns() // 1_000_000
    b = bytearray(ms.to_bytes(6, "big") + secrets.token_bytes(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def traceparent_child(parent: Optional[str]) -> str:
    """A W3C traceparent: a child of parent (same trace id and flags, new
    span id), or a new trace when parent is absent or malformed."""
    m = _TRACEPARENT.match(parent or "")
    span = secrets.token_hex(8)
    if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
        return f"00-{m.group(1)}-{span}-{m.group(3)}"
    return f"00-{secrets.token_hex(16)}-{span}-01"


class Credentials:
    """Where a channel takes its bearer token from (Session is one)."""

    def token(self) -> Optional[str]:
        """The access token to send now (refreshed first if it is about to
        expire), or None."""
        raise NotImplementedError

    def refresh_after_unauthenticated(self) -> bool:
        """Called once when a call with token() was refused
        UNAUTHENTICATED: True if a fresh token is worth one more try."""
        return False


class CallOptions(NamedTuple):
    """Per-call options (all optional). ``timeout`` in seconds, ``deadline``
    absolute in time.monotonic() seconds; ``token`` replaces the channel's
    credentials; ``retry=False`` makes one attempt only."""

    timeout: Optional[float] = None
    deadline: Optional[float] = None
    idempotency_key: Optional[str] = None
    token: Optional[str] = None
    metadata: Optional[Mapping[str, str]] = None
    request_id: Optional[str] = None
    traceparent: Optional[str] = None
    retry: bool = True


class Stats(NamedTuple):
    calls: int
    attempts: int
    retries: int


class _Ctx:
    """A pooled REQ context with its own aio, so that a pipe drop can abort
    what waits on it (the C client's cl_ctx)."""

    def __init__(self, sock: pynng.Req0) -> None:
        self.ctx = sock.new_context()
        aiop = ffi.new("nng_aio **")
        _check(lib.nng_aio_alloc(aiop, ffi.NULL, ffi.NULL))
        self.aio = aiop[0]
        self.in_flight = False
        self.aborted = False

    def free(self) -> None:
        try:
            self.ctx.close()
        except pynng.NNGException:
            pass
        lib.nng_aio_free(self.aio)


def _check(rv: int) -> None:
    if rv != 0:
        raise ShopError(Code.INTERNAL, f"nng: {ffi.string(lib.nng_strerror(rv)).decode()}")


def _nng_error(rv: int) -> ShopError:
    if rv == lib.NNG_ETIMEDOUT:
        return ShopError(Code.DEADLINE_EXCEEDED, "no reply within the deadline")
    if rv == lib.NNG_ENOMEM:
        return ShopError(Code.RESOURCE_EXHAUSTED, "out of memory")
    if rv == lib.NNG_ECONNREFUSED:
        return ShopError(Code.UNAVAILABLE, "no server connected")
    text = ffi.string(lib.nng_strerror(rv)).decode()
    return ShopError(Code.UNAVAILABLE, f"connection to the server lost ({text})")


class Channel:
    """A client of one endpoint (several URLs: instances of one service,
    NNG spreads the calls). Thread-safe; close() it, or use ``with``.

    The defaults are the rpc section of config/shop.yaml's: 5 s per call,
    60 s at most, 3 retries from 50 ms, 4 MiB frames.
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]],
        *,
        caller: str = "shop-client-python",
        timeout: float = 5.0,
        max_timeout: float = 60.0,
        retry_max: int = 3,
        retry_backoff: float = 0.05,
        max_message_bytes: int = 4 << 20,
        credentials: Optional[Credentials] = None,
        resend: Optional[float] = None,
        reconnect_min: float = 0.01,
        reconnect_max: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        if timeout <= 0 or max_timeout <= 0 or retry_backoff <= 0 or retry_max < 0:
            raise ValueError("timeouts and backoff must be > 0, retry_max >= 0")
        if max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")
        self.urls: List[str] = [u.strip() for u in (url.split(",") if isinstance(url, str) else url)]
        if not self.urls or any(not u for u in self.urls):
            raise ValueError(f"bad endpoint list {url!r}")
        self.caller = caller
        self.default_timeout_ms = max(1, int(timeout * 1000))
        self.max_timeout_ms = max(1, int(max_timeout * 1000))
        self.retry_max = retry_max
        self.retry_backoff_ms = max(1, int(retry_backoff * 1000))
        self.max_message_bytes = max_message_bytes
        self.credentials = credentials
        self._rand = random.Random(int.from_bytes(os.urandom(8), "little"))
        self._lock = threading.Lock()
        self._free: List[_Ctx] = []
        self._all: List[_Ctx] = []
        self._pipes = 0
        self._ever_connected = False
        self.connect_timeout = connect_timeout
        self._calls = self._attempts = self._retries = 0
        self._closed = False
        resend_ms = int(resend * 1000) if resend else self.max_timeout_ms + RESEND_MARGIN_MS
        self._sock = pynng.Req0(
            resend_time=resend_ms,
            recv_max_size=max_message_bytes,
            reconnect_time_min=max(1, int(reconnect_min * 1000)),
            reconnect_time_max=max(1, int(reconnect_max * 1000)),
        )
        self._finalizer = weakref.finalize(self, Channel._release, self._sock, self._all)
        # The socket holds its callbacks: weak ones, so that a channel no one
        # holds is collected (and closed by the finalizer).
        added, removed = weakref.WeakMethod(self._pipe_added), weakref.WeakMethod(self._pipe_removed)
        self._sock.add_post_pipe_connect_cb(lambda p: (added() or (lambda _p: None))(p))
        self._sock.add_post_pipe_remove_cb(lambda p: (removed() or (lambda _p: None))(p))
        try:
            for u in self.urls:
                self.dial(u)
        except BaseException:
            self.close()
            raise

    # ---- connections -------------------------------------------------------

    def dial(self, url: str) -> None:
        """Dials one more server instance without waiting for it."""
        try:
            self._sock.dial(url, block=False)
        except pynng.NNGException as e:
            code = Code.INVALID_ARGUMENT if e.errno in (lib.NNG_EADDRINVAL, lib.NNG_ENOTSUP,
                                                        lib.NNG_EINVAL) else Code.UNAVAILABLE
            raise ShopError(code, f"dial {url}: {e}") from None

    def _pipe_added(self, _pipe: object) -> None:
        with self._lock:
            self._pipes += 1
            self._ever_connected = True

    def _pipe_removed(self, _pipe: object) -> None:
        with self._lock:
            if self._pipes > 0:
                self._pipes -= 1
            if self._pipes != 0:
                return
            # No server left: fail what waits on NNG now rather than let NNG
            # hold it until its deadline.
            for x in self._all:
                if x.in_flight:
                    x.aborted = True
                    lib.nng_aio_abort(x.aio, lib.NNG_ECONNSHUT)

    @property
    def connected(self) -> int:
        """Connected server instances now."""
        return self._pipes

    def wait_connected(self, timeout: float = 3.0) -> bool:
        """Waits up to timeout seconds for at least one connection."""
        until = time.monotonic() + timeout
        while self._pipes == 0:
            if time.monotonic() >= until:
                return False
            time.sleep(0.002)
        return True

    @property
    def stats(self) -> Stats:
        """Calls made, attempts sent or tried, retries."""
        return Stats(self._calls, self._attempts, self._retries)

    def close(self) -> None:
        """Closes the socket; no call may be running. A channel left open
        is closed when it is garbage-collected or at exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    @staticmethod
    def _release(sock: pynng.Req0, ctxs: List[_Ctx]) -> None:
        # Contexts before their socket: pynng complains about a context
        # whose socket went first.
        for x in ctxs:
            x.free()
        ctxs.clear()
        sock.close()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ---------------------------------------------------------

    def _ctx_get(self) -> _Ctx:
        with self._lock:
            if self._closed:
                raise ShopError(Code.CANCELLED, "the channel is closed")
            if self._free:
                return self._free.pop()
        x = _Ctx(self._sock)
        with self._lock:
            self._all.append(x)
        return x

    def _ctx_put(self, x: _Ctx) -> None:
        with self._lock:
            if not self._closed:
                self._free.append(x)

    def _wait_op(self, x: _Ctx, send: bool, timeout_ms: int) -> int:
        with self._lock:
            x.aborted = False
            x.in_flight = True
            if self._pipes == 0:
                x.in_flight = False
                return lib.NNG_ECONNREFUSED
        lib.nng_aio_set_timeout(x.aio, max(1, timeout_ms))
        if send:
            lib.nng_ctx_send(x.ctx.context, x.aio)
        else:
            lib.nng_ctx_recv(x.ctx.context, x.aio)
        with self._lock:
            if x.aborted:
                lib.nng_aio_abort(x.aio, lib.NNG_ECONNSHUT)
        lib.nng_aio_wait(x.aio)
        with self._lock:
            x.in_flight = False
        return lib.nng_aio_result(x.aio)

    def _exchange(self, frame: bytes, request_id: str, deadline_ms: int, method: str) -> bytes:
        remaining = deadline_ms - _now_ms()
        x = self._ctx_get()
        try:
            mp = ffi.new("nng_msg **")
            if lib.nng_msg_alloc(mp, len(frame)) != 0:
                raise ShopError(Code.RESOURCE_EXHAUSTED, "out of memory")
            ffi.memmove(lib.nng_msg_body(mp[0]), frame, len(frame))
            lib.nng_aio_set_msg(x.aio, mp[0])
            rv = self._wait_op(x, True, remaining)
            if rv != 0:
                # The message is ours again when the send did not happen.
                back = lib.nng_aio_get_msg(x.aio)
                if back != ffi.NULL:
                    lib.nng_msg_free(back)
                lib.nng_aio_set_msg(x.aio, ffi.NULL)
                raise _nng_error(rv)
            rv = self._wait_op(x, False, deadline_ms - _now_ms())
            if rv != 0:
                raise _nng_error(rv)
            m = lib.nng_aio_get_msg(x.aio)
            lib.nng_aio_set_msg(x.aio, ffi.NULL)
            try:
                data = bytes(ffi.buffer(lib.nng_msg_body(m), lib.nng_msg_len(m)))
            finally:
                lib.nng_msg_free(m)
        except ShopError as e:
            e.method, e.request_id = method, request_id
            raise
        finally:
            self._ctx_put(x)
        reply = decode_response(data, method)
        if reply.request_id and reply.request_id != request_id:
            raise ShopError(Code.INTERNAL,
                            f"response for request {reply.request_id}, expected {request_id}",
                            method=method, request_id=request_id)
        if reply.error is not None:
            reply.error.request_id = request_id
            raise reply.error
        return reply.payload

    # ---- calls -------------------------------------------------------------

    def call(self, method: str, payload: bytes, opts: CallOptions = CallOptions()) -> bytes:
        """Calls method ("/package.Service/Method") with the typed request's
        bytes and returns the reply's bytes; raises ShopError otherwise.
        The generated service classes call this."""
        self._calls += 1
        token_from_credentials = opts.token is None and self.credentials is not None
        try:
            return self._call_once(method, payload, opts)
        except ShopError as e:
            if (e.code == Code.UNAUTHENTICATED and token_from_credentials
                    and self.credentials is not None
                    and self.credentials.refresh_after_unauthenticated()):
                return self._call_once(method, payload, opts)
            raise

    def _call_once(self, method: str, payload: bytes, opts: CallOptions) -> bytes:
        now = _now_ms()
        t = int(opts.timeout * 1000) if opts.timeout is not None else self.default_timeout_ms
        t = min(t, self.max_timeout_ms)  # the server cuts it there anyway
        deadline = now + t
        if opts.deadline is not None:
            deadline = min(deadline, int(opts.deadline * 1000))
        request_id = opts.request_id or secrets.token_hex(16)
        if deadline <= now:
            raise ShopError(Code.DEADLINE_EXCEEDED, "no budget left for the call",
                            method=method, request_id=request_id)
        traceparent = traceparent_child(opts.traceparent)
        token = opts.token if opts.token is not None else (
            self.credentials.token() if self.credentials is not None else None)
        authorization = ""
        if token:
            if len(token.encode()) > TOKEN_MAX:
                raise ShopError(Code.INVALID_ARGUMENT, f"token longer than {TOKEN_MAX} bytes",
                                method=method, request_id=request_id)
            authorization = f"Bearer {token}"
        metadata = list((opts.metadata or {}).items())
        if not self._ever_connected:
            # A new channel dials in the background: its first call waits
            # for that first connection (within its budget), as shopctl
            # waits after opening its client. Later, a channel with no
            # server fails at once (UNAVAILABLE, retried).
            self.wait_connected(min(self.connect_timeout, (deadline - _now_ms()) / 1000.0))
        max_retries = self.retry_max if opts.retry else 0
        backoff = self.retry_backoff_ms
        attempt = 1
        while True:
            self._attempts += 1
            remaining = deadline - _now_ms()
            try:
                if remaining <= 0:
                    raise ShopError(Code.DEADLINE_EXCEEDED, "deadline exceeded before sending",
                                    method=method, request_id=request_id)
                frame = encode_request(
                    method=method, request_id=request_id, timeout_ms=remaining,
                    authorization=authorization, traceparent=traceparent,
                    idempotency_key=opts.idempotency_key or "", attempt=attempt,
                    caller=self.caller, metadata=metadata, payload=payload)
                if len(frame) > self.max_message_bytes:
                    raise ShopError(
                        Code.RESOURCE_EXHAUSTED,
                        f"request of {len(frame)} bytes exceeds the "
                        f"{self.max_message_bytes}-byte message limit",
                        method=method, request_id=request_id)
                return self._exchange(frame, request_id, deadline, method)
            except ShopError as e:
                if e.code != Code.UNAVAILABLE or attempt > max_retries:
                    raise
                wait = backoff // 2 + self._rand.randint(0, backoff // 2)
                if e.retry_delay_ms is not None and e.retry_delay_ms > wait:
                    wait = e.retry_delay_ms
                if _now_ms() + wait >= deadline:
                    raise
                time.sleep(wait / 1000.0)
                self._retries += 1
                backoff = min(backoff * 2, BACKOFF_CAP_MS)
                attempt += 1

    # ---- what every server answers ----------------------------------------

    def health(self, service: str = "", *, timeout: Optional[float] = None) -> str:
        """grpc.health.v1.Health/Check: "SERVING", "NOT_SERVING", ...
        (NOT_FOUND is raised for a service the server does not serve)."""
        from shop_client.pb.grpc.health.v1 import health_pb2

        out = self.call("/grpc.health.v1.Health/Check",
                        health_pb2.HealthCheckRequest(service=service).SerializeToString(),
                        CallOptions(timeout=timeout))
        resp = health_pb2.HealthCheckResponse.FromString(out)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def reflect(self, *, timeout: Optional[float] = None) -> "Reflection":
        """shop.rpc.v1.ServerReflectionService/GetDescriptorSet: the services
        the server serves and the descriptors it was built with."""
        from google.protobuf import descriptor_pb2
        from shop_client.pb.shop.rpc.v1 import rpc_pb2

        out = self.call("/shop.rpc.v1.ServerReflectionService/GetDescriptorSet",
                        rpc_pb2.GetDescriptorSetRequest().SerializeToString(),
                        CallOptions(timeout=timeout))
        resp = rpc_pb2.GetDescriptorSetResponse.FromString(out)
        fds = descriptor_pb2.FileDescriptorSet.FromString(resp.file_descriptor_set)
        return Reflection(list(resp.services), fds)

    def list_services(self, *, timeout: Optional[float] = None) -> List[str]:
        """The full names of the services the server serves."""
        return self.reflect(timeout=timeout).services


class Reflection(NamedTuple):
    """What a server says it serves: service full names and its compiled
    FileDescriptorSet."""

    services: List[str]
    files: "object"  # google.protobuf.descriptor_pb2.FileDescriptorSet

    def methods(self, service: str) -> Dict[str, str]:
        """Method name -> "/service/Method" path, from the server's own
        descriptors (a server newer than this client shows its new ones)."""
        pkg, _, name = service.rpartition(".")
        for f in self.files.file:  # type: ignore[attr-defined]
            if f.package != pkg:
                continue
            for s in f.service:
                if s.name == name:
                    return {m.name: f"/{service}/{m.name}" for m in s.method}
        raise KeyError(service)
