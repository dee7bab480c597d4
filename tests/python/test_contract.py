"""The C/Python contract: both clients put the same bytes on the wire and
each decodes the other's replies.

- Golden fixtures (tests/rpc/fixtures, written by the C gen_fixtures.c and
  round-tripped byte for byte by the C test_rpc_envelope): the Python
  encoder writes the same request bytes, decodes every reply fixture, and
  its reply encoder (FakeServer's) writes the same reply bytes.
- Live: the real C client (tests/fixtures/contract-client) calls a Python
  FakeServer. Its request frame equals what the Python client encodes for
  the same call, byte for byte, and it decodes each Python-encoded reply
  (OK, violations, retry info, projection, every code, a retry, garbage).
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Dict, List

import pytest

from shop_client import Code
from shop_client._wire import decode_response, encode_request, encode_response
from shop_client.pb.shop.rpc.v1 import rpc_pb2
from shop_client.pb.shop.testing import v1 as echo
from shop_client.testing import FakeServer, Reply, Request

from conftest import FIXTURES

FULL = dict(
    method="/shop.testing.v1.EchoService/Echo",
    request_id="0123456789abcdef0123456789abcdef",
    timeout_ms=2500,
    authorization="Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    idempotency_key="order-42-create",
    attempt=2,
    caller="shopctl",
    metadata=[("x-tenant", "eu-1"), ("x-client", "shopctl/0.1")],
    payload=echo.EchoRequest(message="hello").SerializeToString(),
)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_python_encodes_the_full_golden_request_byte_for_byte():
    assert encode_request(**FULL) == fixture("request_full.bin")


def test_python_encodes_the_minimal_golden_request_byte_for_byte():
    got = encode_request(method="/grpc.health.v1.Health/Check", request_id="r1")
    assert got == fixture("request_minimal.bin")


def test_metadata_with_an_empty_value_encodes_as_protobuf_c_does():
    """protobuf-c leaves an entry's empty value out; so does the Python
    encoder, and protobuf's own decoder reads it back."""
    got = encode_request(method="/a.B/C", metadata=[("k", "")])
    env = rpc_pb2.RequestEnvelope.FromString(got)
    assert dict(env.metadata) == {"k": ""}
    assert got.endswith(b"\x4a\x03\x0a\x01k")


def test_python_decodes_the_golden_ok_reply():
    r = decode_response(fixture("response_ok.bin"))
    assert r.error is None
    assert r.request_id == "0123456789abcdef0123456789abcdef"
    e = echo.EchoResponse.FromString(r.payload)
    assert (e.message, e.user_id, e.role) == ("hello", "user-7", "customer")


def test_python_decodes_the_golden_error_reply():
    r = decode_response(fixture("response_error.bin"))
    assert r.error is not None and r.payload == b""
    assert r.error.code == Code.INVALID_ARGUMENT
    assert r.error.message == "message is required"
    assert [(v.field, v.description) for v in r.error.violations] == [
        ("message", "must not be empty"), ("idempotency_key", "required")]
    assert r.error.retry_delay_ms == 50


def test_python_decodes_the_golden_projection_reply():
    r = decode_response(fixture("response_projection.bin"))
    assert r.error is not None and r.error.code == Code.FAILED_PRECONDITION
    assert r.error.projection == ("0190c3c2-7a1b-7c3d-8e4f-0123456789ab", 3)
    assert r.error.retry_delay_ms is None


def test_python_decodes_the_golden_undecodable_reply():
    r = decode_response(fixture("response_undecodable.bin"))
    assert r.request_id == "" and r.error is not None
    assert (r.error.code, r.error.message) == (Code.INVALID_ARGUMENT, "undecodable request envelope")


@pytest.mark.parametrize("name,kw", [
    ("response_ok.bin", dict(request_id="0123456789abcdef0123456789abcdef",
                             payload=echo.EchoResponse(message="hello", user_id="user-7",
                                                       role="customer").SerializeToString())),
    ("response_error.bin", dict(request_id="r2", code=3, message="message is required",
                                violations=[("message", "must not be empty"),
                                            ("idempotency_key", "required")],
                                retry_delay_ms=50)),
    ("response_projection.bin", dict(request_id="r3", code=9,
                                     message="projection at version 3, token asks for 4",
                                     projection=("0190c3c2-7a1b-7c3d-8e4f-0123456789ab", 3))),
    ("response_undecodable.bin", dict(code=3, message="undecodable request envelope")),
])
def test_python_encodes_each_golden_reply_byte_for_byte(name, kw):
    assert encode_response(**kw) == fixture(name)


def contract_handler(req: Request):
    msg = echo.EchoRequest.FromString(req.payload).message
    if msg == "hello":
        return Reply(payload=echo.EchoResponse(message="hello", user_id="user-7", role="customer"))
    if msg == "":
        return Reply(code=3, message="message is required",
                     violations=[("message", "must not be empty"), ("idempotency_key", "required")],
                     retry_delay_ms=50)
    if msg == "projection":
        return Reply(code=9, message="not there yet", projection=("order-1", 3))
    if msg.startswith("code:"):
        return Reply(code=int(msg[5:]), message=msg)
    if msg == "unavailable-once":
        if req.attempt == 1:
            return Reply(code=Code.UNAVAILABLE, message="try again")
        return Reply(payload=echo.EchoResponse(message=f"attempt {req.attempt}"))
    if msg == "garbage":
        return b"\x0b\xad"
    if msg == "wrong-id":
        return Reply(request_id="not-yours")
    return Reply(code=Code.UNIMPLEMENTED, message=f"unexpected {msg!r}")


@pytest.fixture(scope="module")
def c_run():
    binary = os.environ.get("SHOP_CONTRACT_CLIENT")
    assert binary, "SHOP_CONTRACT_CLIENT is not set (tests/python/run.sh sets it)"
    with FakeServer(contract_handler) as srv:
        p = subprocess.run([binary, srv.url], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert not srv.errors, srv.errors
        calls: Dict[str, dict] = {}
        for line in p.stdout.splitlines():
            o = json.loads(line)
            calls[o["case"]] = o
        yield calls, list(srv.requests)


def test_the_c_clients_request_is_what_python_encodes_for_the_same_call(c_run):
    _, requests = c_run
    got = requests[0]
    assert got.method == FULL["method"] and got.attempt == 1
    # The two per-call values are the C client's own: its new span id and
    # the budget left when it sent.
    want = encode_request(**{**FULL, "attempt": 1, "traceparent": got.traceparent,
                             "timeout_ms": got.timeout_ms})
    assert got.frame == want
    assert 2000 < got.timeout_ms <= 2500


def test_the_c_client_decodes_pythons_ok_reply(c_run):
    calls, _ = c_run
    assert calls["full"]["code"] == "OK"
    assert calls["full"]["reply"] == {"message": "hello", "user_id": "user-7", "role": "customer"}


def test_the_c_client_decodes_pythons_error_details(c_run):
    calls, _ = c_run
    e = calls["error"]
    assert (e["code"], e["message"]) == ("INVALID_ARGUMENT", "message is required")
    assert e["violations"] == [["message", "must not be empty"], ["idempotency_key", "required"]]
    assert e["retry_delay_ms"] == 50
    p = calls["projection"]
    assert p["code"] == "FAILED_PRECONDITION" and p["projection"] == ["order-1", 3]
    assert p["retry_delay_ms"] == -1, "no retry info"


def test_the_c_client_maps_every_code_python_sends(c_run):
    calls, _ = c_run
    for n in range(1, 17):
        c = calls[f"code:{n}"]
        assert (c["number"], c["code"], c["message"]) == (n, Code(n).name, f"code:{n}")
    assert calls["code:99"]["code"] == "UNKNOWN"


def test_the_c_client_retries_pythons_unavailable_and_decodes_the_reply(c_run):
    calls, requests = c_run
    assert calls["retry"]["code"] == "OK"
    assert calls["retry"]["reply"]["message"] == "attempt 2"
    tries: List[Request] = [r for r in requests
                            if r.payload == echo.EchoRequest(message="unavailable-once")
                            .SerializeToString()]
    assert [r.attempt for r in tries] == [1, 2]
    assert tries[0].request_id == tries[1].request_id


def test_the_c_client_refuses_what_python_also_refuses(c_run):
    calls, _ = c_run
    assert (calls["garbage"]["code"], calls["garbage"]["message"]) == (
        "INTERNAL", "undecodable response envelope")
    assert calls["wrong-id"]["code"] == "INTERNAL"
    assert "response for request not-yours" in calls["wrong-id"]["message"]
