"""The generated stubs are typed: mypy completes and checks method and
field names (what an editor shows), and flags each misspelling."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GOOD = '''
import shop_client
from shop_client.pb.shop.order import v1 as order


def place(shop: shop_client.Shop, product_id: str) -> str:
    r = shop.order_command.create_order(
        order.CreateOrderRequest(lines=[order.CreateOrderLine(product_id=product_id, quantity=2)],
                                 payment_token="tok_visa"),
        timeout=2.0)
    status: int = r.status
    got = shop.order_query.get_order(order.GetOrderRequest(
        order_id=r.order_id, consistency=shop_client.read_after(r.consistency, 2.0)))
    return got.order.order_id + str(status)


def journey() -> str:
    with shop_client.Shop.from_config("config/shop.yaml") as shop:
        login = shop.login("ada@example.com", "pw")
        return login.user_id + place(shop, "p1")
'''

BAD = '''
import shop_client
from shop_client.pb.shop.order import v1 as order


def place(shop: shop_client.Shop) -> None:
    r = shop.order_command.create_order(order.CreateOrderRequest(payment_tokn="x"))
    r.order_idd
    shop.order_command.cancel_ordr(order.CancelOrderRequest())
    shop.order_command.create_order(order.GetOrderRequest())
    shop_client.Shop.from_config().order_comand
'''


def mypy(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess:
    f = tmp_path / name
    f.write_text(text)
    env = {**os.environ, "MYPYPATH": os.environ["SHOP_PYTHON_DIR"]}
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                           "--cache-dir", str(tmp_path / ".mypy"), str(f)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_typed_use_of_the_client_checks_clean(tmp_path):
    p = mypy(tmp_path, "good.py", GOOD)
    assert p.returncode == 0, p.stdout + p.stderr


def test_each_misspelt_method_field_or_message_is_an_error(tmp_path):
    p = mypy(tmp_path, "bad.py", BAD)
    assert p.returncode == 1, p.stdout + p.stderr
    errors = [ln for ln in p.stdout.splitlines() if ": error:" in ln]
    assert all(ln.startswith(str(tmp_path / "bad.py")) for ln in errors), p.stdout
    lines = sorted(int(ln.split(":")[1]) for ln in errors)
    assert lines == [7, 8, 9, 10, 11], p.stdout
    assert 'did you mean "payment_token"' in p.stdout
    assert 'maybe "order_id"' in p.stdout
    assert 'maybe "cancel_order"' in p.stdout
    assert 'maybe "order_command"' in p.stdout
    assert 'expected "CreateOrderRequest | None"' in p.stdout
