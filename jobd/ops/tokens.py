"""Bearer tokens of the HTTP API: create, list, revoke, authenticate.

A token reads `jobd_<key id>_<secret>`. The key id (48 random bits, public)
finds the row; the secret (256 random bits) is kept only as its SHA-256 and
compared in constant time. A plain hash suffices: the secret is random, not a
password, so there is nothing to guess that a slow hash would protect. The
store never sees the token; the audit names it by its name only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobd.core.timeutil import from_db, to_db
from jobd.errors import NotFound, UsageError
from jobd.ops.scope import Scope

PREFIX = "jobd_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_TOKEN = re.compile(r"jobd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Token:
    name: str
    group: str | None  # sees and acts on this group's jobs only; None: every job
    read_only: bool
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    expired: bool = False


@dataclass(frozen=True)
class Created:
    token: Token
    secret: str  # the whole bearer token: shown once, never stored


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: dict[str, Any], now: datetime) -> Token:
    expires = from_db(row["expires_at"])
    return Token(
        name=row["name"],
        group=row["group_name"],
        read_only=bool(row["read_only"]),
        created_at=from_db(row["created_at"]),  # type: ignore[arg-type]
        created_by=row["created_by"],
        expires_at=expires,
        expired=expires is not None and expires <= now,
    )


def create_token(
    scope: Scope,
    actor: str,
    name: str,
    group: str | None = None,
    read_only: bool = False,
    expires_in: float | None = None,
) -> Created:
    """Make a token and return it with its secret, which exists nowhere else after."""
    if not NAME.fullmatch(name):
        raise UsageError(
            f"invalid token name {name!r}: letters, digits and _.@- (at most 128 characters)"
        )
    if group is not None and not NAME.fullmatch(group):
        raise UsageError(f"invalid group name {group!r}")
    store = scope.store
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 256 bits
    now = store.now()
    expires = now + timedelta(seconds=expires_in) if expires_in else None
    with store.atomic():
        if store.token(name) is not None:
            raise UsageError(f"token {name!r} already exists (revoke it first: jobd token revoke)")
        store.add_token(
            {
                "name": name,
                "key_id": key_id,
                "secret_hash": _digest(secret),
                "group_name": group,
                "read_only": read_only,
                "created_at": to_db(now),
                "created_by": actor,
                "expires_at": to_db(expires),
            }
        )
    detail: dict[str, object] = {"read_only": read_only}
    if group:
        detail["group"] = group
    if expires:
        detail["expires_at"] = expires.isoformat()
    store.audit("token.create", actor, name, detail)
    token = Token(name, group, read_only, now, actor, expires)
    return Created(token, f"{PREFIX}{key_id}_{secret}")


def list_tokens(scope: Scope) -> list[Token]:
    store = scope.store
    now = store.now()
    return [_token(row, now) for row in store.tokens()]


def revoke_token(scope: Scope, actor: str, name: str) -> None:
    """Delete the token: the next request that bears it is refused."""
    store = scope.store
    if not store.delete_token(name):
        raise NotFound(f"unknown token {name!r} (see `jobd token list`)")
    store.audit("token.revoke", actor, name)


def authenticate(scope: Scope, bearer: str) -> Token | None:
    """The live token that `bearer` is, or None: malformed, unknown, wrong, or expired."""
    match = _TOKEN.fullmatch(bearer or "")
    if match is None:
        return None
    key_id, secret = match.groups()
    store = scope.store
    row = store.token(key_id=key_id)
    if row is None or not hmac.compare_digest(row["secret_hash"], _digest(secret)):
        return None
    token = _token(row, store.now())
    return None if token.expired else token
