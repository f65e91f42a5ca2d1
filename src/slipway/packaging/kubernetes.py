"""Kubernetes manifests for a bundle's image: Deployment, Service, HorizontalPodAutoscaler and
ConfigMap.

Every replica reads the registry URL from a Secret (a shared PostgreSQL), so all of them
reconcile to the same desired state; probes use the V2 health endpoints; the grace period on
termination is longer than the server's drain time so in-flight requests finish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from slipway.errors import InvalidInput
from slipway.packaging.docker import HOME, USER_ID

PRE_STOP_S = 5  # endpoints controllers need a moment to stop sending traffic after SIGTERM

# A Kubernetes resource quantity: 500m, 2, 0.5, 512Mi, 2Gi, 1e3.
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([eE][+-]?\d+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
# An image reference as docker and the kubelet read it: [host[:port]/]path[:tag][@digest].
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH}(?:/{_PATH})*(?::\w[\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_SCALE = {
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


@dataclass(frozen=True)
class KubernetesOptions:
    """What the manifests ask of the cluster. ``image`` is what ``docker build`` was tagged."""

    name: str
    image: str
    port: int = 8000
    replicas: int = 2
    min_replicas: int = 2
    max_replicas: int = 10
    target_cpu_percent: int = 70
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "512Mi"
    memory_limit: str = "2Gi"
    secret: str = ""  # defaults to "<name>-registry"
    secret_key: str = "database-url"
    startup_timeout_s: int = 300
    drain_s: int = 15
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    arch: str | None = None  # "amd64", "arm64": the image's; pods go only to such nodes


def quantity(text: str) -> Decimal | None:
    """The value of a Kubernetes resource quantity (``"500m"`` → 0.5, ``"2Gi"`` → 2147483648),
    or None when ``text`` is not one."""
    found = _QUANTITY.fullmatch(text)
    if found is None:
        return None
    number, suffix = Decimal(found[1]), found[2] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number.scaleb(int(suffix[1:]))
    return number * _SCALE.get(suffix, Decimal(1))


def check_image(image: str) -> str:
    """Return ``image`` if docker and Kubernetes take it as an image reference
    (``registry.example/churn:3``), else raise :class:`~slipway.errors.InvalidInput`."""
    if len(image) > 255 or _IMAGE.fullmatch(image) is None:
        raise InvalidInput(
            f"image {image!r} is not an image reference: write [REGISTRY/]NAME[:TAG] with a"
            " lower-case NAME, e.g. registry.example/churn:3"
        )
    return image


def kubernetes_name(name: str) -> str:
    """A Slipway name as a DNS-1123 label (a label's value): lower case, ``_`` and ``.``
    become ``-``. Objects are named with :func:`resource_name`."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].rstrip("-")
    return label or "slipway"


def resource_name(name: str) -> str:
    """The name of the objects written for deployment ``name``: a DNS-1035 label, which a
    Service's name must be (it starts with a letter, so ``3d`` becomes ``slipway-3d``)."""
    label = kubernetes_name(name)
    if not label[0].isalpha():
        label = f"slipway-{label}"[:63].rstrip("-")
    return label


def termination_grace_s(options: KubernetesOptions) -> int:
    """Longer than the pre-stop pause plus the server's drain, with a margin."""
    return PRE_STOP_S + options.drain_s + 10


def render_manifests(options: KubernetesOptions) -> dict[str, dict[str, Any]]:
    """File name → manifest, for ``kubectl apply -f kubernetes/``."""
    name = resource_name(options.name)
    secret = options.secret or f"{name}-registry"
    labels = {
        "app.kubernetes.io/name": "slipway",
        "app.kubernetes.io/instance": name,
        **options.labels,
    }
    selector = {"app.kubernetes.io/name": "slipway", "app.kubernetes.io/instance": name}
    metadata = {"name": name, "labels": labels}
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "labels": labels},
        "data": {
            "SLIPWAY_HOST": "0.0.0.0",
            "SLIPWAY_PORT": str(options.port),
            **options.environment,
        },
    }
    probe_http = {"path": "/v2/health/ready", "port": "http"}
    container = {
        "name": "slipway",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["slipway", "serve", "--bundle", "/srv/bundle"],
        "ports": [{"name": "http", "containerPort": options.port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
        "env": [
            {
                "name": "SLIPWAY_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": options.secret_key}},
            }
        ],
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        # Slow model loads get startup_timeout_s before liveness may restart the container.
        "startupProbe": {
            "httpGet": probe_http,
            "periodSeconds": 5,
            "failureThreshold": max(1, options.startup_timeout_s // 5),
            "timeoutSeconds": 2,
        },
        "readinessProbe": {
            "httpGet": probe_http,
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "home", "mountPath": HOME},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(options.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace_s(options),
                    "securityContext": {
                        "fsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    **(
                        {
                            "nodeSelector": {
                                "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": options.arch,
                            }
                        }
                        if options.arch
                        else {}
                    ),
                    "containers": [container],
                    "volumes": [
                        {"name": "home", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": options.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }
    return {
        "configmap.yaml": config,
        "deployment.yaml": deployment,
        "service.yaml": service,
        "hpa.yaml": autoscaler,
    }


def dump_manifest(manifest: dict[str, Any]) -> str:
    """One manifest as YAML, keys in the order written above."""
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)
