"""The client's own semantics, against shop_client.testing.FakeServer: every
status code, and every mapping the C client makes (internal/rpc/client.c)."""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import List

import pytest

from shop_client import Channel, Code, ShopError
from shop_client.pb.shop.order import v1 as order
from shop_client.pb.shop.testing import v1 as echo
from shop_client.testing import DROP, NO_REPLY, FakeServer, Reply, Request

from conftest import REPO

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def echo_reply(req: Request) -> Reply:
    msg = echo.EchoRequest.FromString(req.payload).message
    return Reply(payload=echo.EchoResponse(message=msg, role="customer"))


def channel(srv: FakeServer, **kw) -> Channel:
    ch = Channel(srv.url, **kw)
    assert ch.wait_connected(5)
    return ch


def test_the_codes_match_shops_status_map():
    """Code is status.h's STATUS_MAP, name for name and number for number."""
    text = (REPO / "internal" / "status" / "status.h").read_text()
    want = {name: int(num) for name, num in re.findall(r"X\((\w+), (\d+), \"", text)}
    assert len(want) == 17
    assert {c.name: int(c) for c in Code} == want


@pytest.mark.parametrize("number", list(range(1, 17)) + [99, -1])
def test_every_status_code_raises_a_shop_error_with_its_code(number):
    def h(req):
        return Reply(code=number, message=f"code {number}")

    with FakeServer(h) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"), retry=False)
    want = Code.UNKNOWN if number in (99, -1) else Code(number)
    assert e.value.code is want
    assert e.value.code.name == want.name and int(e.value.code) == int(want)
    assert e.value.message == f"code {number}"
    assert e.value.method == "/shop.testing.v1.EchoService/Echo"
    assert len(srv.requests) == 1, "one attempt: retry=False"


def test_ok_returns_the_typed_reply():
    with FakeServer(echo_reply) as srv, channel(srv) as ch:
        r = echo.EchoService(ch).echo(echo.EchoRequest(message="hello"))
    assert isinstance(r, echo.EchoResponse)
    assert (r.message, r.role) == ("hello", "customer")


def test_field_violations_retry_info_and_projection_are_decoded():
    def h(req):
        return Reply(code=Code.FAILED_PRECONDITION, message="not yet",
                     violations=[("lines[1].quantity", "must be positive"), ("sku", "taken")],
                     retry_delay_ms=250, projection=("order-9", 4))

    with FakeServer(h) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    err = e.value
    assert err.code == Code.FAILED_PRECONDITION
    assert [(v.field, v.description) for v in err.violations] == [
        ("lines[1].quantity", "must be positive"), ("sku", "taken")]
    assert err.retry_after == 0.25 and err.retry_delay_ms == 250
    assert err.projection == ("order-9", 4)
    assert "lines[1].quantity: must be positive" in str(err)
    assert err.request_id == srv.requests[0].request_id


def test_no_server_fails_fast_with_unavailable_after_the_retries():
    ch = Channel("tcp://127.0.0.1:1", retry_max=3, retry_backoff=0.02, timeout=5,
                 connect_timeout=0)
    t0 = time.monotonic()
    with pytest.raises(ShopError) as e:
        echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    took = time.monotonic() - t0
    ch.close()
    assert e.value.code == Code.UNAVAILABLE
    assert "no server connected" in e.value.message
    assert took < 1.0, f"waited {took:.2f} s, not failing fast"
    assert ch.stats.attempts == 4 and ch.stats.retries == 3


def test_a_new_channels_first_call_waits_for_its_first_connection():
    """The server comes up 300 ms after the call starts: within
    connect_timeout, the call goes through on its first attempt."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"tcp://127.0.0.1:{port}"
    ch = Channel(url, connect_timeout=3.0)
    servers: List[FakeServer] = []
    t = threading.Timer(0.3, lambda: servers.append(FakeServer(echo_reply, url)))
    t.start()
    try:
        r = echo.EchoService(ch).echo(echo.EchoRequest(message="late"), timeout=5)
    finally:
        t.join()
        ch.close()
        for srv in servers:
            srv.close()
    assert r.message == "late"
    assert [q.attempt for q in servers[0].requests] == [1]


def test_a_dropped_connection_is_unavailable_and_retried_with_the_same_key_and_request_id():
    seen: List[Request] = []

    def h(req):
        seen.append(req)
        return DROP if len(seen) == 1 else Reply(payload=order.CreateOrderResponse(order_id="o1"))

    with FakeServer(h) as srv, channel(srv, retry_backoff=0.02) as ch:
        t0 = time.monotonic()
        r = order.OrderCommandService(ch).create_order(order.CreateOrderRequest(payment_token="t"))
        took = time.monotonic() - t0
    assert r.order_id == "o1"
    # Attempt 1, then attempt 2 after the backoff. NNG's REQ may also resend
    # attempt 1 itself on the new connection before the pipe callback
    # aborts it ([1, 1, 2]): the same bytes, which idempotency absorbs. On
    # a loaded machine attempt 2 can meet the connection still down (an
    # UNAVAILABLE that never reaches the server) and attempt 3 carries it
    # ([1, 3]): still within the channel's retries.
    assert len(seen) >= 2 and seen[0].attempt == 1
    assert 1 <= seen[-1].attempt <= 1 + ch.retry_max
    assert sorted(q.attempt for q in seen) == [q.attempt for q in seen]
    assert len({q.idempotency_key for q in seen}) == 1
    assert UUID7.match(seen[0].idempotency_key), seen[0].idempotency_key
    assert len({(q.request_id, q.traceparent, q.payload) for q in seen}) == 1
    assert took < 3.0, "the drop failed the call at once, not at its deadline"


def test_without_a_reply_the_call_ends_at_its_deadline_and_is_not_retried():
    with FakeServer(lambda req: NO_REPLY) as srv, channel(srv) as ch:
        t0 = time.monotonic()
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"), timeout=0.3)
        took = time.monotonic() - t0
    assert e.value.code == Code.DEADLINE_EXCEEDED
    assert 0.25 <= took < 1.5
    assert len(srv.requests) == 1
    assert 200 <= srv.requests[0].timeout_ms <= 300, "the remaining budget travels"


def test_the_default_timeout_applies_and_max_timeout_cuts_a_longer_one():
    with FakeServer(echo_reply) as srv, channel(srv, timeout=1.5, max_timeout=2.0) as ch:
        svc = echo.EchoService(ch)
        svc.echo(echo.EchoRequest(message="a"))
        svc.echo(echo.EchoRequest(message="b"), timeout=30)
    assert 1400 <= srv.requests[0].timeout_ms <= 1500
    assert 1900 <= srv.requests[1].timeout_ms <= 2000


def test_a_spent_deadline_is_deadline_exceeded_without_sending():
    with FakeServer(echo_reply) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"),
                                      deadline=time.monotonic() - 0.001)
    assert e.value.code == Code.DEADLINE_EXCEEDED
    assert e.value.message == "no budget left for the call"
    assert srv.requests == []


def test_an_oversized_request_is_resource_exhausted_before_it_is_sent():
    with FakeServer(echo_reply) as srv, channel(srv, max_message_bytes=4096) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x", blob=b"\0" * 5000))
        echo.EchoService(ch).echo(echo.EchoRequest(message="small"))
    assert e.value.code == Code.RESOURCE_EXHAUSTED
    assert "exceeds the 4096-byte message limit" in e.value.message
    assert len(srv.requests) == 1, "only the small request reached the server"


def test_an_undecodable_reply_envelope_is_internal():
    with FakeServer(lambda req: b"\x0b\xad") as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    assert e.value.code == Code.INTERNAL
    assert e.value.message == "undecodable response envelope"
    assert len(srv.requests) == 1, "INTERNAL is not retried"


def test_a_reply_for_another_request_is_internal():
    with FakeServer(lambda req: Reply(request_id="someone-else")) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    assert e.value.code == Code.INTERNAL
    assert "response for request someone-else" in e.value.message


def test_an_undecodable_reply_payload_is_internal():
    with FakeServer(lambda req: Reply(payload=b"\xff\xff\xff")) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    assert e.value.code == Code.INTERNAL
    assert "not a shop.testing.v1.EchoResponse" in e.value.message


def test_a_request_of_the_wrong_type_is_invalid_argument():
    with FakeServer(echo_reply) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.SleepRequest(duration_ms=1))  # type: ignore[arg-type]
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "request is not a shop.testing.v1.EchoRequest" in e.value.message
    assert srv.requests == []


def test_an_unknown_method_name_is_unimplemented():
    with FakeServer(echo_reply) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).call("Nope")
    assert e.value.code == Code.UNIMPLEMENTED


def test_a_token_over_1024_bytes_is_invalid_argument():
    with FakeServer(echo_reply) as srv, channel(srv) as ch:
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"), token="t" * 1025)
        echo.EchoService(ch).echo(echo.EchoRequest(message="x"), token="t" * 1024)
    assert e.value.code == Code.INVALID_ARGUMENT
    assert srv.requests[0].authorization == "Bearer " + "t" * 1024


def test_unavailable_is_retried_with_backoff_at_least_the_servers_retry_delay():
    times: List[float] = []

    def h(req):
        times.append(time.monotonic())
        if len(times) < 3:
            return Reply(code=Code.UNAVAILABLE, message="draining", retry_delay_ms=150)
        return echo_reply(req)

    with FakeServer(h) as srv, channel(srv, retry_backoff=0.01) as ch:
        echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
        assert ch.stats.retries == 2
    assert [q.attempt for q in srv.requests] == [1, 2, 3]
    assert times[1] - times[0] >= 0.14 and times[2] - times[1] >= 0.14


def test_retries_stop_at_the_deadline():
    def h(req):
        return Reply(code=Code.UNAVAILABLE, message="busy", retry_delay_ms=400)

    with FakeServer(h) as srv, channel(srv, retry_max=10) as ch:
        t0 = time.monotonic()
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"), timeout=1.0)
        took = time.monotonic() - t0
    assert e.value.code == Code.UNAVAILABLE
    assert len(srv.requests) == 3, "attempts at 0, 0.4, 0.8 s; a fourth would pass the deadline"
    assert took < 1.0


@pytest.mark.parametrize("code", [c for c in Code if c not in (Code.OK, Code.UNAVAILABLE)])
def test_only_unavailable_is_retried(code):
    with FakeServer(lambda req: Reply(code=code, message="no")) as srv, channel(srv) as ch:
        with pytest.raises(ShopError):
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    assert len(srv.requests) == 1


def test_commands_get_a_fresh_key_queries_none_and_a_given_key_is_kept():
    with FakeServer(lambda req: Reply()) as srv, channel(srv) as ch:
        cmd = order.OrderCommandService(ch)
        q = order.OrderQueryService(ch)
        cmd.cancel_order(order.CancelOrderRequest(order_id="o1"))
        cmd.cancel_order(order.CancelOrderRequest(order_id="o1"))
        cmd.cancel_order(order.CancelOrderRequest(order_id="o1"), idempotency_key="mine-1")
        q.get_order(order.GetOrderRequest(order_id="o1"))
    k = [r.idempotency_key for r in srv.requests]
    assert UUID7.match(k[0]) and UUID7.match(k[1]) and k[0] != k[1]
    assert k[2] == "mine-1" and k[3] == ""


def test_metadata_request_id_caller_and_trace_travel():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with FakeServer(echo_reply) as srv, channel(srv, caller="backoffice") as ch:
        svc = echo.EchoService(ch)
        svc.echo(echo.EchoRequest(message="x"), metadata={"x-tenant": "eu-1", "x-a": "b"},
                 request_id="req-1", traceparent=parent)
        svc.echo(echo.EchoRequest(message="y"))
    a, b = srv.requests
    assert a.metadata == {"x-tenant": "eu-1", "x-a": "b"}
    assert a.frame.index(b"x-tenant") < a.frame.index(b"x-a"), "entries in the caller's order"
    assert (a.request_id, a.caller) == ("req-1", "backoffice")
    assert a.traceparent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert a.traceparent != parent, "a child span, not the parent's"
    assert re.match(r"^[0-9a-f]{32}$", b.request_id)
    assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", b.traceparent)
    assert b.traceparent[3:35] != a.traceparent[3:35], "a new trace without a parent"


def test_calls_from_many_threads_each_get_their_own_reply():
    with FakeServer(echo_reply) as srv, channel(srv) as ch:
        svc = echo.EchoService(ch)
        got: List[str] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            for j in range(10):
                r = svc.echo(echo.EchoRequest(message=f"{i}-{j}"))
                with lock:
                    got.append(r.message)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert sorted(got) == sorted(f"{i}-{j}" for i in range(8) for j in range(10))


def test_a_closed_channel_refuses_calls():
    with FakeServer(echo_reply) as srv:
        ch = channel(srv)
        ch.close()
        with pytest.raises(ShopError) as e:
            echo.EchoService(ch).echo(echo.EchoRequest(message="x"))
    assert e.value.code == Code.CANCELLED


def test_read_config_expands_variables_and_applies_environment_overrides(tmp_path: Path,
                                                                          monkeypatch):
    for k in list(os.environ):
        if k.startswith("SHOP_"):
            monkeypatch.delenv(k)
    p = tmp_path / "shop.yaml"
    p.write_text("endpoints:\n  user_command: tcp://127.0.0.1:${PORT_A:-17001}  # comment\n"
                 "  order_query: tcp://127.0.0.1:17006\nrpc:\n  default_timeout_ms: 2500\n")
    monkeypatch.setenv("PORT_A", "9")
    monkeypatch.setenv("SHOP_ENDPOINTS__ORDER_QUERY", "tcp://127.0.0.1:2")
    import shop_client

    cfg = shop_client.read_config(p)
    assert cfg["endpoints"]["user_command"] == "tcp://127.0.0.1:9"
    assert cfg["endpoints"]["order_query"] == "tcp://127.0.0.1:2"
    shop = shop_client.Shop.from_config(p)
    assert shop.channel_options["timeout"] == 2.5
    shop.close()


def test_endpoints_follow_from_the_port_base_as_the_programs_derive_them(tmp_path: Path,
                                                                        monkeypatch):
    for k in list(os.environ):
        if k.startswith("SHOP_"):
            monkeypatch.delenv(k)
    p = tmp_path / "shop.yaml"
    p.write_text("endpoints:\n  host: 127.0.0.1\n  port_base: 30001\n"
                 "  order_query: tcp://10.0.0.9:1\n")
    import shop_client
    from shop_client._shop import endpoints_of

    eps = endpoints_of(shop_client.read_config(p))
    # internal/config/programs.list: user-command first, audit-worker's
    # audit_query the seventh endpoint; a key of its own wins.
    assert eps["user_command"] == "tcp://127.0.0.1:30001"
    assert eps["product_query"] == "tcp://127.0.0.1:30004"
    assert eps["audit_query"] == "tcp://127.0.0.1:30007"
    assert eps["order_query"] == "tcp://10.0.0.9:1"
    assert "host" not in eps and "port_base" not in eps
