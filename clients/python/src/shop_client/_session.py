"""Session: a user's bearer tokens, refreshed on their own."""
from __future__ import annotations

import threading
import time
from typing import Optional

from shop_client._channel import CallOptions, Channel, Credentials, uuid7
from shop_client._status import Code, ShopError
from shop_client.pb.shop.user.v1 import commands_pb2 as _user

# shopctl's REFRESH_MARGIN_S: an access token that expires within this is
# refreshed before it is sent.
REFRESH_MARGIN = 60.0


class Session(Credentials):
    """Login, automatic refresh and logout of one user, against
    UserCommandService on ``channel`` (the user-command endpoint).

    Give it to a Channel as ``credentials`` (Shop.login does): every call
    then carries ``Bearer <access token>``. The token is refreshed with
    RefreshToken (which rotates the refresh token too) when it expires
    within ``refresh_margin`` seconds, and once more when a call is refused
    UNAUTHENTICATED (a token revoked early, a clock off). A failed refresh
    raises the server's status (UNAUTHENTICATED: log in again).
    Thread-safe.
    """

    def __init__(self, channel: Channel, *, refresh_margin: float = REFRESH_MARGIN,
                 timeout: Optional[float] = None) -> None:
        self.channel = channel
        self.refresh_margin = refresh_margin
        self.timeout = timeout
        self._lock = threading.RLock()
        self.user_id = ""
        self.role = 0
        self.access_token = ""
        self.refresh_token = ""
        self.access_expires_at = 0.0  # Unix seconds; 0: unknown
        self.refreshes = 0

    def _set(self, tokens: "_user.AuthTokens", user_id: str, role: int) -> None:
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token
        exp = tokens.access_token_expires_at
        self.access_expires_at = exp.seconds + exp.nanos / 1e9 if tokens.HasField(
            "access_token_expires_at") else 0.0
        self.user_id = user_id
        self.role = role

    def _call(self, method: str, req, resp_type):  # type: ignore[no-untyped-def]
        # token="" : these calls are public and must not ask this session
        # for a token (that would refresh from inside a refresh).
        out = self.channel.call(f"/shop.user.v1.UserCommandService/{method}",
                                req.SerializeToString(),
                                CallOptions(timeout=self.timeout, token="",
                                            idempotency_key=uuid7()))
        return resp_type.FromString(out)

    def login(self, email: str, password: str) -> "_user.LoginResponse":
        """Login; the tokens are kept for the next calls."""
        r = self._call("Login", _user.LoginRequest(email=email, password=password),
                       _user.LoginResponse)
        with self._lock:
            self._set(r.tokens, r.user_id, r.role)
        return r

    def refresh(self) -> "_user.RefreshTokenResponse":
        """RefreshToken now: a new access token and a new refresh token (the
        old refresh token is spent)."""
        with self._lock:
            if not self.refresh_token:
                raise ShopError(Code.UNAUTHENTICATED, "not logged in (no refresh token)")
            r = self._call("RefreshToken",
                           _user.RefreshTokenRequest(refresh_token=self.refresh_token),
                           _user.RefreshTokenResponse)
            self._set(r.tokens, r.user_id, r.role)
            self.refreshes += 1
            return r

    def logout(self, all_sessions: bool = False) -> None:
        """Revokes the refresh token (or every one of the user's) and
        forgets the tokens."""
        with self._lock:
            if self.refresh_token:
                self._call("Logout", _user.LogoutRequest(refresh_token=self.refresh_token,
                                                          all_sessions=all_sessions),
                           _user.LogoutResponse)
            self.access_token = self.refresh_token = ""
            self.access_expires_at = 0.0

    # ---- Credentials -------------------------------------------------------

    def token(self) -> Optional[str]:
        with self._lock:
            if not self.access_token:
                return None
            near = (self.access_expires_at
                    and self.access_expires_at - time.time() <= self.refresh_margin)
            if near and self.refresh_token:
                self.refresh()
            return self.access_token

    def refresh_after_unauthenticated(self) -> bool:
        with self._lock:
            if not self.refresh_token:
                return False
            self.refresh()
            return True
