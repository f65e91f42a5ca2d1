"""The I/O shell of the checklist: read every record an item looks at into one :class:`Facts`.

Everything comes from the registry's own records: the version and its artifact (re-hashed),
the ``version.packaged`` event, the newest validation report, promotion requests and their
decisions, the deployment, its rollouts, alert rules (stored and from the rules file), the
audit chain's verification, and the settings the servers run with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy.engine import make_url

from slipway.errors import InvalidInput, RolloutNotFound, SlipwayError
from slipway.governance import approvals, audit
from slipway.monitoring.alert_store import AlertStore
from slipway.monitoring.alerts import AlertRule, load_rules, rules_in_force
from slipway.packaging.record import PACKAGED
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import DeploymentRecord, EventRecord, VersionRecord
from slipway.registry.store import SqlStore
from slipway.rollout.policy import RolloutRecord
from slipway.rollout.state import RolloutStore
from slipway.runtimes.trust import looks_like_pickle
from slipway.settings import Settings
from slipway.validation.reports import StoredReport, latest_report


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the registry records about one version, in the context of ``deployment``."""

    version: VersionRecord
    artifact_problem: str | None  # None: the artifact re-hashes to the version's digest
    artifact_pickle: bool
    packaged: EventRecord | None  # the newest ``version.packaged`` event
    validation: StoredReport | None  # the newest validation report
    requests: list[approvals.PromotionRequest]  # for this version (and deployment, if any)
    deployment: DeploymentRecord | None
    baseline: int | None  # the version this one replaces (or replaced) on the deployment
    rollouts: list[RolloutRecord]  # on the deployment, newest first
    rules: list[AlertRule]
    audit: audit.Verification | None
    audit_problem: str | None
    monitoring: bool
    webhooks: list[str]
    audit_predictions: str
    database: str  # "postgresql" or "sqlite"
    database_where: str  # host/database, never credentials


def gather(
    store: SqlStore,
    artifacts: ArtifactStore,
    settings: Settings,
    version: VersionRecord,
    deployment: DeploymentRecord | None,
) -> Facts:
    """Read the facts about ``version`` (on ``deployment`` when not None)."""
    problem, pickle = _artifact(artifacts, version.digest)
    requests = [
        r
        for r in approvals.list_requests(
            store, deployment=None if deployment is None else deployment.name, limit=1000
        )
        if r.model == version.model and r.version == version.number
    ]
    rollouts = [] if deployment is None else _rollouts(store, deployment.name)
    file_rules = load_rules(Path(settings.alert_rules_file)) if settings.alert_rules_file else []
    rules = rules_in_force(file_rules, AlertStore(store).list_rules())
    try:
        verification, audit_problem = audit.verify(store), None
    except SlipwayError as exc:
        verification, audit_problem = None, exc.message
    url = make_url(settings.database_url)
    backend = url.get_backend_name()
    where = url.database or "" if backend == "sqlite" else f"{url.host or ''}/{url.database or ''}"
    return Facts(
        version=version,
        artifact_problem=problem,
        artifact_pickle=pickle,
        packaged=_newest(store, version.ref, PACKAGED),
        validation=latest_report(store, version.model, version.number),
        requests=requests,
        deployment=deployment,
        baseline=_baseline(version, deployment),
        rollouts=rollouts,
        rules=rules,
        audit=verification,
        audit_problem=audit_problem,
        monitoring=bool(settings.monitoring),
        webhooks=[u.strip() for u in settings.alert_webhooks.split(",") if u.strip()],
        audit_predictions=settings.audit_predictions,
        database="postgresql" if backend in ("postgresql", "postgres") else backend,
        database_where=where,
    )


def choose_deployment(
    store: SqlStore, version: VersionRecord, name: str | None = None
) -> DeploymentRecord | None:
    """The deployment a version is judged on: ``name`` when given (it must serve the same
    model); else one that serves the version (stable, candidate or shadow), then the model's
    production deployment, then its only deployment; None when none fits."""
    if name is not None:
        found = store.get_deployment(name)
        if found.model != version.model:
            raise InvalidInput(
                f"deployment {name!r} serves model {found.model!r}, not {version.model!r}"
            )
        return found
    mine = [d for d in store.list_deployments() if d.model == version.model]

    def serves(d: DeploymentRecord) -> bool:
        traffic = d.traffic
        arms = () if traffic is None else (traffic.candidate, traffic.shadow)
        return d.version == version.number or version.number in arms

    serving = sorted((d for d in mine if serves(d)), key=lambda d: not d.production)
    if serving:
        return serving[0]
    production = [d for d in mine if d.production]
    if production:
        return production[0]
    if len(mine) == 1:
        return mine[0]
    return None


def _artifact(artifacts: ArtifactStore, digest: str) -> tuple[str | None, bool]:
    try:
        path = artifacts.verified_path(digest)
    except SlipwayError as exc:  # missing (NotFound) or changed (ArtifactCorrupt)
        return exc.message, False
    if path.is_dir():
        return None, False
    with open(path, "rb") as stream:
        return None, looks_like_pickle(stream.read(16))


def _newest(store: SqlStore, subject: str, kind: str) -> EventRecord | None:
    # Filtered by kind in the query: on a busy registry the newest events of a subject may all
    # be of other kinds.
    found = store.events(subject, limit=1, kinds=(kind,))
    return found[0] if found else None


def _rollouts(store: SqlStore, deployment: str) -> list[RolloutRecord]:
    """Every rollout started on ``deployment`` (from its ``rollout.started`` events)."""
    rollouts = RolloutStore(store)
    found = []
    started = store.events(f"deployment:{deployment}", limit=None, kinds=("rollout.started",))
    for event in started:
        if isinstance(event.data.get("rollout"), int):
            try:
                found.append(rollouts.get(event.data["rollout"]))
            except RolloutNotFound:
                continue
    return found


def _baseline(version: VersionRecord, deployment: DeploymentRecord | None) -> int | None:
    if deployment is None:
        return None
    if deployment.version != version.number:
        return deployment.version
    return deployment.previous_version
