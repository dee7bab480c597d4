"""ShopBase: the endpoints of a whole Shop, one Channel each, and the
session they share. The generated Shop class (_generated.py) adds one
typed property per service."""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Type, TypeVar, Union

from shop_client._channel import Channel, Credentials
from shop_client._session import Session
from shop_client._status import ShopError
from shop_client._stub import ServiceStub

if TYPE_CHECKING:
    from shop_client.pb.shop.user.v1.commands_pb2 import LoginResponse

S = TypeVar("S", bound=ServiceStub)
T = TypeVar("T", bound="ShopBase")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# rpc.* keys of the config that set a channel's defaults, as
# rpc_client_opts_from_cfg does in C: (key, Channel argument, scale).
_RPC_KEYS = (
    ("default_timeout_ms", "timeout", 1000.0),
    ("max_timeout_ms", "max_timeout", 1000.0),
    ("retry_max", "retry_max", None),
    ("retry_backoff_ms", "retry_backoff", 1000.0),
    ("max_message_bytes", "max_message_bytes", None),
)


def read_config(path: Union[str, Path, None] = None) -> Dict[str, Dict[str, str]]:
    """The two-level sections of a Shop YAML config (``endpoints``, ``rpc``,
    ``kafka``, ...) as strings, ``${VAR}`` and ``${VAR:-default}`` expanded,
    then the environment overrides ``SHOP_<SECTION>__<KEY>`` applied, as the
    C programs read them. path: the file, else ``$SHOP_CONFIG``, else
    ``config/shop.yaml`` in the current folder (if none exists, only the
    environment counts)."""
    if path is None:
        path = os.environ.get("SHOP_CONFIG") or "config/shop.yaml"
    p = Path(path)
    sections: Dict[str, Dict[str, str]] = {}
    if p.exists():
        cur: Optional[Dict[str, str]] = None
        for raw in p.read_text().splitlines():
            line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
            if not line.strip():
                continue
            if not line[0].isspace():
                name = line.rstrip(":").strip()
                cur = sections.setdefault(name, {}) if line.endswith(":") else None
                continue
            if cur is None or ":" not in line:
                continue
            k, _, v = line.strip().partition(":")
            v = v.strip().strip('"').strip("'")
            cur[k.strip()] = _VAR.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), v)
    elif path != "config/shop.yaml":
        raise FileNotFoundError(str(p))
    for var, value in os.environ.items():
        m = re.match(r"^SHOP_([A-Z0-9_]+?)__([A-Z0-9_]+)$", var)
        if m:
            sections.setdefault(m.group(1).lower(), {})[m.group(2).lower()] = value
    return sections


def endpoints_of(cfg: Dict[str, Dict[str, str]]) -> Dict[str, str]:
    """The endpoint of each key: endpoints.<key> when the config gives one,
    else tcp://<endpoints.host>:<endpoints.port_base + the key's place>, as
    the C programs derive them (internal/config/programs.list)."""
    from ._programs import ENDPOINT_KEYS

    section = cfg.get("endpoints", {})
    out = {k: v for k, v in section.items() if k not in ("host", "port_base") and v}
    base = section.get("port_base")
    host = section.get("host") or "127.0.0.1"
    for i, key in enumerate(ENDPOINT_KEYS):
        if key not in out and base:
            out[key] = f"tcp://{host}:{int(base) + i}"
    return out


class _SessionRef(Credentials):
    """The Shop's current session, whatever it is when a call is made."""

    def __init__(self, shop: "ShopBase") -> None:
        self.shop = shop

    def token(self) -> Optional[str]:
        s = self.shop.session
        return s.token() if s is not None else None

    def refresh_after_unauthenticated(self) -> bool:
        s = self.shop.session
        return s.refresh_after_unauthenticated() if s is not None else False


class ShopBase:
    """The endpoints of a Shop: ``endpoints`` maps a service key
    ("order_command", the keys of config/shop.yaml's ``endpoints``) to its
    URL (or comma-separated URLs, or a list). ``channel_options`` are
    Channel's (caller, timeout, max_timeout, retry_max, retry_backoff,
    max_message_bytes, ...). Thread-safe; close() it, or use ``with``."""

    def __init__(self, endpoints: Mapping[str, Union[str, Sequence[str]]], *,
                 session: Optional[Session] = None, **channel_options: Any) -> None:
        self.endpoints = dict(endpoints)
        self.channel_options = channel_options
        self.session = session
        self._creds = _SessionRef(self)
        self._lock = threading.Lock()
        self._channels: Dict[str, Channel] = {}
        self._stubs: Dict[str, ServiceStub] = {}

    @classmethod
    def from_config(cls: Type[T], path: Union[str, Path, None] = None,
                    **channel_options: Any) -> T:
        """A Shop on the endpoints of a config file (see read_config), with
        the channel defaults of its rpc section; channel_options win."""
        cfg = read_config(path)
        opts: Dict[str, Any] = {}
        for key, arg, scale in _RPC_KEYS:
            if key in cfg.get("rpc", {}):
                n = int(cfg["rpc"][key])
                opts[arg] = n / scale if scale else n
        opts.update(channel_options)
        return cls(endpoints_of(cfg), **opts)

    def channel(self, key: str) -> Channel:
        """The channel of an endpoint key, opened on first use."""
        with self._lock:
            ch = self._channels.get(key)
            if ch is None:
                url = self.endpoints.get(key)
                if not url:
                    raise KeyError(f"no endpoint {key!r} (have: {', '.join(sorted(self.endpoints))})")
                ch = Channel(url, credentials=self._creds, **self.channel_options)
                self._channels[key] = ch
            return ch

    def _service(self, cls: Type[S], key: str) -> S:
        with self._lock:
            stub = self._stubs.get(key)
        if stub is None:
            stub = cls(self.channel(key))
            with self._lock:
                stub = self._stubs.setdefault(key, stub)
        return stub  # type: ignore[return-value]

    def login(self, email: str, password: str, *,
              refresh_margin: Optional[float] = None) -> "LoginResponse":
        """Logs in on the user_command endpoint; every later call of this
        Shop carries the session's token (refreshed on its own). Returns
        the LoginResponse."""
        kw = {} if refresh_margin is None else {"refresh_margin": refresh_margin}
        s = Session(self.channel("user_command"), **kw)
        r = s.login(email, password)
        self.session = s
        return r

    def logout(self, all_sessions: bool = False) -> None:
        if self.session is not None:
            self.session.logout(all_sessions)
            self.session = None

    def health(self, timeout: float = 2.0) -> Dict[str, str]:
        """Health/Check of every endpoint: key -> "SERVING", ... or the
        error ("UNAVAILABLE: no server connected")."""
        out: Dict[str, str] = {}
        for key in sorted(self.endpoints):
            try:
                out[key] = self.channel(key).health(timeout=timeout)
            except ShopError as e:
                out[key] = str(e)
        return out

    def close(self) -> None:
        with self._lock:
            chans, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for ch in chans:
            ch.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
