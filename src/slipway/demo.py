"""``slipway demo``: the five-minute tour on the embedded defaults, with real requests."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from typing import Any

import numpy as np
from rich.console import Console

from slipway.errors import VersionConflict
from slipway.governance.identities import bootstrap_admin, create_user, issue_token
from slipway.governance.roles import Role
from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.settings import Settings

MODEL = "breast-cancer"
DEPLOYMENT = "breast-cancer"


def _train() -> tuple[list[tuple[str, Any, dict[str, float]]], np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32),
        data.target,
        test_size=0.25,
        random_state=0,
        stratify=data.target,
    )
    candidates = [
        ("logistic regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
        (
            "random forest (100 trees)",
            RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0),
        ),
    ]
    trained = []
    for description, estimator in candidates:
        estimator.fit(x_train, y_train)
        proba = estimator.predict_proba(x_test)[:, 1]
        metrics = {
            "accuracy": float(accuracy_score(y_test, estimator.predict(x_test))),
            "roc_auc": float(roc_auc_score(y_test, proba)),
        }
        trained.append((description, estimator, metrics))
    return trained, x_train, x_test, [str(n) for n in data.feature_names]


def _token(registry: Registry) -> tuple[str, str]:
    """A token for the tour: the first admin's on a new home (as `slipway init` makes), else a
    day-long one for a ``demo`` service account with the deployer role."""
    issued = bootstrap_admin(registry.store)
    if issued is None:
        with contextlib.suppress(VersionConflict):
            create_user(registry.store, "demo", Role.DEPLOYER, kind="service", actor="slipway demo")
        issued = issue_token(
            registry.store,
            "demo",
            description="slipway demo",
            expires_in=dt.timedelta(days=1),
            actor="slipway demo",
        )
    return issued.token, issued.record.user


def run_demo(settings: Settings, *, once: bool, console: Console) -> None:
    """Train, register, deploy, serve, call; then serve until Ctrl-C unless ``once``."""
    import httpx

    console.rule("[bold]Slipway demo")
    console.print(f"home: {settings.home}  (set SLIPWAY_HOME to use another)")
    with console.status("training two models on scikit-learn's breast-cancer data…"):
        trained, x_train, x_test, names = _train()
    with Registry(settings) as registry:
        versions = []
        for description, estimator, metrics in trained:
            with console.status(f"converting {description} to ONNX, verifying, registering…"):
                record = registry.register_sklearn(
                    MODEL,
                    estimator,
                    x_train,
                    feature_names=names,
                    description=description,
                    training_data="sklearn.datasets.load_breast_cancer (75% split, random_state=0)",
                    metrics=metrics,
                )
            versions.append(record)
            console.print(
                f"registered [bold]{record.ref}[/] ({description}) sha256:{record.digest[:12]}"
                f"  accuracy={metrics['accuracy']:.3f} roc_auc={metrics['roc_auc']:.3f}"
            )
        first = versions[0].number
        if DEPLOYMENT in {d.name for d in registry.store.list_deployments()}:
            deployment = registry.store.set_deployment_version(DEPLOYMENT, first)
        else:
            deployment = registry.store.create_deployment(DEPLOYMENT, MODEL, first)
        console.print(f"deployed [bold]{DEPLOYMENT}[/] → {MODEL}@{deployment.version}")
        token, holder = _token(registry)
        console.print(f"token for [bold]{holder}[/] (the management API needs one): {token}")

    server = BackgroundServer(settings, log_level="warning")
    with console.status(f"starting the server on {server.url}…"):
        server.start()
    try:
        rows = x_test[:3]
        with httpx.Client(base_url=server.url, timeout=10) as http:
            ready = http.get("/v2/health/ready").json()
            console.print(f"GET /v2/health/ready → {ready}")
            v2_body = {
                "id": "demo-1",
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(rows.shape),
                        "datatype": "FP32",
                        "data": rows.tolist(),
                    }
                ],
            }
            v2 = http.post(f"/v2/models/{DEPLOYMENT}/infer", json=v2_body)
            v2.raise_for_status()
            console.print(f"POST /v2/models/{DEPLOYMENT}/infer (V2, 3 rows) →")
            console.print_json(json.dumps(v2.json()))
            plain = http.post(f"/predict/{DEPLOYMENT}", json={"instances": rows.tolist()})
            plain.raise_for_status()
            console.print(f"POST /predict/{DEPLOYMENT} (plain JSON) →")
            console.print_json(json.dumps(plain.json()))
            refused = http.get(f"/api/deployments/{DEPLOYMENT}")
            console.print(
                f"GET /api/deployments/{DEPLOYMENT} without a token → {refused.status_code}"
            )
            shown = http.get(
                f"/api/deployments/{DEPLOYMENT}", headers={"authorization": f"Bearer {token}"}
            )
            shown.raise_for_status()
            console.print(f"GET /api/deployments/{DEPLOYMENT} with the token →")
            console.print_json(json.dumps(shown.json()))
        console.rule("[bold]Try it")
        console.print(f"  server metadata   {server.url}/v2")
        console.print(f"  model metadata    {server.url}/v2/models/{DEPLOYMENT}")
        console.print(f"  infer (V2)        POST {server.url}/v2/models/{DEPLOYMENT}/infer")
        console.print(f"  predict (JSON)    POST {server.url}/predict/{DEPLOYMENT}")
        console.print(f"  metrics           {server.url}/metrics")
        console.print(f"  management API    {server.url}/api/openapi.json")
        console.print(f"  dashboard         {server.url}/ui  (sign in with the token below)")
        console.print(f"  token             export SLIPWAY_TOKEN={token}")
        console.print(
            f'  curl              curl -H "Authorization: Bearer $SLIPWAY_TOKEN"'
            f" {server.url}/api/deployments"
        )
        example = json.dumps([rows[0].tolist()])
        console.print(f"  CLI               slipway predict {DEPLOYMENT} '{example}'")
        if once:
            return
        console.print("serving until Ctrl-C…")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("stopping")
    finally:
        server.stop()
