"""shop_client: Shop's Python client, generated from proto/.

    import shop_client
    from shop_client.pb.shop.product import v1 as product

    with shop_client.Shop.from_config("config/shop.yaml") as shop:
        shop.login("ada@example.com", "correct horse battery")
        page = shop.product_query.list_products(product.ListProductsRequest(text="mug"))

- ``Shop``: every service of proto/ as a typed property (``shop.order_command``),
  one Channel per endpoint, the session's bearer token on every call.
- ``Channel``: one endpoint; deadlines, retries on UNAVAILABLE with the same
  idempotency key, health() and reflect(). The generated service classes
  (``shop_client.pb.shop.order.v1.OrderCommandService(channel)``) call it.
- ``ShopError``: every non-OK status (``.code``, ``.message``,
  ``.violations``, ``.retry_after``).
- ``events()``: the domain events on Kafka, decoded by ``ce_type``.
- ``read_after()``: the ReadConsistency that waits for your own write.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from shop_client._channel import CallOptions, Channel, Credentials, Reflection, uuid7
from shop_client._generated import SERVICES, Shop
from shop_client._session import Session
from shop_client._shop import read_config
from shop_client._status import Code, FieldViolation, Projection, ShopError
from shop_client.events import Event, EventReader, events
from shop_client.pb.shop.common.v1 import common_pb2 as _common

if TYPE_CHECKING:
    from shop_client.pb.shop.common.v1.common_pb2 import ConsistencyToken, ReadConsistency

__version__ = "0.1.0"

__all__ = [
    "CallOptions", "Channel", "Code", "Credentials", "Event", "EventReader", "FieldViolation",
    "Projection", "Reflection", "SERVICES", "Session", "Shop", "ShopError", "events",
    "read_after", "read_config", "uuid7",
]


def read_after(token: "ConsistencyToken", wait: float = 2.0, *,
               version: Optional[int] = None) -> "ReadConsistency":
    """The ReadConsistency for a query that must see the write ``token``
    names (a command reply's ``consistency``): the query answers once its
    projection has reached that version (or ``version``, say the next one
    an asynchronous step will make), waiting up to ``wait`` seconds, else
    FAILED_PRECONDITION with the version it has (ShopError.projection)."""
    t: Any = _common.ConsistencyToken(aggregate_id=token.aggregate_id,
                                      version=token.version if version is None else version)
    return _common.ReadConsistency(token=t, wait_ms=int(wait * 1000))
