"""Users, service accounts and their API tokens.

A token is ``slw_`` followed by 43 random URL-safe characters (256 bits). It is shown once, when
issued; the database keeps only its sha256 and a short prefix to recognise it in listings. Tokens
can expire and be revoked; disabling a user stops all of their tokens. Every change is an event
and an audit record, none of which contains a token or its hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from slipway.errors import InvalidInput, LastAdmin, NotFound, Unauthenticated, VersionConflict
from slipway.governance.roles import Principal, Role
from slipway.governance.sessions import event, now, reading, writing
from slipway.registry.db import TokenRow, UserRow
from slipway.registry.names import MAX_ID, check_name
from slipway.registry.store import SqlStore

TOKEN_PREFIX = "slw_"
_PREFIX_CHARS = len(TOKEN_PREFIX) + 8
KINDS = ("user", "service")
MAX_TOKEN_LIFETIME = dt.timedelta(days=36525)  # 100 years; expiry stays a real date


class UserRecord(msgspec.Struct, frozen=True):
    name: str
    kind: str
    role: str
    disabled: bool
    created_at: dt.datetime
    created_by: str | None


class TokenRecord(msgspec.Struct, frozen=True):
    """A token as listings show it: never the secret, only its first characters."""

    id: int
    user: str
    prefix: str
    description: str
    created_at: dt.datetime
    created_by: str | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class IssuedToken(msgspec.Struct, frozen=True):
    """A freshly issued token: ``token`` is the secret, shown this once."""

    token: str
    record: TokenRecord


def token_hash(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(authorization: bytes | str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value, or Unauthenticated."""
    if authorization is None:
        raise Unauthenticated()
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header is not 'Bearer <token>'")
    return token


# -- users -------------------------------------------------------------------------------------


def create_user(
    store: SqlStore, name: str, role: Role | str, *, kind: str = "user", actor: str | None
) -> UserRecord:
    """Add a user (a person) or a service account. VersionConflict when the name is taken."""
    check_name("user", name)
    role = Role.parse(str(role))
    if kind not in KINDS:
        raise InvalidInput(f"unknown account kind {kind!r}; use 'user' or 'service'")
    try:
        with writing(store) as session:
            row = UserRow(
                name=name,
                kind=kind,
                role=str(role),
                disabled=False,
                created_at=now(store),
                created_by=actor,
            )
            session.add(row)
            session.flush()
            record = _user_record(row)
            event(
                session, store, "user.created", f"user:{name}", actor, msgspec.to_builtins(record)
            )
            return record
    except IntegrityError:
        raise VersionConflict(f"user {name!r} already exists; see `slipway users list`") from None


def list_users(store: SqlStore) -> list[UserRecord]:
    with reading(store) as session:
        return [_user_record(r) for r in session.scalars(select(UserRow).order_by(UserRow.name))]


def get_user(store: SqlStore, name: str) -> UserRecord:
    with reading(store) as session:
        return _user_record(_user_row(session, name))


def update_user(
    store: SqlStore,
    name: str,
    *,
    role: Role | str | None = None,
    disabled: bool | None = None,
    actor: str | None,
) -> UserRecord:
    """Change a user's role, or disable (or re-enable) them; a disabled user's tokens stop.

    LastAdmin when the change would leave no enabled admin: nobody could manage users and tokens
    with a token any more.
    """
    new_role = None if role is None else str(Role.parse(str(role)))
    with writing(store) as session:
        # The enabled admins are locked before the user, in one order, so that two admins
        # demoting each other at once on PostgreSQL neither both succeed nor deadlock.
        removing = disabled is True or new_role not in (None, str(Role.ADMIN))
        admins = _enabled_admin_ids(session, lock=removing)
        row = _user_row(session, name, lock=True)
        before = _user_record(row)
        if new_role is not None:
            row.role = new_role
        if disabled is not None:
            row.disabled = disabled
        after = _user_record(row)
        if after == before:
            return before
        if admins == [row.id] and not _is_enabled_admin(after):
            raise LastAdmin(name)
        event(
            session,
            store,
            "user.updated",
            f"user:{name}",
            actor,
            {"before": msgspec.to_builtins(before), "after": msgspec.to_builtins(after)},
        )
        return after


# -- tokens ------------------------------------------------------------------------------------


def issue_token(
    store: SqlStore,
    user: str,
    *,
    description: str = "",
    expires_in: dt.timedelta | None = None,
    actor: str | None,
) -> IssuedToken:
    """A new token for ``user``; the secret is in the result and nowhere else."""
    if expires_in is not None and expires_in <= dt.timedelta(0):
        raise InvalidInput("a token's lifetime must be positive")
    if expires_in is not None and expires_in > MAX_TOKEN_LIFETIME:
        raise InvalidInput("a token's lifetime is at most 100 years (36525d)")
    if len(description) > 200:
        raise InvalidInput("a token description is at most 200 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with writing(store) as session:
        user_row = _user_row(session, user)
        if user_row.disabled:
            raise InvalidInput(f"user {user!r} is disabled; enable them before issuing tokens")
        created = now(store)
        row = TokenRow(
            user_id=user_row.id,
            hash=token_hash(token),
            prefix=token[:_PREFIX_CHARS],
            description=description,
            created_at=created,
            created_by=actor,
            expires_at=None if expires_in is None else created + expires_in,
            revoked_at=None,
        )
        session.add(row)
        session.flush()
        record = _token_record(row, user)
        event(session, store, "token.issued", f"user:{user}", actor, msgspec.to_builtins(record))
        return IssuedToken(token=token, record=record)


def list_tokens(store: SqlStore, user: str | None = None) -> list[TokenRecord]:
    """Every token (of ``user``: NotFound when there is no such user), oldest first."""
    query = select(TokenRow, UserRow.name).join(UserRow, UserRow.id == TokenRow.user_id)
    if user is not None:
        query = query.where(UserRow.name == user)
    with reading(store) as session:
        if user is not None:
            _user_row(session, user)
        return [_token_record(t, name) for t, name in session.execute(query.order_by(TokenRow.id))]


def revoke_token(store: SqlStore, token_id: int, *, actor: str | None) -> TokenRecord:
    """Revoke a token by id (see ``list_tokens``); revoking twice changes nothing."""
    missing = NotFound(f"token {token_id} not found; see `slipway tokens list`")
    if not 1 <= token_id <= MAX_ID:  # no row has such an id; the database would overflow
        raise missing
    with writing(store) as session:
        found = session.execute(
            select(TokenRow, UserRow.name)
            .join(UserRow, UserRow.id == TokenRow.user_id)
            .where(TokenRow.id == token_id)
            .with_for_update(of=TokenRow)
        ).one_or_none()
        if found is None:
            raise missing
        row, user = found
        if row.revoked_at is None:
            row.revoked_at = now(store)
            record = _token_record(row, user)
            event(
                session, store, "token.revoked", f"user:{user}", actor, msgspec.to_builtins(record)
            )
        return _token_record(row, user)


def bootstrap_admin(store: SqlStore, name: str = "admin") -> IssuedToken | None:
    """A new admin and their token when no enabled admin exists (a new registry, or one whose
    admins were all disabled or demoted); otherwise None.

    No account is enabled or promoted again, since its old tokens would work again: the new
    admin takes the first free name of ``name``, ``name-2``, ``name-3``...
    """
    with reading(store) as session:
        if _enabled_admin_ids(session):
            return None
        taken = set(session.scalars(select(UserRow.name)))
    fresh = next(
        n for n in (name, *(f"{name}-{i}" for i in range(2, len(taken) + 2))) if n not in taken
    )
    actor = "slipway init"
    create_user(store, fresh, Role.ADMIN, actor=actor)
    return issue_token(store, fresh, description="created by slipway init", actor=actor)


# -- authentication ----------------------------------------------------------------------------


def authenticate(store: SqlStore, authorization: bytes | str | None) -> Principal:
    """The principal of a token, read from the database (the CLI's path; servers use
    TokenCache). Unauthenticated for a missing, unknown, revoked or expired token."""
    digest = token_hash(bearer(authorization))
    found = active_principals(store, digest).get(digest)
    if found is None:
        raise Unauthenticated("the token is unknown, revoked or expired")
    return found[0]


def active_principals(
    store: SqlStore, digest: str | None = None
) -> dict[str, tuple[Principal, dt.datetime | None]]:
    """``token hash -> (principal, expires_at)`` of every usable token (or just ``digest``)."""
    query = (
        select(
            TokenRow.hash,
            TokenRow.id,
            TokenRow.expires_at,
            UserRow.name,
            UserRow.kind,
            UserRow.role,
        )
        .join(UserRow, UserRow.id == TokenRow.user_id)
        .where(TokenRow.revoked_at.is_(None), UserRow.disabled.is_(False))
    )
    if digest is not None:
        query = query.where(TokenRow.hash == digest)
    moment = now(store)
    result = {}
    with reading(store) as session:
        for digest_, token_id, expires_at, name, kind, role in session.execute(query):
            if expires_at is not None and expires_at <= moment:
                continue
            result[digest_] = (Principal(name, Role.parse(role), kind, token_id), expires_at)
    return result


_Entry = tuple[Principal, "dt.datetime | None"]


class TokenCache:
    """Every usable token's principal, in memory: authenticating a request costs a dict lookup
    of the header value (a sha256 the first time a header value is seen), never a database round
    trip.

    ``refresh`` reloads it; the server calls it every few seconds and right after a change it
    made itself, so a token revoked through another replica stops within one refresh interval.
    A token the cache has not seen yet can be looked up once with ``load`` (the management API
    does, off the event loop); unknown tokens are remembered until the next refresh, so they
    cannot turn every request into a query. Expiry is checked on every request.
    """

    _MAX_ENTRIES = 10_000

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._misses: set[str] = set()
        # (token hash -> entry, Authorization header value -> entry), swapped as one on refresh
        # so a request in flight never caches an entry of the old table into the new one.
        self._cache: tuple[dict[str, _Entry], dict[bytes | str, _Entry]] = ({}, {})

    def refresh(self) -> None:
        self._cache = (active_principals(self._store), {})
        self._misses = set()

    def load(self, authorization: bytes | str | None) -> None:
        """Look one token up in the database after a miss (blocking; a no-op for a token that
        missed since the last refresh)."""
        digest = token_hash(bearer(authorization))
        principals = self._cache[0]
        if digest in principals or digest in self._misses:
            return
        found = active_principals(self._store, digest)
        if found:
            principals.update(found)
        elif len(self._misses) < self._MAX_ENTRIES:
            self._misses.add(digest)

    def authenticate(self, authorization: bytes | str | None) -> Principal:
        principals, seen = self._cache
        found = seen.get(authorization) if authorization is not None else None
        if found is None:
            found = principals.get(token_hash(bearer(authorization)))
            if found is None:
                raise Unauthenticated("the token is unknown, revoked or expired")
            if authorization is not None and len(seen) < self._MAX_ENTRIES:
                seen[authorization] = found
        principal, expires_at = found
        if expires_at is not None and expires_at <= now(self._store):
            raise Unauthenticated("the token expired")
        return principal


# -- rows --------------------------------------------------------------------------------------


def _user_row(session: Session, name: str, *, lock: bool = False) -> UserRow:
    check_name("user", name)
    query = select(UserRow).where(UserRow.name == name)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"user {name!r} not found; see `slipway users list`")
    return row


def _enabled_admin_ids(session: Session, *, lock: bool = False) -> list[int]:
    query = (
        select(UserRow.id)
        .where(UserRow.role == str(Role.ADMIN), UserRow.disabled.is_(False))
        .order_by(UserRow.id)
    )
    return list(session.scalars(query.with_for_update() if lock else query))


def _is_enabled_admin(user: UserRecord) -> bool:
    return user.role == str(Role.ADMIN) and not user.disabled


def _user_record(row: UserRow) -> UserRecord:
    return UserRecord(
        name=row.name,
        kind=row.kind,
        role=row.role,
        disabled=row.disabled,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _token_record(row: TokenRow, user: str) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        user=user,
        prefix=row.prefix,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
