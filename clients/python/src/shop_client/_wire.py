"""The envelope of proto/shop/rpc/v1/rpc.proto, encoded as the C client
encodes it.

encode_request() writes the same bytes as protobuf-c packing the C
client's RequestEnvelope (internal/rpc/client.c): fields in number order,
defaults left out, and the metadata entries in the caller's order, each
entry's empty key or value left out (protobuf's Python runtime would sort
a map or write empty entry fields; both decode the same, but the contract
test holds the two clients to the same bytes). The golden fixtures in
tests/rpc/fixtures pin it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, NamedTuple, Optional, Tuple

from google.protobuf.message import DecodeError

from shop_client._status import Code, FieldViolation, Projection, ShopError

if TYPE_CHECKING:
    from shop_client.pb.shop.rpc.v1 import rpc_pb2


def _rpc():  # type: ignore[no-untyped-def]
    # Imported on first use: the generated packages import the runtime
    # (their service classes), so the runtime imports them late.
    from shop_client.pb.shop.rpc.v1 import rpc_pb2

    return rpc_pb2

_METADATA_TAG = b"\x4a"  # field 9, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string_field(tag: bytes, s: str) -> bytes:
    b = s.encode("utf-8")
    return tag + _varint(len(b)) + b if b else b""


def encode_request(
    *,
    method: str,
    request_id: str = "",
    timeout_ms: int = 0,
    authorization: str = "",
    traceparent: str = "",
    idempotency_key: str = "",
    attempt: int = 0,
    caller: str = "",
    metadata: Iterable[Tuple[str, str]] = (),
    payload: bytes = b"",
) -> bytes:
    """One packed RequestEnvelope."""
    rpc_pb2 = _rpc()
    head = rpc_pb2.RequestEnvelope(
        method=method,
        request_id=request_id,
        timeout_ms=timeout_ms,
        authorization=authorization,
        traceparent=traceparent,
        idempotency_key=idempotency_key,
        attempt=attempt,
        caller=caller,
    ).SerializeToString()
    out = bytearray(head)
    for k, v in metadata:
        entry = _string_field(b"\x0a", k) + _string_field(b"\x12", v)
        out += _METADATA_TAG + _varint(len(entry)) + entry
    if payload:
        out += rpc_pb2.RequestEnvelope(payload=payload).SerializeToString()
    return bytes(out)


class Reply(NamedTuple):
    """A decoded ResponseEnvelope: the request id it answers, the status
    (None for OK) and the typed reply's bytes."""

    request_id: str
    error: Optional[ShopError]
    payload: bytes


def status_error(status: "rpc_pb2.Status", method: str = "", request_id: str = "") -> Optional[ShopError]:
    """The ShopError a Status stands for, None for OK."""
    code = Code.of(status.code)
    if code == Code.OK:
        return None
    return ShopError(
        code,
        status.message,
        violations=[FieldViolation(v.field, v.description) for v in status.field_violations],
        retry_delay_ms=status.retry_info.retry_delay_ms if status.HasField("retry_info") else None,
        projection=(Projection(status.projection.aggregate_id, status.projection.version)
                    if status.HasField("projection") else None),
        method=method,
        request_id=request_id,
    )


def decode_response(frame: bytes, method: str = "") -> Reply:
    """Decodes a reply frame. An undecodable one raises INTERNAL, as the C
    client answers it."""
    try:
        env = _rpc().ResponseEnvelope.FromString(frame)
    except DecodeError:
        raise ShopError(Code.INTERNAL, "undecodable response envelope", method=method) from None
    err = status_error(env.status, method, env.request_id)
    return Reply(env.request_id, err, env.payload if err is None else b"")


def encode_response(
    *,
    request_id: str = "",
    code: int = 0,
    message: str = "",
    violations: Iterable[Tuple[str, str]] = (),
    retry_delay_ms: Optional[int] = None,
    projection: Optional[Tuple[str, int]] = None,
    payload: bytes = b"",
) -> bytes:
    """One packed ResponseEnvelope, as Shop's server writes it (the status
    always present; retry info only when given)."""
    rpc_pb2 = _rpc()
    st = rpc_pb2.Status(code=int(code), message=message)
    for f, d in violations:
        st.field_violations.add(field=f, description=d)
    if retry_delay_ms is not None:
        st.retry_info.retry_delay_ms = retry_delay_ms
    if projection is not None:
        st.projection.aggregate_id, st.projection.version = projection[0], projection[1]
    env = rpc_pb2.ResponseEnvelope(request_id=request_id, payload=payload)
    env.status.CopyFrom(st)
    return env.SerializeToString()


def decode_request(frame: bytes) -> "rpc_pb2.RequestEnvelope":
    """Decodes a request frame (for servers and tests); DecodeError if it
    is none."""
    return _rpc().RequestEnvelope.FromString(frame)
