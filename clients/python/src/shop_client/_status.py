"""Status codes and the one exception the client raises."""
from __future__ import annotations

import enum
from typing import List, NamedTuple, Optional


class Code(enum.IntEnum):
    """The gRPC canonical codes, with their numbers: Shop's status codes
    (internal/status/status.h) cross the wire unchanged."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, number: int) -> "Code":
        """The code for a wire number; UNKNOWN for one outside 0..16, as
        the C client does."""
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN


class FieldViolation(NamedTuple):
    """One invalid field of a request (google.rpc.BadRequest)."""

    field: str
    description: str


class Projection(NamedTuple):
    """What a query's projection had reached when it answered
    FAILED_PRECONDITION to a consistency token it could not wait for."""

    aggregate_id: str
    version: int


class ShopError(Exception):
    """Any status but OK, from the server or from the client itself.

    ``code`` is a :class:`Code` (``code.name`` "INVALID_ARGUMENT",
    ``int(code)`` 3); ``message`` the developer-facing text;
    ``violations`` the field violations; ``retry_after`` the server's retry
    delay in seconds (None when it gave none); ``projection`` a query's
    reached version on FAILED_PRECONDITION; ``method`` and ``request_id``
    name the call ("" for errors outside a call).
    """

    def __init__(
        self,
        code: Code,
        message: str = "",
        *,
        violations: Optional[List[FieldViolation]] = None,
        retry_delay_ms: Optional[int] = None,
        projection: Optional[Projection] = None,
        method: str = "",
        request_id: str = "",
    ) -> None:
        self.code = Code.of(int(code))
        self.message = message
        self.violations: List[FieldViolation] = list(violations or [])
        self.retry_delay_ms = retry_delay_ms
        self.projection = projection
        self.method = method
        self.request_id = request_id
        super().__init__(str(self))

    @property
    def retry_after(self) -> Optional[float]:
        """The server's retry delay in seconds, or None."""
        return None if self.retry_delay_ms is None else self.retry_delay_ms / 1000.0

    def __str__(self) -> str:
        s = f"{self.code.name}: {self.message}" if self.message else self.code.name
        if self.violations:
            s += " (" + "; ".join(f"{v.field}: {v.description}" for v in self.violations) + ")"
        if self.retry_delay_ms is not None:
            s += f" [retry after {self.retry_delay_ms} ms]"
        return s

    def __repr__(self) -> str:
        return f"ShopError({self.code.name}, {self.message!r})"
