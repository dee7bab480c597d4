"""FakeServer: an NNG REP server that speaks Shop's envelope, for the tests
of code that uses shop_client (and of shop_client itself).

    def handler(req):
        if req.method.endswith("/GetOrder"):
            return Reply(payload=GetOrderResponse(...))
        return Reply(code=Code.NOT_FOUND, message="no such order")

    with FakeServer(handler) as srv:
        ch = Channel(srv.url)

A handler gets a Request and returns a Reply (encoded as Shop's server
encodes it, the request id echoed unless given), raw bytes (sent as they
are), NO_REPLY (nothing is sent: the caller waits for its deadline) or
DROP (the connection is closed without an answer). It runs on the server's
thread, one request at a time. Every request is kept in ``requests``.
"""
from __future__ import annotations

import re
import threading
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import pynng  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError, Message

from shop_client._status import Code
from shop_client._wire import decode_request, encode_response

__all__ = ["DROP", "FakeServer", "NO_REPLY", "Reply", "Request"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NO_REPLY = _Marker("NO_REPLY")
DROP = _Marker("DROP")


class Request(NamedTuple):
    """A received request: the envelope's fields and the raw frame."""

    frame: bytes
    method: str
    request_id: str
    timeout_ms: int
    authorization: str
    traceparent: str
    idempotency_key: str
    attempt: int
    caller: str
    metadata: Dict[str, str]
    payload: bytes
    decodable: bool


class Reply(NamedTuple):
    """What to answer: a status (code 0 is OK) and the typed reply."""

    payload: Union[Message, bytes, None] = None
    code: int = Code.OK
    message: str = ""
    violations: Sequence[Tuple[str, str]] = ()
    retry_delay_ms: Optional[int] = None
    projection: Optional[Tuple[str, int]] = None
    request_id: Optional[str] = None


Handler = Callable[[Request], Union[Reply, bytes, _Marker]]


class FakeServer:
    """Listens on ``url`` (default: an ephemeral loopback port; ``url``
    then says which) until close()."""

    def __init__(self, handler: Handler, url: str = "tcp://127.0.0.1:0") -> None:
        self.handler = handler
        self.requests: List[Request] = []
        self.errors: List[BaseException] = []
        self._sock = pynng.Rep0(recv_timeout=50)
        listener = self._sock.listen(url)
        # pynng's SockAddr.port is in network byte order: read the text.
        addr = str(listener.local_address)
        m = re.match(r"^(.*):(\d+)$", addr)
        self.url = f"tcp://{m.group(1)}:{m.group(2)}" if (m and url.startswith("tcp://")) else url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shop-fake-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._sock.recv_msg()
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return
            frame = msg.bytes
            try:
                env = decode_request(frame)
                req = Request(frame, env.method, env.request_id, env.timeout_ms,
                              env.authorization, env.traceparent, env.idempotency_key,
                              env.attempt, env.caller, dict(env.metadata), env.payload,
                              True)
            except DecodeError:
                req = Request(frame, "", "", 0, "", "", "", 0, "", {}, b"", False)
            self.requests.append(req)
            try:
                out = self.handler(req)
            except BaseException as e:  # a broken handler answers INTERNAL
                self.errors.append(e)
                out = Reply(code=Code.INTERNAL, message=f"handler raised {e!r}")
            if out is NO_REPLY:
                continue
            if out is DROP:
                msg.pipe.close()
                continue
            if isinstance(out, Reply):
                payload = out.payload
                data = encode_response(
                    request_id=req.request_id if out.request_id is None else out.request_id,
                    code=int(out.code), message=out.message, violations=out.violations,
                    retry_delay_ms=out.retry_delay_ms, projection=out.projection,
                    payload=payload.SerializeToString() if isinstance(payload, Message)
                    else (payload or b""))
            else:
                data = bytes(out)  # type: ignore[arg-type]
            try:
                self._sock.send(data)
            except pynng.NNGException:
                pass  # the caller went away

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
