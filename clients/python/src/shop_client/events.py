"""Reading Shop's domain events from Kafka (confluent-kafka).

    for ev in shop_client.events("127.0.0.1:19092", ["shop.order.events.v1"], "my-job"):
        print(ev.type, ev.subject, ev.sequence, ev.data)

Each record's value is the event's protobuf bytes and its headers the
CloudEvents attributes (docs/DESIGN.md, "Events on Kafka"). The reader
decodes the value as the message type its ``ce_type`` names (the protobuf
full name, looked up among the modules generated from proto/); a type this
client does not know gives ``data = None`` and the bytes in ``value``.

Delivery is at least once, per consumer group: a record's offset is stored
only when the loop asks for the next record (its body has run), and
committed in the background and on close. Where a new group starts:
``start="earliest"`` (the default: the topics keep every event),
``"latest"``, or a time (a datetime or Unix seconds: the first record at or
after it, in every partition). A group that has committed offsets resumes
from them unless ``start`` is a time.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import time
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Type, Union

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from shop_client._status import Code, ShopError

Start = Union[str, float, int, _dt.datetime, None]

_loaded = False


def _load_modules() -> None:
    global _loaded
    if not _loaded:
        from shop_client._generated import PROTO_MODULES

        for m in PROTO_MODULES:
            importlib.import_module(m)
        _loaded = True


def message_class(full_name: str) -> Optional[Type[Message]]:
    """The generated class of a protobuf full name ("shop.order.v1.OrderCreated"),
    or None."""
    _load_modules()
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        return None
    cls: Type[Message] = message_factory.GetMessageClass(desc)
    return cls


class Event(NamedTuple):
    """One record: the decoded event and its CloudEvents attributes."""

    type: str  # ce_type: the protobuf full name
    data: Optional[Message]  # the decoded event; None for an unknown or undecodable type
    id: str  # ce_id (time-ordered UUID)
    source: str  # ce_source
    subject: str  # ce_subject (the aggregate id)
    time: Optional[_dt.datetime]  # ce_time, UTC
    sequence: int  # ce_sequence: the aggregate's version (0: none)
    correlation_id: str  # ce_correlationid
    actor: str  # ce_actor
    traceparent: str
    specversion: str
    content_type: str
    headers: Dict[str, str]  # every header (the last of a name)
    key: str
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


def _parse_time(s: str) -> Optional[_dt.datetime]:
    if not s:
        return None
    try:
        return _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def decode_record(topic: str, partition: int, offset: int, key: Any, value: Any,
                  headers: Any, timestamp_ms: int) -> Event:
    """An Event from a record's parts (headers as (name, bytes) pairs)."""
    h: Dict[str, str] = {}
    for name, v in headers or []:
        h[name] = v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else (v or "")
    ce_type = h.get("ce_type", "")
    data: Optional[Message] = None
    cls = message_class(ce_type) if ce_type else None
    if cls is not None:
        try:
            data = cls.FromString(value or b"")
        except DecodeError:
            data = None
    try:
        seq = int(h.get("ce_sequence", "0"))
    except ValueError:
        seq = 0
    return Event(
        type=ce_type, data=data, id=h.get("ce_id", ""), source=h.get("ce_source", ""),
        subject=h.get("ce_subject", ""), time=_parse_time(h.get("ce_time", "")), sequence=seq,
        correlation_id=h.get("ce_correlationid", ""), actor=h.get("ce_actor", ""),
        traceparent=h.get("traceparent", ""), specversion=h.get("ce_specversion", ""),
        content_type=h.get("content-type", ""), headers=h,
        key=(key or b"").decode("utf-8", "replace"), value=value or b"",
        topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms)


class EventReader:
    """An iterator of Events over a consumer group; close() it (or use
    ``with``; leaving a ``for`` loop early closes a generator's reader only
    when the generator is closed)."""

    def __init__(self, brokers: str, topics: Sequence[str], group: str, *,
                 start: Start = "earliest", types: Optional[Iterable[str]] = None,
                 max_events: Optional[int] = None, idle_timeout: Optional[float] = None,
                 config: Optional[Dict[str, Any]] = None) -> None:
        from confluent_kafka import Consumer

        _load_modules()
        self.topics = list(topics)
        self.types = set(types) if types is not None else None
        self.max_events = max_events
        self.idle_timeout = idle_timeout
        self._start_ms: Optional[int] = None
        reset = "earliest"
        if isinstance(start, str):
            if start not in ("earliest", "latest"):
                raise ValueError(f"start: 'earliest', 'latest' or a time, not {start!r}")
            reset = start
        elif isinstance(start, _dt.datetime):
            self._start_ms = int(start.timestamp() * 1000)
        elif start is not None:
            self._start_ms = int(float(start) * 1000)
        conf: Dict[str, Any] = {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": reset,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
        }
        conf.update(config or {})
        self._consumer = Consumer(conf)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign)
        self._closed = False
        self.assigned: List[Any] = []

    def _on_assign(self, consumer: Any, partitions: List[Any]) -> None:
        if self._start_ms is not None:
            for p in partitions:
                p.offset = self._start_ms
            partitions = consumer.offsets_for_times(partitions, timeout=10)
        self.assigned = list(partitions)
        consumer.assign(partitions)

    def __iter__(self) -> Iterator[Event]:
        from confluent_kafka import KafkaError

        n = 0
        last = time.monotonic()
        try:
            while self.max_events is None or n < self.max_events:
                msg = self._consumer.poll(0.2)
                if msg is None:
                    if self.idle_timeout is not None and time.monotonic() - last >= self.idle_timeout:
                        return
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or not err.retriable():
                        raise ShopError(Code.UNAVAILABLE, f"kafka: {err.str()}")
                    continue
                last = time.monotonic()
                ts = msg.timestamp()
                ev = decode_record(msg.topic() or "", msg.partition() or 0, msg.offset() or 0,
                                   msg.key(), msg.value(), msg.headers() or [],
                                   ts[1] if ts else -1)
                if self.types is None or ev.type in self.types:
                    n += 1
                    yield ev
                # Reached once the loop body ran: at least once.
                self._consumer.store_offsets(message=msg)
        finally:
            self.close()

    def close(self) -> None:
        """Commits the stored offsets and leaves the group."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> "EventReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def events(brokers: str, topics: Union[str, Sequence[str]], group: str, *,
           start: Start = "earliest", types: Optional[Iterable[str]] = None,
           max_events: Optional[int] = None, idle_timeout: Optional[float] = None,
           config: Optional[Dict[str, Any]] = None) -> EventReader:
    """Shop's events on ``topics`` for consumer group ``group``, decoded by
    ``ce_type``. ``types`` keeps only those ce_types; the reader stops
    after ``max_events`` events or ``idle_timeout`` seconds without a
    record (default: never). ``config`` adds librdkafka settings."""
    return EventReader(brokers, [topics] if isinstance(topics, str) else list(topics), group,
                       start=start, types=types, max_events=max_events,
                       idle_timeout=idle_timeout, config=config)
