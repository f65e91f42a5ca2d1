"""The production readiness checklist: is a version ready for production, and if not, why not.

    report.py    ItemResult and ReadinessReport, the values every caller gets
    items.py     one pure function per checklist item, over plain facts
    policy.py    ReadinessPolicy: which items are required (a YAML file)
    gather.py    the I/O shell: reads the facts from the registry's own records
    evaluate.py  evaluate_version / evaluate_deployment: gather, then judge

Everything is judged from what the registry records (versions, the ``version.packaged`` event,
validation reports, promotion requests, deployments and rollouts, alert rules, the audit chain)
and the settings the servers run with. It sits above ``packaging``, ``validation`` and
``rollout`` and below ``serving``; the CLI (``slipway readiness``), the management API
(``/api/readiness/...``) and the dashboard call :func:`evaluate_version` and
:func:`evaluate_deployment`.
"""

from slipway.readiness.evaluate import evaluate_deployment, evaluate_version, judge
from slipway.readiness.policy import ReadinessPolicy, load_policy, parse_policy
from slipway.readiness.report import ItemResult, ReadinessReport

__all__ = [
    "ItemResult",
    "ReadinessPolicy",
    "ReadinessReport",
    "evaluate_deployment",
    "evaluate_version",
    "judge",
    "load_policy",
    "parse_policy",
]
