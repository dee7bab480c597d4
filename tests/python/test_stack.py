"""The Python client against real Shop programs (the test profile's, on the
real MariaDB and Kafka; tests/python/run.sh starts them)."""
from __future__ import annotations

import threading
import time
from typing import List

import pynng
import pytest

import shop_client
from shop_client import Code, ShopError, read_after
from shop_client.pb.shop.order import v1 as order
from shop_client.pb.shop.product import v1 as product
from shop_client.pb.shop.user import v1 as user
from shop_client.testing import Request

from conftest import create_product, register

SERVED = ["order_command", "order_query", "product_command", "product_query", "user_command",
          "user_query"]


def address() -> order.ShippingAddress:
    return order.ShippingAddress(recipient="Py Test", line1="1 Main St", city="Paris",
                                 postal_code="75001", country="FR")


def visible_product(admin: shop_client.Shop, sku: str, stock: int = 10) -> str:
    """Creates a product and waits, with its consistency token, until the
    catalog's read model (which CreateOrder consults) has it."""
    p = create_product(admin, sku, stock)
    got = admin.product_query.get_product(product.GetProductRequest(
        product_id=p.product_id, consistency=read_after(p.consistency, 5.0)))
    assert got.product.sku == sku
    return p.product_id


def test_every_program_is_serving_and_answers_reflection(shop):
    health = shop.health()
    for key in SERVED:
        assert health[key] == "SERVING", health
    refl = shop.channel("order_query").reflect()
    assert "shop.order.v1.OrderQueryService" in refl.services
    assert "grpc.health.v1.Health" in refl.services
    served = refl.methods("shop.order.v1.OrderQueryService")
    generated = order.OrderQueryService.METHODS
    assert set(generated) <= set(served), "every generated method is served"
    assert all(served[name] == m.path for name, m in generated.items())
    with pytest.raises(ShopError) as e:
        shop.channel("order_query").health("shop.order.v1.OrderCommandService")
    assert e.value.code == Code.NOT_FOUND


def test_register_login_browse_order_confirm_cancel_and_read_the_events(shop, admin, run_id):
    t0 = time.time()
    sku = f"{run_id}-MUG"
    product_id = visible_product(admin, sku, stock=10)

    # Browsing needs no token.
    with shop_client.Shop.from_config(caller="pytest-anonymous") as anon:
        page = anon.product_query.list_products(product.ListProductsRequest(text=sku))
        assert [p.product_id for p in page.products] == [product_id]

    email = f"{run_id}-journey@example.com"
    register(shop, email)
    login = shop.login(email, "correct horse battery")
    assert login.role == user.ROLE_CUSTOMER
    me = shop.user_query.get_me(user.GetMeRequest(consistency=read_after(login.consistency, 5.0)))
    assert me.user.email == email

    line = order.CreateOrderLine(product_id=product_id, quantity=2)
    placed = shop.order_command.create_order(order.CreateOrderRequest(
        lines=[line], payment_token="tok_visa", shipping_address=address()))
    assert placed.status == order.ORDER_STATUS_PENDING
    assert placed.total.units == 2 * 1299
    # CONFIRMED is the order's next version: wait for it with the token.
    got = shop.order_query.get_order(order.GetOrderRequest(
        order_id=placed.order_id,
        consistency=read_after(placed.consistency, 15.0, version=placed.consistency.version + 1)))
    assert got.order.status == order.ORDER_STATUS_CONFIRMED, got

    other = shop.order_command.create_order(order.CreateOrderRequest(
        lines=[order.CreateOrderLine(product_id=product_id, quantity=1)],
        payment_token="tok_visa", shipping_address=address()))
    cancelled = shop.order_command.cancel_order(order.CancelOrderRequest(
        order_id=other.order_id, reason="changed my mind"))
    got = shop.order_query.get_order(order.GetOrderRequest(
        order_id=other.order_id, consistency=read_after(cancelled.consistency, 15.0)))
    assert got.order.status == order.ORDER_STATUS_CANCELLED

    mine = shop.order_query.list_orders_by_customer(order.ListOrdersByCustomerRequest(
        consistency=read_after(cancelled.consistency, 5.0)))
    assert {o.order_id for o in mine.orders} == {placed.order_id, other.order_id}

    # The events of both orders, from Kafka, decoded by ce_type.
    wanted = {placed.order_id: ["shop.order.v1.OrderCreated", "shop.order.v1.OrderConfirmed"],
              other.order_id: ["shop.order.v1.OrderCreated", "shop.order.v1.OrderCancelled"]}
    seen: dict = {k: [] for k in wanted}
    brokers = shop_client.read_config()["kafka"]["brokers"]
    for ev in shop_client.events(brokers, "shop.order.events.v1", f"{run_id}-journey",
                                 start=t0 - 5, idle_timeout=15):
        if ev.subject in seen:
            seen[ev.subject].append(ev)
        if all(len(seen[k]) >= len(v) for k, v in wanted.items()):
            break
    for order_id, types in wanted.items():
        evs = seen[order_id]
        assert [e.type for e in evs] == types, [e.type for e in evs]
        assert [e.sequence for e in evs] == [1, 2]
        for e in evs:
            assert type(e.data).DESCRIPTOR.full_name == e.type
            assert e.key == order_id and e.data.order_id == order_id
            assert e.specversion == "1.0" and e.content_type == "application/protobuf"
            assert e.id and e.source and e.time is not None and e.traceparent
    created = seen[placed.order_id][0].data
    assert created.customer_id == login.user_id
    assert created.total.units == 2 * 1299 and created.payment_token == "tok_visa"
    assert seen[other.order_id][1].actor.endswith(login.user_id)


def test_the_servers_statuses_arrive_as_shop_errors(shop, admin, customer, run_id):
    def code_of(fn):
        with pytest.raises(ShopError) as e:
            fn()
        return e.value

    with shop_client.Shop.from_config(caller="pytest-anonymous") as anon:
        e = code_of(lambda: anon.user_query.get_me(user.GetMeRequest()))
        assert e.code == Code.UNAUTHENTICATED
        e = code_of(lambda: anon.user_query.get_me(user.GetMeRequest(), token="not-a-jwt"))
        assert e.code == Code.UNAUTHENTICATED

    e = code_of(lambda: create_product(customer, f"{run_id}-NOPE"))
    assert e.code == Code.PERMISSION_DENIED

    e = code_of(lambda: shop.order_query.get_order(
        order.GetOrderRequest(order_id="00000000-0000-7000-8000-000000000000")))
    assert e.code == Code.NOT_FOUND

    email = f"{run_id}-dup@example.com"
    register(shop, email)
    e = code_of(lambda: register(shop, email))
    assert e.code == Code.ALREADY_EXISTS

    e = code_of(lambda: create_product(admin, ""))
    assert e.code == Code.INVALID_ARGUMENT
    assert "sku" in [v.field for v in e.violations]

    # A version the projection will not reach: FAILED_PRECONDITION with
    # the version it has.
    p = create_product(admin, f"{run_id}-FP")
    e = code_of(lambda: admin.product_query.get_product(product.GetProductRequest(
        product_id=p.product_id, consistency=read_after(p.consistency, 0.3, version=99))))
    assert e.code == Code.FAILED_PRECONDITION
    assert e.projection is not None and e.projection.aggregate_id == p.product_id
    assert e.projection.version < 99

    # The same key with another request is refused.
    key = f"{run_id}-key-reuse"
    admin.product_command.restock(product.RestockRequest(product_id=p.product_id, quantity=1),
                                  idempotency_key=key)
    e = code_of(lambda: admin.product_command.restock(
        product.RestockRequest(product_id=p.product_id, quantity=2), idempotency_key=key))
    assert e.code == Code.FAILED_PRECONDITION
    assert "idempotency_key" in [v.field for v in e.violations]

    e = code_of(lambda: customer.user_command.update_profile(
        user.UpdateProfileRequest(name="New", expected_version=999)))
    assert e.code == Code.ABORTED

    e = code_of(lambda: shop.channel("order_query").call("/grpc.health.v1.Health/Watch", b""))
    assert e.code == Code.UNIMPLEMENTED
    e = code_of(lambda: shop.channel("order_query").call("/shop.order.v1.OrderQueryService/Nope",
                                                         b""))
    assert e.code == Code.UNIMPLEMENTED

    # Five failed logins lock the address: RESOURCE_EXHAUSTED with retry info.
    victim = f"{run_id}-throttle@example.com"
    codes = []
    for _ in range(6):
        codes.append(code_of(lambda: shop.login(victim, "wrong password 123")))
    assert [c.code for c in codes[:5]] == [Code.UNAUTHENTICATED] * 5
    assert codes[5].code == Code.RESOURCE_EXHAUSTED
    assert codes[5].retry_after is not None and codes[5].retry_after > 0


class DropAfterCommit:
    """A REP/REQ proxy in front of order-command that forwards the first
    request, lets the server commit it, then drops the client's connection
    instead of answering; later requests pass through."""

    def __init__(self, upstream: str) -> None:
        self.rep = pynng.Rep0(recv_timeout=100)
        listener = self.rep.listen("tcp://127.0.0.1:0")
        self.url = "tcp://" + str(listener.local_address)
        self.req = pynng.Req0(dial=upstream, recv_timeout=10000, resend_time=60000)
        self.seen: List[Request] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        from shop_client._wire import decode_request

        while not self.stop.is_set():
            try:
                msg = self.rep.recv_msg()
            except (pynng.Timeout, pynng.Closed):
                continue
            env = decode_request(msg.bytes)
            self.seen.append(Request(msg.bytes, env.method, env.request_id, env.timeout_ms,
                                     env.authorization, env.traceparent, env.idempotency_key,
                                     env.attempt, env.caller, dict(env.metadata),
                                     env.payload, True))
            self.req.send(msg.bytes)
            reply = self.req.recv()
            if len(self.seen) == 1:
                msg.pipe.close()  # the reply is lost with the connection
            else:
                self.rep.send(reply)

    def close(self) -> None:
        self.stop.set()
        self.rep.close()
        self.thread.join(5)
        self.req.close()


def test_an_idempotent_retry_after_a_lost_reply_gives_one_order(admin, customer, run_id):
    product_id = visible_product(admin, f"{run_id}-IDEM", stock=5)
    proxy = DropAfterCommit(customer.endpoints["order_command"])
    try:
        with shop_client.Channel(proxy.url, retry_backoff=0.05) as ch:
            assert ch.wait_connected(5)
            ch.credentials = customer.session
            cmd = order.OrderCommandService(ch)
            placed = cmd.create_order(order.CreateOrderRequest(
                lines=[order.CreateOrderLine(product_id=product_id, quantity=1)],
                payment_token="tok_visa", shipping_address=address()))
    finally:
        proxy.close()
    # The lost reply made the client send again (attempt 2, or NNG's own
    # resend of attempt 1 on the new connection): the same key each time.
    assert len(proxy.seen) >= 2 and proxy.seen[0].attempt == 1
    assert len({r.idempotency_key for r in proxy.seen}) == 1 and proxy.seen[0].idempotency_key
    mine = customer.order_query.list_orders_by_customer(order.ListOrdersByCustomerRequest(
        consistency=read_after(placed.consistency, 5.0)))
    assert [o.order_id for o in mine.orders] == [placed.order_id], "one order, not two"


def test_the_access_token_is_refreshed_before_expiry_and_after_a_refusal(shop, run_id):
    email = f"{run_id}-refresh@example.com"
    register(shop, email)
    # A margin longer than the token's life: every call refreshes first.
    shop.login(email, "correct horse battery", refresh_margin=10_000)
    s = shop.session
    first_refresh = s.refresh_token
    me = shop.user_query.get_me(user.GetMeRequest())
    assert me.user.email == email
    assert s.refreshes == 1 and s.refresh_token != first_refresh
    # An access token the server refuses is refreshed once and the call
    # made again.
    s.refresh_margin = 60
    s.access_token = "eyJhbGciOiJIUzI1NiJ9.e30.not-signed"
    before = s.refreshes
    assert shop.user_query.get_me(user.GetMeRequest()).user.email == email
    assert s.refreshes == before + 1

    # The spent refresh token no longer works (rotation).
    with pytest.raises(ShopError) as e:
        shop.user_command.refresh_token(user.RefreshTokenRequest(refresh_token=first_refresh),
                                        token="")
    assert e.value.code == Code.UNAUTHENTICATED

    # After logout nothing refreshes: log in again.
    shop.logout()
    with pytest.raises(ShopError) as e:
        shop.user_query.get_me(user.GetMeRequest())
    assert e.value.code == Code.UNAUTHENTICATED

