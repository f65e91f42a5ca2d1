"""The registry's SQL store: models, versions, deployments and their event history.

:class:`SqlStore` is the only way in. It takes a database URL (SQLite by default, PostgreSQL for
teams), migrates the schema on open, runs every write as one transaction that also appends an
event, and returns the plain records of :mod:`slipway.registry.records`, never ORM objects.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from slipway.errors import (
    DeploymentNotFound,
    InvalidInput,
    ModelNotFound,
    VersionConflict,
    VersionNotFound,
)
from slipway.registry.audit import record_event
from slipway.registry.db import (
    WRITE_OPTION,
    DeploymentRow,
    EventRow,
    ModelRow,
    VersionRow,
    make_engine,
)
from slipway.registry.migrations import migrate
from slipway.registry.names import check_name, check_version
from slipway.registry.promotions import require_approval
from slipway.registry.records import (
    BatchingConfig,
    DeploymentRecord,
    EventRecord,
    InferencePolicy,
    ModelRecord,
    NewVersion,
    Profile,
    Signature,
    TrafficPolicy,
    VersionMeta,
    VersionRecord,
)

_REGISTER_ATTEMPTS = 5
_HEX = frozenset("0123456789abcdef")


def utc_now() -> dt.datetime:
    """The current time as a timezone-aware UTC datetime (the store's default clock)."""
    return dt.datetime.now(dt.UTC)


class SqlStore:
    """Models, versions and deployments in a SQL database.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/registry.db`` (the parent directory is created)
    or ``postgresql+psycopg://user@host/db`` (plain ``postgresql://`` means psycopg too). The
    schema is migrated to the newest revision on open. ``clock`` returns the aware UTC time
    stamped on rows and events; tests pass their own.

    Safe to share between threads, and between processes and machines on PostgreSQL: version
    numbers are allocated under a row lock (PostgreSQL) or a write transaction (SQLite), so they
    stay unique and increasing per model under concurrent registration.
    """

    def __init__(self, url: str, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.clock = clock
        self.engine = make_engine(url)
        # Same pool; only marks transactions as writes (BEGIN IMMEDIATE on SQLite).
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        try:
            migrate(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection. The store must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- models and versions -------------------------------------------------------------------

    def register_version(
        self,
        model: str,
        *,
        format: str,
        digest: str,
        size: int,
        signature: Signature,
        meta: VersionMeta = VersionMeta(),
        profile: Profile | None = None,
        actor: str | None = None,
        model_description: str = "",
        number: int | None = None,
    ) -> VersionRecord:
        """Record a new version of ``model`` (created if missing, with ``model_description``) and
        return it with its number: one more than the model's newest version.

        ``number`` asks for that exact number instead (a bundle brought into another registry
        keeps its version number); VersionConflict when it is taken.
        The artifact must already be in the artifact store under ``digest``.
        """
        new = NewVersion(
            model=model,
            format=format,
            digest=digest,
            size=size,
            signature=signature,
            meta=meta,
            profile=profile,
            model_description=model_description,
            number=number,
        )
        (record,) = self.register_versions([new], actor=actor)
        return record

    def register_versions(
        self, versions: Sequence[NewVersion], *, actor: str | None = None
    ) -> list[VersionRecord]:
        """Record several versions, in order, in one transaction: all of them or none (an
        import of many versions that fails part-way leaves nothing to renumber). Each is
        numbered as :meth:`register_version` numbers one."""
        checked = [(new, *_check_new_version(new)) for new in versions]
        if not checked:
            return []
        # Models are locked in one order, so two batches over the same models cannot deadlock.
        descriptions: dict[str, str] = {}
        for new in versions:
            descriptions.setdefault(new.model, new.model_description)
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                with self._write() as session:
                    now = self._now()
                    model_ids = {
                        model: self._lock_model(
                            session, model, create=(descriptions[model], now)
                        ).id
                        for model in sorted(descriptions)
                    }
                    return [
                        self._add_version(session, model_ids[new.model], new, jsons, now, actor)
                        for new, *jsons in checked
                    ]
            except IntegrityError:
                # Safety net only: the model lock / write transaction should make this
                # unreachable (a number asked for is checked before its insert, and a race on
                # it is found taken on the next attempt).
                if attempt == _REGISTER_ATTEMPTS - 1:
                    models = ", ".join(repr(m) for m in sorted(descriptions))
                    raise VersionConflict(
                        f"could not allocate a version number for model {models} after"
                        f" {_REGISTER_ATTEMPTS} attempts; retry the registration"
                    ) from None
        raise AssertionError("unreachable")

    def _add_version(
        self,
        session: Session,
        model_id: int,
        new: NewVersion,
        jsons: list[dict[str, Any] | None],
        now: dt.datetime,
        actor: str | None,
    ) -> VersionRecord:
        signature_json, meta_json, profile_json = jsons
        if new.number is None:
            latest = session.scalar(
                select(func.max(VersionRow.number)).where(VersionRow.model_id == model_id)
            )
            number = (latest or 0) + 1
        else:
            taken = session.scalar(
                select(VersionRow.id).where(
                    VersionRow.model_id == model_id, VersionRow.number == new.number
                )
            )
            if taken is not None:
                raise VersionConflict(f"{new.model}@{new.number} is already registered")
            number = new.number
        version = VersionRow(
            model_id=model_id,
            number=number,
            format=new.format,
            digest=new.digest,
            size=new.size,
            signature=signature_json,
            meta=meta_json,
            profile=profile_json,
            created_at=now,
            created_by=actor,
        )
        session.add(version)
        session.flush()
        record = _version_record(new.model, version)
        self._event(
            session,
            "version.registered",
            record.ref,
            actor,
            {
                "model": new.model,
                "number": record.number,
                "format": new.format,
                "digest": new.digest,
                "size": new.size,
            },
        )
        return record

    def get_model(self, name: str) -> ModelRecord:
        """The model called ``name``, with its latest version number. Raises ModelNotFound."""
        check_name("model", name)
        with self._read() as session:
            row = session.execute(_models_query().where(ModelRow.name == name)).one_or_none()
            if row is None:
                raise ModelNotFound(name)
            return _model_record(row[0], row[1])

    def list_models(self) -> list[ModelRecord]:
        """Every model, by name, each with its latest version number."""
        with self._read() as session:
            rows = session.execute(_models_query().order_by(ModelRow.name)).all()
            return [_model_record(model, latest) for model, latest in rows]

    def get_version(self, model: str, number: int | None = None) -> VersionRecord:
        """Version ``number`` of ``model``, or its latest when ``number`` is None.

        Raises ModelNotFound or VersionNotFound.
        """
        check_name("model", model)
        if number is not None:
            check_version(number)
        with self._read() as session:
            model_id = self._model_id(session, model)
            query = select(VersionRow).where(VersionRow.model_id == model_id)
            if number is None:
                query = query.order_by(VersionRow.number.desc()).limit(1)
            else:
                query = query.where(VersionRow.number == number)
            row = session.scalars(query).one_or_none()
            if row is None:
                raise VersionNotFound(model, "latest" if number is None else number)
            return _version_record(model, row)

    def list_versions(self, model: str) -> list[VersionRecord]:
        """Every version of ``model``, oldest first. Raises ModelNotFound."""
        check_name("model", model)
        with self._read() as session:
            model_id = self._model_id(session, model)
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model_id)
                .order_by(VersionRow.number)
            ).all()
            return [_version_record(model, row) for row in rows]

    # -- deployments ---------------------------------------------------------------------------

    def create_deployment(
        self,
        name: str,
        model: str,
        version: int,
        *,
        batching: BatchingConfig = BatchingConfig(),
        actor: str | None = None,
    ) -> DeploymentRecord:
        """Create deployment ``name`` serving ``model@version``.

        Raises VersionConflict when the name is taken, ModelNotFound or VersionNotFound when the
        version does not exist.
        """
        check_name("deployment", name)
        check_name("model", model)
        check_version(version)
        batching_json = _check_batching(batching)
        try:
            with self._write() as session:
                now = self._now()
                model_id = self._model_id(session, model)
                self._require_version(session, model, model_id, version)
                if session.scalar(select(DeploymentRow.id).where(DeploymentRow.name == name)):
                    raise _deployment_exists(name)
                row = DeploymentRow(
                    name=name,
                    model_id=model_id,
                    version=version,
                    previous_version=None,
                    batching=batching_json,
                    generation=self._next_generation(session, name),
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
                record = _deployment_record(row, model)
                self._event(
                    session,
                    "deployment.created",
                    _deployment_subject(name),
                    actor,
                    {"after": msgspec.to_builtins(record)},
                )
                return record
        except IntegrityError:
            # Two creators raced past the existence check; the unique index picked one.
            raise _deployment_exists(name) from None

    def set_deployment_version(
        self,
        name: str,
        version: int,
        *,
        batching: BatchingConfig | None = None,
        actor: str | None = None,
    ) -> DeploymentRecord:
        """Point deployment ``name`` at ``version`` of its model.

        The version it served becomes ``previous_version`` (kept warm for rollback) and
        ``generation`` increases. Setting the version it already serves changes nothing. On a
        production deployment this is a promotion: ApprovalRequired unless an approved promotion
        request is bound to the version's digest, or it is a rollback to the previous version
        (see registry/promotions.py). While a rollout is active only its candidate may be set
        (VersionConflict otherwise): the rollout promotes, aborts or rolls back itself.

        ``batching``, when given, is set in the same transaction: both changes happen, or
        neither (an invalid batching is refused before anything changes).
        """
        check_name("deployment", name)
        batching_json = None if batching is None else _check_batching(batching)
        with self._write() as session:
            row, _ = self._lock_deployment(session, name)
            if row.version != version:
                _refuse_during_rollout(row, version, f"pointing it at version {version}")
            record = self.switch_version(session, name, version, actor=actor)
            if batching_json is None or batching == record.batching:
                return record
            row, model = self._lock_deployment(session, name)
            row.batching = batching_json
            return self._deployment_changed(
                session, row, model, record, "deployment.updated", actor
            )

    def switch_version(
        self, session: Session, name: str, version: int, *, actor: str | None = None
    ) -> DeploymentRecord:
        """``set_deployment_version`` inside the caller's transaction, so that a rollout's end
        and its version change commit together (no one sees the one without the other)."""
        check_name("deployment", name)
        check_version(version)
        row, model = self._lock_deployment(session, name)
        if row.version == version:
            return _deployment_record(row, model)
        self._require_version(session, model, row.model_id, version)
        if row.production:
            require_approval(session, row, model, version, self._now())
        before = _deployment_record(row, model)
        row.previous_version = row.version
        row.version = version
        return self._deployment_changed(
            session, row, model, before, "deployment.version_changed", actor
        )

    def update_deployment(
        self,
        name: str,
        *,
        batching: BatchingConfig | None = None,
        production: bool | None = None,
        inference: InferencePolicy | None = None,
        actor: str | None = None,
    ) -> DeploymentRecord:
        """Change deployment settings other than its version; None leaves a setting as it is.

        Turning ``production`` on promotes the version the deployment serves, so it needs an
        approved promotion request like any promotion (ApprovalRequired).
        """
        check_name("deployment", name)
        batching_json = None if batching is None else _check_batching(batching)
        inference_json = None if inference is None else _check_inference(inference)
        with self._write() as session:
            row, model = self._lock_deployment(session, name)
            before = _deployment_record(row, model)
            changed = False
            if batching_json is not None and batching != before.batching:
                row.batching, changed = batching_json, True
            if inference_json is not None and inference != before.inference:
                row.inference, changed = inference_json, True
            if production is not None and production != row.production:
                if production:
                    require_approval(
                        session, row, model, row.version, self._now(), rollback_ok=False
                    )
                row.production, changed = production, True
            if not changed:
                return before
            return self._deployment_changed(
                session, row, model, before, "deployment.updated", actor
            )

    def _deployment_changed(
        self,
        session: Session,
        row: DeploymentRow,
        model: str,
        before: DeploymentRecord,
        kind: str,
        actor: str | None,
    ) -> DeploymentRecord:
        """After a change to ``row``: a new generation (every replica reconciles to it) and the
        event with the record before and after."""
        row.generation += 1
        row.updated_at = self._now()
        session.flush()
        record = _deployment_record(row, model)
        self._event(
            session,
            kind,
            _deployment_subject(row.name),
            actor,
            {"before": msgspec.to_builtins(before), "after": msgspec.to_builtins(record)},
        )
        return record

    def get_deployment(self, name: str) -> DeploymentRecord:
        """Deployment ``name``. Raises DeploymentNotFound."""
        check_name("deployment", name)
        with self._read() as session:
            found = session.execute(
                select(DeploymentRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == DeploymentRow.model_id)
                .where(DeploymentRow.name == name)
            ).one_or_none()
            if found is None:
                raise DeploymentNotFound(name)
            return _deployment_record(found[0], found[1])

    def list_deployments(self) -> list[DeploymentRecord]:
        """Every deployment, by name."""
        with self._read() as session:
            rows = session.execute(
                select(DeploymentRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == DeploymentRow.model_id)
                .order_by(DeploymentRow.name)
            ).all()
            return [_deployment_record(row, model) for row, model in rows]

    def delete_deployment(self, name: str, *, actor: str | None = None) -> None:
        """Delete deployment ``name``. Raises DeploymentNotFound, and VersionConflict for a
        production deployment (else deleting and re-creating it would skip the approval)."""
        check_name("deployment", name)
        with self._write() as session:
            row, model = self._lock_deployment(session, name)
            if row.production:
                raise VersionConflict(
                    f"deployment {name!r} is production; an admin turns that off first"
                    f" (`slipway deployments policy {name} --no-production`)"
                )
            _refuse_during_rollout(row, None, "deleting it")
            before = _deployment_record(row, model)
            session.delete(row)
            self._event(
                session,
                "deployment.deleted",
                _deployment_subject(name),
                actor,
                {"before": msgspec.to_builtins(before)},
            )

    def deployments_state(self) -> tuple[tuple[str, int], ...]:
        """``(name, generation)`` of every deployment, by name: one cheap query that replicas
        poll, reloading the full deployments only when it changes."""
        with self._read() as session:
            rows = session.execute(
                select(DeploymentRow.name, DeploymentRow.generation).order_by(DeploymentRow.name)
            ).all()
            return tuple((name, generation) for name, generation in rows)

    def deployment_version_at(self, name: str, at: dt.datetime) -> int | None:
        """The stable version deployment ``name`` served at time ``at`` (None when it did not
        exist then), answered from the full change history in the event log."""
        check_name("deployment", name)
        kinds = ("deployment.created", "deployment.version_changed", "deployment.deleted")
        with self._read() as session:
            row = session.execute(
                select(EventRow.kind, EventRow.data)
                .where(
                    EventRow.subject == _deployment_subject(name),
                    EventRow.kind.in_(kinds),
                    EventRow.at <= at,
                )
                .order_by(EventRow.id.desc())
                .limit(1)
            ).one_or_none()
        if row is None or row.kind == "deployment.deleted":
            return None
        return int(row.data["after"]["version"])

    # -- events --------------------------------------------------------------------------------

    def events(
        self,
        subject: str | None = None,
        limit: int | None = 100,
        *,
        kinds: Sequence[str] | None = None,
    ) -> list[EventRecord]:
        """The newest ``limit`` events (all of them with None), newest first; only those about
        ``subject`` (e.g. ``"churn@3"``, ``"deployment:churn-prod"``) and only those of
        ``kinds`` (e.g. ``("deployment.created",)``) when given.

        Filter here rather than on the result: on a busy registry the newest ``limit`` events
        may hold none of the kind wanted."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidInput(f"limit must be a positive integer, got {limit!r}")
        query = select(EventRow).order_by(EventRow.id.desc())
        if limit is not None:
            query = query.limit(limit)
        if subject is not None:
            query = query.where(EventRow.subject == subject)
        if kinds is not None:
            query = query.where(EventRow.kind.in_(list(kinds)))
        with self._read() as session:
            return [
                EventRecord(
                    id=row.id,
                    at=row.at,
                    kind=row.kind,
                    subject=row.subject,
                    actor=row.actor,
                    data=row.data,
                )
                for row in session.scalars(query)
            ]

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        # One transaction per read, so multi-statement reads see one snapshot.
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def _now(self) -> dt.datetime:
        now = self.clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the store's clock must return timezone-aware datetimes")
        return now.astimezone(dt.UTC)

    def _event(
        self, session: Session, kind: str, subject: str, actor: str | None, data: dict[str, Any]
    ) -> None:
        # The events row and its hash-chained audit record commit together (registry/audit.py).
        record_event(session, at=self._now(), kind=kind, subject=subject, actor=actor, data=data)

    @staticmethod
    def _model_id(session: Session, model: str) -> int:
        model_id = session.scalar(select(ModelRow.id).where(ModelRow.name == model))
        if model_id is None:
            raise ModelNotFound(model)
        return model_id

    @staticmethod
    def _lock_model(session: Session, model: str, *, create: tuple[str, dt.datetime]) -> ModelRow:
        """Lock the model row (creating it if missing) so version numbers are handed out one
        at a time. On SQLite the write transaction already holds the database lock."""
        query = select(ModelRow).where(ModelRow.name == model).with_for_update()
        row = session.scalars(query).one_or_none()
        if row is not None:
            return row
        description, now = create
        # ON CONFLICT DO NOTHING: a concurrent first registration of the same model is not an
        # error; on PostgreSQL this waits for the other transaction, then the SELECT sees its row.
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(
            insert(ModelRow)
            .values(name=model, description=description, created_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return session.scalars(query.execution_options(populate_existing=True)).one()

    @staticmethod
    def _require_version(session: Session, model: str, model_id: int, number: int) -> None:
        found = session.scalar(
            select(VersionRow.id).where(
                VersionRow.model_id == model_id, VersionRow.number == number
            )
        )
        if found is None:
            raise VersionNotFound(model, number)

    @staticmethod
    def _lock_deployment(session: Session, name: str) -> tuple[DeploymentRow, str]:
        found = session.execute(
            select(DeploymentRow, ModelRow.name)
            .join(ModelRow, ModelRow.id == DeploymentRow.model_id)
            .where(DeploymentRow.name == name)
            .with_for_update(of=DeploymentRow)
        ).one_or_none()
        if found is None:
            raise DeploymentNotFound(name)
        return found[0], found[1]

    @staticmethod
    def _next_generation(session: Session, name: str) -> int:
        """Generation of a new deployment: one past the last generation any deployment of that
        name reached, so a delete and re-create between two polls still looks like a change."""
        data = session.scalar(
            select(EventRow.data)
            .where(
                EventRow.subject == _deployment_subject(name),
                EventRow.kind == "deployment.deleted",
            )
            .order_by(EventRow.id.desc())
            .limit(1)
        )
        try:
            return int(data["before"]["generation"]) + 1 if data else 1
        except (KeyError, TypeError, ValueError):
            return 1


# -- rows to records ---------------------------------------------------------------------------


def _models_query() -> Any:
    latest = (
        select(VersionRow.model_id, func.max(VersionRow.number).label("latest"))
        .group_by(VersionRow.model_id)
        .subquery()
    )
    return select(ModelRow, latest.c.latest).outerjoin(latest, latest.c.model_id == ModelRow.id)


def _model_record(row: ModelRow, latest: int | None) -> ModelRecord:
    return ModelRecord(
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        latest_version=latest,
    )


def _version_record(model: str, row: VersionRow) -> VersionRecord:
    return VersionRecord(
        model=model,
        number=row.number,
        format=row.format,
        digest=row.digest,
        size=row.size,
        signature=msgspec.convert(row.signature, Signature),
        meta=msgspec.convert(row.meta, VersionMeta),
        profile=None if row.profile is None else msgspec.convert(row.profile, Profile),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _deployment_record(row: DeploymentRow, model: str) -> DeploymentRecord:
    return DeploymentRecord(
        name=row.name,
        model=model,
        version=row.version,
        previous_version=row.previous_version,
        batching=msgspec.convert(row.batching, BatchingConfig),
        generation=row.generation,
        created_at=row.created_at,
        updated_at=row.updated_at,
        production=row.production,
        inference=msgspec.convert(row.inference or {}, InferencePolicy),
        traffic=None if row.traffic is None else msgspec.convert(row.traffic, TrafficPolicy),
    )


def _deployment_subject(name: str) -> str:
    return f"deployment:{name}"


def _refuse_during_rollout(row: DeploymentRow, version: int | None, change: str) -> None:
    """VersionConflict when a rollout's traffic split is on ``row`` and ``version`` is not its
    candidate: the rollout would go on judging, and its status showing, versions that no
    longer serve."""
    traffic = row.traffic
    if traffic is None:
        return
    candidate = traffic.get("candidate") or traffic.get("shadow")
    if version is not None and version == candidate:
        return  # made stable outside the rollout: the controller closes it as promoted
    raise VersionConflict(
        f"rollout {traffic.get('rollout_id')} is active on deployment {row.name!r}; {change}"
        f" would strand it. Promote or abort it first (`slipway rollout promote|abort"
        f" {row.name}`), or roll back (`slipway rollback {row.name}`)"
    )


def _deployment_exists(name: str) -> VersionConflict:
    return VersionConflict(
        f"deployment {name!r} already exists; change its version with"
        f" `slipway deploy` / set_deployment_version, or pick another name"
    )


# -- validation --------------------------------------------------------------------------------


def _to_json(value: msgspec.Struct, what: str) -> dict[str, Any]:
    """A record as the plain dict stored in a JSON column; NaN and infinity are refused because
    JSON (and PostgreSQL) cannot hold them."""
    data: dict[str, Any] = msgspec.to_builtins(value)
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:
        raise InvalidInput(f"{what} contains NaN or infinity, which cannot be stored") from None
    return data


def _check_new_version(
    new: NewVersion,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Refuse what a version may not be (InvalidInput); its signature, metadata and profile
    as the JSON the store keeps."""
    if not isinstance(new, NewVersion):
        raise InvalidInput(f"a new version must be a NewVersion, got {type(new).__name__}")
    check_name("model", new.model)
    if new.number is not None:
        check_version(new.number)
    if not isinstance(new.format, str) or not new.format or len(new.format) > 32:
        raise InvalidInput(f"invalid model format {new.format!r}: expected e.g. 'onnx'")
    digest = new.digest
    if not isinstance(digest, str) or len(digest) != 64 or not _HEX.issuperset(digest):
        raise InvalidInput(f"invalid digest {digest!r}: expected 64 lowercase hex characters")
    if isinstance(new.size, bool) or not isinstance(new.size, int) or new.size < 0:
        raise InvalidInput(f"invalid artifact size {new.size!r}")
    check_meta(new.meta)
    return (
        _to_json(new.signature, "signature"),
        _to_json(new.meta, "metadata"),
        None if new.profile is None else _to_json(new.profile, "reference profile"),
    )


def _check_inference(policy: InferencePolicy) -> dict[str, Any]:
    if not isinstance(policy, InferencePolicy):
        raise InvalidInput(f"inference must be an InferencePolicy, got {type(policy).__name__}")
    if not 0.0 <= policy.sample_rate <= 1.0:
        raise InvalidInput("inference.sample_rate must be between 0 and 1")
    # A business key is copied raw into every prediction record, whatever the payload mode:
    # a field that is also redacted would appear there in clear.
    for field in policy.keys:
        if field in policy.redact:
            raise InvalidInput(
                f"field {field!r} is both redacted and a business key; a business key is"
                " recorded in clear, so drop it from the keys or from the redacted fields"
            )
    return _to_json(policy, "inference policy")


def _check_number(number: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InvalidInput(f"version must be a positive integer, got {number!r}")


def check_meta(meta: VersionMeta) -> None:
    """Refuse metadata a version may not carry (InvalidInput); registration calls it before it
    stores anything.

    A ``VersionMeta`` built in Python is not type-checked by its constructor, so it is checked
    here as the store will read it back: a value of the wrong type (a text metric, a numeric
    tag, a numpy scalar) would otherwise fail every later read of the version.
    """
    if not isinstance(meta, VersionMeta):
        raise InvalidInput(f"metadata must be a VersionMeta, got {type(meta).__name__}")
    try:
        msgspec.convert(msgspec.to_builtins(meta), VersionMeta)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidInput(
            f"invalid version metadata: {exc}; metrics are plain numbers, tags and the"
            " description text"
        ) from None
    _to_json(meta, "metadata")
    sha = meta.training_data_sha256
    if sha is not None and (len(sha) != 64 or not _HEX.issuperset(sha)):
        raise InvalidInput(
            f"invalid training data sha256 {sha!r}: expected 64 lowercase hex characters,"
            " as sha256sum prints them"
        )


def _check_batching(batching: BatchingConfig) -> dict[str, Any]:
    if not isinstance(batching, BatchingConfig):
        raise InvalidInput(f"batching must be a BatchingConfig, got {type(batching).__name__}")
    if batching.max_batch_size < 1:
        raise InvalidInput("batching.max_batch_size must be at least 1 (1 turns batching off)")
    if not math.isfinite(batching.max_batch_delay_ms) or batching.max_batch_delay_ms < 0:
        raise InvalidInput("batching.max_batch_delay_ms must be a finite number >= 0")
    if batching.max_queue_rows < batching.max_batch_size:
        raise InvalidInput(
            f"batching.max_batch_size {batching.max_batch_size} is more than max_queue_rows"
            f" {batching.max_queue_rows}, the rows a version's queue holds (new deployments take"
            " SLIPWAY_MAX_QUEUE_ROWS); use a smaller batch or a larger queue"
        )
    return _to_json(batching, "batching")


__all__: Sequence[str] = ["SqlStore", "check_meta", "utc_now"]
