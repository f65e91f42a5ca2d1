"""Running a validation: every stage of the policy, in order, into one :class:`Report`.

The server the integration, performance and shadow stages talk to is started by a ``serve``
function passed in (the CLI's starts a real server in-process on 127.0.0.1, see
``slipway.commands.validation.serve_in_process``), so this module knows no server code.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from slipway.errors import InvalidInput, SlipwayError
from slipway.packaging.hooks import Hooks
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import VersionRecord
from slipway.registry.store import SqlStore
from slipway.runtimes.base import Runtime, load_runtime
from slipway.validation.checks import Check, Report, StageResult
from slipway.validation.contract import check_contract, holdout_fits, model_inputs
from slipway.validation.holdout import Holdout
from slipway.validation.integration import check_integration
from slipway.validation.loadgen import Request, run_load
from slipway.validation.performance import performance_checks
from slipway.validation.policy import STAGES, PerformancePolicy, Policy, ShadowPolicy
from slipway.validation.quality import Scores, quality_checks, score
from slipway.validation.replay import replay, requests_from_audit, requests_from_file
from slipway.validation.wire import Arrays, predict_body, v2_body

CANDIDATE = "validate-candidate"
PRODUCTION = "validate-production"


@dataclass(frozen=True)
class Deployed:
    """A version the validation server must serve under ``name``, with its hooks."""

    name: str
    version: VersionRecord
    hooks: Hooks | None = None


Serve = Callable[[list[Deployed]], AbstractContextManager[str]]
OnStage = Callable[[str, str], None]  # (stage, "start" | "pass" | "fail")


@dataclass
class Validation:
    """What one run needs. ``against``: the deployment whose version is production (the
    policy's ``against`` when None, else the model's one deployment marked ``production``).
    ``base_dir``: where relative paths in the policy point."""

    store: SqlStore
    artifacts: ArtifactStore
    candidate: VersionRecord
    holdout: Holdout
    policy: Policy
    serve: Serve
    hooks: Hooks | None = None
    against: str | None = None
    base_dir: Path = Path(".")
    on_stage: OnStage = lambda stage, state: None
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _runtimes: list[Runtime] = field(default_factory=list, init=False)

    def run(self) -> Report:
        """Run every stage the policy names; a stage that raises fails with the error."""
        try:
            return self._run()
        finally:
            for runtime in self._runtimes:
                runtime.unload()

    def _run(self) -> Report:
        policy, version = self.policy, self.candidate
        against = self.against or policy.against or _production_deployment(self.store, version)
        production = None
        if against is not None:
            deployment = self.store.get_deployment(against)
            if deployment.model != version.model:
                raise InvalidInput(
                    f"deployment {against} serves model {deployment.model!r}, not"
                    f" {version.model!r}: name a deployment of {version.model} as production"
                    " (--against or the policy's against)"
                )
            production = self.store.get_version(deployment.model, deployment.version)
        candidate_rt = self._load(version)
        direct = self._pipeline(candidate_rt)
        stages: list[StageResult] = []

        def stage(name: str, body: Callable[[], tuple[list[Check], dict[str, Any]]]) -> None:
            self.on_stage(name, "start")
            started = time.perf_counter()
            try:
                checks, data = body()
            except SlipwayError as exc:
                checks, data = [Check("stage ran", None, "", "fail", str(exc))], {}
            except Exception as exc:  # a library's (scikit-learn's, httpx's) or a hook's own
                why = f"{type(exc).__name__}: {exc}"
                checks, data = [Check("stage ran", None, "", "fail", why)], {}
            result = StageResult(
                name,
                name in policy.required,
                checks,
                round(time.perf_counter() - started, 3),
                data,
            )
            stages.append(result)
            self.on_stage(name, "pass" if result.passed else "fail")

        if policy.contract is not None:
            contract = policy.contract
            stage(
                "contract",
                lambda: (
                    check_contract(
                        version.signature,
                        version.profile,
                        self.holdout,
                        contract,
                        candidate_rt.predict,
                        preprocess=self.hooks.preprocess if self.hooks else None,
                        postprocess=self.hooks.postprocess if self.hooks else None,
                    ),
                    {},
                ),
            )
        contract_failed = bool(stages) and not stages[0].passed
        if contract_failed and (
            stages[0].required or not holdout_fits(version.signature, self.holdout)
        ):
            # The data does not fit the model, or the policy refuses it: the later stages
            # cannot run (when the contract is advisory, a required one that cannot run
            # fails). An advisory contract failure on data that fits lets the others decide.
            why = "not run: the holdout does not fit the version's signature"
            for name in STAGES[1:] if not stages[0].required else ():
                if policy.runs(name) and name in policy.required:
                    stages.append(
                        StageResult(name, True, [Check("stage ran", None, "", "fail", why)])
                    )
            return self._report(stages, production, against)
        inputs = model_inputs(version.signature, self.holdout.features)
        if policy.quality is not None:
            bounds = policy.quality

            def quality() -> tuple[list[Check], dict[str, Any]]:
                mine = score(version.signature, direct(inputs), self.holdout.labels)
                theirs: Scores | None = None
                if production is not None:
                    # Production may name its inputs otherwise: the same columns, its names.
                    theirs_in = model_inputs(production.signature, self.holdout.features)
                    prod_outputs = self._pipeline(self._load(production))(theirs_in)
                    theirs = score(production.signature, prod_outputs, self.holdout.labels)
                label = production.ref if production else "none"
                data = {"task": mine.task, **mine.plots}
                if theirs is not None:
                    data["production"] = theirs.metrics
                return quality_checks(mine, theirs, bounds, label), data

            stage("quality", quality)
        network = [policy.integration, policy.performance, policy.shadow]
        if all(s is None for s in network):
            return self._report(stages, production, against)
        served = [Deployed(CANDIDATE, version, self.hooks)]
        if production is not None:
            served.append(Deployed(PRODUCTION, production))
        with self.serve(served) as url, httpx.Client(base_url=url, timeout=30.0) as client:
            if policy.integration is not None:
                integ = policy.integration
                rows = integ.rows or self.holdout.rows
                part = {k: v[:rows] for k, v in inputs.items()}

                def integration() -> tuple[list[Check], dict[str, Any]]:
                    answer = direct(part)
                    want = {s.name: answer[s.name] for s in version.signature.outputs}
                    return check_integration(
                        client,
                        CANDIDATE,
                        part,
                        want,
                        batch=integ.batch,
                        tolerance=integ.tolerance,
                    ), {}

                stage("integration", integration)
            if policy.performance is not None:
                perf = policy.performance
                stage("performance", lambda: _performance(url, inputs, perf))
            if policy.shadow is not None:
                shadow = policy.shadow
                stage("shadow", lambda: self._shadow(client, shadow, production, against))
        return self._report(stages, production, against)

    def _report(
        self, stages: list[StageResult], production: VersionRecord | None, against: str | None
    ) -> Report:
        return Report(
            model=self.candidate.model,
            version=self.candidate.number,
            policy=self.policy.name,
            against=None if production is None else f"{production.ref} (deployment {against})",
            created_at=self.clock().isoformat(),
            stages=stages,
        )

    def _shadow(
        self,
        client: httpx.Client,
        shadow: ShadowPolicy,
        production: VersionRecord | None,
        against: str | None,
    ) -> tuple[list[Check], dict[str, Any]]:
        if production is None or against is None:
            why = "shadow replay needs --against DEPLOYMENT or the policy's against"
            return [Check("production version", None, "", "fail", why)], {}
        if (mismatch := _unmatched_inputs(production, self.candidate)) is not None:
            return [Check("input names", None, "", "fail", mismatch)], {}
        if shadow.requests == "audit":
            source = f"audit log of {against}"
            requests = requests_from_audit(self.store, against, shadow.limit, production.signature)
            if not requests:
                why = (
                    f"no prediction records with their payload in the {source}; set its"
                    " inference policy's payload to full, or give shadow.requests a JSON-lines file"
                )
                return [Check("requests replayed", 0, "> 0", "fail", why)], {}
        else:
            path = self.base_dir / shadow.requests
            source = str(path)
            requests = requests_from_file(path, shadow.limit)
        checks, data = replay(
            client,
            requests,
            candidate=CANDIDATE,
            production=PRODUCTION,
            output_names=[s.name for s in self.candidate.signature.outputs],
            policy=shadow,
            sole_inputs={
                deployment: version.signature.inputs[0].name
                for deployment, version in ((PRODUCTION, production), (CANDIDATE, self.candidate))
                if len(version.signature.inputs) == 1
            },
        )
        return checks, {**data, "source": source}

    def _load(self, version: VersionRecord) -> Runtime:
        runtime = load_runtime(version.format, self.artifacts.verified_path(version.digest))
        self._runtimes.append(runtime)
        return runtime

    def _prepared(self, inputs: Arrays) -> Arrays:
        return self.hooks.preprocess(inputs) if self.hooks else inputs

    def _pipeline(self, runtime: Runtime) -> Callable[[Arrays], Arrays]:
        """The model's direct answer, after the candidate's preprocess (scores, not hooks'
        output, are what quality is measured on)."""
        return lambda inputs: runtime.predict(self._prepared(inputs))


def _unmatched_inputs(production: VersionRecord, candidate: VersionRecord) -> str | None:
    """Why one recorded request cannot reach both versions, or None when it can: the same input
    names, or one input each (sent to each side under its own name)."""
    ours = [s.name for s in production.signature.inputs]
    theirs = [s.name for s in candidate.signature.inputs]
    if sorted(ours) == sorted(theirs) or len(ours) == len(theirs) == 1:
        return None
    return (
        f"the candidate's inputs ({', '.join(theirs)}) are not production's"
        f" ({', '.join(ours)}): no request can be sent to both as it is; export the"
        " candidate with production's input names to compare them in shadow"
    )


def _production_deployment(store: SqlStore, version: VersionRecord) -> str | None:
    """The model's one deployment marked ``production``, when there is exactly one."""
    found = [d.name for d in store.list_deployments() if d.model == version.model and d.production]
    return found[0] if len(found) == 1 else None


def _performance(
    url: str, inputs: Arrays, perf: PerformancePolicy
) -> tuple[list[Check], dict[str, Any]]:
    """The load generator at each rate, one holdout row (of the first 256) per request."""
    rows = {k: v[:256] for k, v in inputs.items()}
    count = next(iter(rows.values())).shape[0]
    if perf.route == "v2":
        target = f"{url}/v2/models/{CANDIDATE}/infer"
        bodies = [
            Request(v2_body({k: v[i : i + 1] for k, v in rows.items()})) for i in range(count)
        ]
    else:
        target = f"{url}/predict/{CANDIDATE}"
        first = next(iter(rows.values()))
        bodies = [Request(predict_body(first[i : i + 1])) for i in range(count)]
    checks: list[Check] = []
    runs = []
    for rate in perf.rates:
        result = run_load(
            target, rate=rate, duration_s=perf.duration_s, requests=bodies, timeout_s=perf.timeout_s
        )
        checks.extend(performance_checks(result, perf.sla))
        runs.append(msgspec.to_builtins(result))
    return checks, {"runs": runs}
