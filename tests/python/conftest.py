"""Fixtures of the Python client's tests (clients/python/README.md, "Tests").

run.sh starts the test profile's Shop programs and puts the generated
client (build/python) on PYTHONPATH; the stack tests read the endpoints,
the first admin and Kafka from $SHOP_CONFIG with its environment overrides,
as every Shop program does.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Dict, Iterator

import pytest

import shop_client
from shop_client.pb.shop.common import v1 as common
from shop_client.pb.shop.product import v1 as product
from shop_client.pb.shop.user import v1 as user

REPO = Path(os.environ.get("SHOP_REPO", Path(__file__).resolve().parents[2]))
FIXTURES = REPO / "tests" / "rpc" / "fixtures"


@pytest.fixture(scope="session")
def cfg() -> Dict[str, Dict[str, str]]:
    path = os.environ.get("SHOP_CONFIG", str(REPO / "config" / "test.yaml"))
    return shop_client.read_config(path)


@pytest.fixture(scope="session")
def run_id() -> str:
    """A prefix for what this run creates (emails, SKUs, groups), so runs
    never see each other's data."""
    return "py" + secrets.token_hex(4)


@pytest.fixture
def shop(cfg: Dict[str, Dict[str, str]]) -> Iterator[shop_client.Shop]:
    with shop_client.Shop.from_config(os.environ.get("SHOP_CONFIG"), caller="pytest") as s:
        yield s


@pytest.fixture
def admin(cfg: Dict[str, Dict[str, str]]) -> Iterator[shop_client.Shop]:
    """A Shop logged in as the profile's first admin."""
    with shop_client.Shop.from_config(os.environ.get("SHOP_CONFIG"), caller="pytest") as s:
        password = Path(cfg["auth"]["admin_password_file"]).read_text().strip()
        s.login(cfg["auth"]["admin_email"], password)
        yield s


def register(shop: shop_client.Shop, email: str, password: str = "correct horse battery") -> str:
    r = shop.user_command.register_user(
        user.RegisterUserRequest(email=email, password=password, name="Py Test"))
    return r.user_id


@pytest.fixture
def customer(shop: shop_client.Shop, run_id: str) -> shop_client.Shop:
    """A Shop logged in as a customer registered for the test."""
    email = f"{run_id}-{secrets.token_hex(3)}@example.com"
    register(shop, email)
    shop.login(email, "correct horse battery")
    return shop


def create_product(admin: shop_client.Shop, sku: str, stock: int = 10,
                   price: int = 1299) -> product.CreateProductResponse:
    return admin.product_command.create_product(product.CreateProductRequest(
        sku=sku,
        details=product.ProductDetails(name=f"Mug {sku}", description="A mug", category="kitchen"),
        price=common.Money(units=price, currency="EUR"),
        initial_stock=stock,
        inventory_rule=product.InventoryRule(low_stock_threshold=1, max_quantity_per_order=5)))
