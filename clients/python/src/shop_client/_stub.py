"""The base of the generated service classes (protoc-gen-shop)."""
from __future__ import annotations

from typing import ClassVar, Dict, NamedTuple, Optional, Type, TypeVar

from google.protobuf.message import DecodeError, Message

from shop_client._channel import CallOptions, Channel, uuid7
from shop_client._status import Code, ShopError

__all__ = ["CallOptions", "Method", "ServiceStub"]

R = TypeVar("R", bound=Message)


class Method(NamedTuple):
    """One unary RPC: its path, its message classes, and whether it is a
    command (a method of a ``*CommandService``: it gets a fresh idempotency
    key unless one is given, as shopctl does)."""

    path: str
    request: Type[Message]
    response: Type[Message]
    command: bool = False


class ServiceStub:
    """A client of one service over a Channel. The generated subclasses add
    NAME, KEY, METHODS and one typed method per RPC."""

    NAME: ClassVar[str] = ""
    KEY: ClassVar[str] = ""
    METHODS: ClassVar[Dict[str, Method]] = {}

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def _invoke(self, method: Method, request: Optional[Message], response: Type[R],
                opts: CallOptions) -> R:
        if request is None:
            request = method.request()
        if not isinstance(request, method.request):
            raise ShopError(Code.INVALID_ARGUMENT,
                            f"request is not a {method.request.DESCRIPTOR.full_name}",
                            method=method.path)
        if method.command and not opts.idempotency_key:
            opts = opts._replace(idempotency_key=uuid7())
        out = self.channel.call(method.path, request.SerializeToString(), opts)
        try:
            return response.FromString(out)
        except DecodeError:
            raise ShopError(Code.INTERNAL,
                            f"undecodable reply: not a {response.DESCRIPTOR.full_name}",
                            method=method.path) from None

    def call(self, name: str, request: Optional[Message] = None,
             opts: CallOptions = CallOptions()) -> Message:
        """Calls a method by its proto name ("CreateOrder"); UNIMPLEMENTED
        for a name the service does not have."""
        m = self.METHODS.get(name)
        if m is None:
            raise ShopError(Code.UNIMPLEMENTED, f"{self.NAME} has no method {name}")
        return self._invoke(m, request, m.response, opts)
