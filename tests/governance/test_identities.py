"""Users, roles and tokens: random, shown once, stored as hashes, expiring, revocable."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import update

from slipway.errors import InvalidInput, InvalidName, LastAdmin, Unauthenticated, VersionConflict
from slipway.governance import audit
from slipway.governance.identities import (
    TokenCache,
    authenticate,
    bootstrap_admin,
    create_user,
    get_user,
    issue_token,
    list_tokens,
    list_users,
    revoke_token,
    token_hash,
    update_user,
)
from slipway.governance.roles import Principal, Role
from slipway.registry.db import UserRow
from slipway.registry.store import SqlStore


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clocked(store_url: str) -> tuple[SqlStore, Clock]:
    clock = Clock()
    with SqlStore(store_url, clock=clock) as store:
        yield store, clock


def test_roles_form_a_ladder() -> None:
    assert Role.VIEWER < Role.DEPLOYER < Role.APPROVER < Role.ADMIN
    assert Role.parse("Approver") is Role.APPROVER and str(Role.ADMIN) == "admin"
    with pytest.raises(InvalidInput, match="unknown role"):
        Role.parse("root")
    deployer = Principal("dora", Role.DEPLOYER)
    assert deployer.require(Role.VIEWER) is deployer
    with pytest.raises(Exception, match="needs role approver"):
        deployer.require(Role.APPROVER)


def test_tokens_are_random_shown_once_and_stored_as_hashes(store: SqlStore) -> None:
    create_user(store, "dora", "deployer", actor="admin")
    first = issue_token(store, "dora", description="laptop", actor="admin")
    second = issue_token(store, "dora", actor="admin")
    assert first.token != second.token and first.token.startswith("slw_")
    assert len(first.token) == 47  # slw_ + 43 characters: 256 random bits
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT hash, prefix FROM tokens ORDER BY id").all()
    assert stored[0] == (token_hash(first.token), first.token[:12])
    everything = " ".join(str(r) for r in audit.query(store, limit=None)) + str(
        store.events(limit=100)
    )
    assert first.token not in everything and token_hash(first.token) not in everything
    assert authenticate(store, f"Bearer {first.token}") == Principal(
        "dora", Role.DEPLOYER, "user", first.record.id
    )
    assert [t.description for t in list_tokens(store, "dora")] == ["laptop", ""]


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "bearer slw_nope", b"Bearer \xff"]
)
def test_malformed_or_unknown_credentials(store: SqlStore, header) -> None:
    with pytest.raises(Unauthenticated):
        authenticate(store, header)


def test_expiry_revocation_and_disabling(clocked) -> None:
    store, clock = clocked
    create_user(store, "dora", "deployer", actor="admin")
    short = issue_token(store, "dora", expires_in=dt.timedelta(hours=1), actor="admin")
    other = issue_token(store, "dora", actor="admin")
    cache = TokenCache(store)
    cache.refresh()
    assert cache.authenticate(f"Bearer {short.token}").name == "dora"
    clock.now += dt.timedelta(hours=2)
    with pytest.raises(Unauthenticated, match="expired"):
        cache.authenticate(f"Bearer {short.token}")
    with pytest.raises(Unauthenticated):
        authenticate(store, f"Bearer {short.token}")
    revoke_token(store, other.record.id, actor="admin")
    assert cache.authenticate(f"Bearer {other.token}").name == "dora"  # until the refresh
    cache.refresh()
    with pytest.raises(Unauthenticated):
        cache.authenticate(f"Bearer {other.token}")
    third = issue_token(store, "dora", actor="admin")
    update_user(store, "dora", disabled=True, actor="admin")
    with pytest.raises(Unauthenticated):
        authenticate(store, f"Bearer {third.token}")
    with pytest.raises(InvalidInput, match="disabled"):
        issue_token(store, "dora", actor="admin")
    update_user(store, "dora", disabled=False, role="approver", actor="admin")
    assert authenticate(store, f"Bearer {third.token}").role == Role.APPROVER


def test_the_cache_looks_a_new_token_up_once(store: SqlStore) -> None:
    create_user(store, "dora", "deployer", actor="admin")
    cache = TokenCache(store)
    cache.refresh()
    issued = issue_token(store, "dora", actor="admin")  # after the cache was loaded
    header = f"Bearer {issued.token}"
    with pytest.raises(Unauthenticated):
        cache.authenticate(header)
    cache.load(header)
    assert cache.authenticate(header).name == "dora"
    cache.load("Bearer slw_unknown")
    cache.load("Bearer slw_unknown")  # remembered as a miss: no second query
    assert len(cache._misses) == 1


def test_bootstrap_makes_the_first_admin_once(store: SqlStore) -> None:
    issued = bootstrap_admin(store)
    assert issued is not None and issued.record.user == "admin"
    assert authenticate(store, f"Bearer {issued.token}").role == Role.ADMIN
    assert bootstrap_admin(store) is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"disabled": True}, id="disable"),
        pytest.param({"role": "approver"}, id="demote"),
        pytest.param({"role": "viewer", "disabled": True}, id="both"),
    ],
)
def test_the_last_enabled_admin_can_be_neither_disabled_nor_demoted(
    store: SqlStore, change: dict
) -> None:
    create_user(store, "ada", "admin", actor="local:ops")
    events = len(store.events(limit=None))
    with pytest.raises(LastAdmin, match="no enabled admin"):
        update_user(store, "ada", actor="ada", **change)
    assert get_user(store, "ada").role == "admin" and not get_user(store, "ada").disabled
    assert len(store.events(limit=None)) == events  # refused: nothing recorded

    create_user(store, "bob", "admin", actor="ada")
    update_user(store, "bob", disabled=True, actor="ada")  # ada is still an enabled admin
    with pytest.raises(LastAdmin):  # a disabled admin does not count
        update_user(store, "ada", actor="ada", **change)
    create_user(store, "ops-bot", "admin", kind="service", actor="ada")
    update_user(store, "ada", actor="ada", **change)  # the service account is an enabled admin
    with pytest.raises(LastAdmin):
        update_user(store, "ops-bot", actor="ada", **change)
    update_user(store, "bob", disabled=False, actor="ops-bot")  # re-enabling is always allowed
    update_user(store, "ops-bot", actor="bob", **change)


def test_two_admins_disabling_each_other_at_once_leave_one(store: SqlStore) -> None:
    for round in range(10):
        ada, bob = f"ada{round}", f"bob{round}"
        for name in (ada, bob):
            create_user(store, name, "admin", actor="local:ops")
        for other in list_users(store):
            if other.name not in (ada, bob) and not other.disabled:
                update_user(store, other.name, disabled=True, actor="local:ops")
        start = threading.Barrier(2)

        def disable(name: str, actor: str, start: threading.Barrier = start) -> str:
            start.wait()
            try:
                update_user(store, name, disabled=True, actor=actor)
            except LastAdmin:
                return "refused"
            return "disabled"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(disable, (ada, bob), (bob, ada)))
        assert outcomes == ["disabled", "refused"]
        assert [u.name for u in list_users(store) if not u.disabled] in ([ada], [bob])


def test_the_api_refuses_to_leave_no_enabled_admin(client) -> None:
    admin = client("admin")
    for body in ({"disabled": True}, {"role": "viewer"}):
        refused = admin.patch("/api/users/admin", json=body)
        assert refused.status_code == 409, refused.text
        assert "no enabled admin" in refused.json()["error"]
    assert admin.get("/api/whoami").json()["role"] == "admin"  # still in charge
    assert admin.post("/api/users", json={"name": "ada", "role": "admin"}).status_code == 201
    demoted = admin.patch("/api/users/admin", json={"role": "viewer"})
    assert demoted.status_code == 200 and demoted.json()["role"] == "viewer"


def _disable_directly(store: SqlStore, *names: str) -> None:
    """What a registry of an older release, or an edit in the database, can hold: no enabled
    admin (update_user refuses to get there)."""
    with store.engine.begin() as conn:
        conn.execute(update(UserRow).where(UserRow.name.in_(names)).values(disabled=True))


def test_bootstrap_recovers_a_registry_without_an_enabled_admin(store: SqlStore) -> None:
    first = bootstrap_admin(store)
    assert first is not None
    create_user(store, "ada", "admin", actor="admin")
    _disable_directly(store, "admin", "ada")
    issued = bootstrap_admin(store)
    assert issued is not None and issued.record.user == "admin-2"  # a fresh account
    assert authenticate(store, f"Bearer {issued.token}") == Principal(
        "admin-2", Role.ADMIN, "user", issued.record.id
    )
    with pytest.raises(Unauthenticated):  # the disabled admin and their tokens stay off
        authenticate(store, f"Bearer {first.token}")
    assert get_user(store, "admin").disabled and get_user(store, "ada").disabled
    recorded = [
        (r.action, r.actor, r.subject) for r in audit.query(store, kind="control", limit=None)
    ][-2:]
    assert recorded == [
        ("user.created", "slipway init", "user:admin-2"),
        ("token.issued", "slipway init", "user:admin-2"),
    ]
    assert bootstrap_admin(store) is None  # an enabled admin again


def test_names_and_duplicates(store: SqlStore) -> None:
    create_user(store, "ci-bot", "deployer", kind="service", actor="admin")
    with pytest.raises(VersionConflict, match="already exists"):
        create_user(store, "ci-bot", "viewer", actor="admin")
    for bad in ("../x", "a b", "$(id)", "x;y", ""):
        with pytest.raises(InvalidName):
            create_user(store, bad, "viewer", actor="admin")
    with pytest.raises(InvalidInput, match="kind"):
        create_user(store, "robot", "viewer", kind="robot", actor="admin")
