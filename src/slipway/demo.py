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
PREDICT_URL = "http://127.0.0.1:8000"  # where `slipway predict` looks without --url


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
        console.print(
            f"token for [bold]{holder}[/] (the management API needs one): {token}", soft_wrap=True
        )

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
        # One line each whatever the terminal's width, so that each can be copied whole.
        example = json.dumps([[float(f"{v:.6g}") for v in rows[0]]])  # not float32 noise
        url = "" if server.url == PREDICT_URL else f" --url {server.url}"
        for label, text in [
            ("server metadata", f"{server.url}/v2"),
            ("model metadata", f"{server.url}/v2/models/{DEPLOYMENT}"),
            ("infer (V2)", f"POST {server.url}/v2/models/{DEPLOYMENT}/infer"),
            ("predict (JSON)", f"POST {server.url}/predict/{DEPLOYMENT}"),
            ("metrics", f"{server.url}/metrics"),
            ("management API", f"{server.url}/api/openapi.json"),
            ("dashboard", f"{server.url}/ui  (sign in with the token below)"),
            ("token", f"export SLIPWAY_TOKEN={token}"),
            (
                "curl",
                f'curl -H "Authorization: Bearer $SLIPWAY_TOKEN" {server.url}/api/deployments',
            ),
            ("CLI", f"slipway predict {DEPLOYMENT} '{example}'{url}"),
        ]:
            console.print(f"  {label:<17} {text}", soft_wrap=True, highlight=False, markup=False)
        if once:
            console.print(
                "the tour is done and its server stops now: `slipway serve` serves these"
                " deployments again, or run the demo without --once to keep it serving"
            )
            return
        console.print("serving until Ctrl-C…")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("stopping")
    finally:
        server.stop()
