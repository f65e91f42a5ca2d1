"""Governance: who may do what, approvals with evidence, and the tamper-evident audit log.

    roles.py        Role (viewer < deployer < approver < admin) and Principal, the caller
    identities.py   users, service accounts and their tokens; TokenCache for the request path
    evidence.py     pure rules: the evidence bundle, its digest, policy checks, vote tallies
    approvals.py    approval policies, evidence reports, promotion requests and decisions
    audit.py        verify the chain, query, export, checkpoints, retention purges
    recorder.py     prediction audit records off the request path (bounded queue, batches)

The one gate every promotion passes lives below, in ``registry/promotions.py``, and the chain's
append in ``registry/audit.py``: both run inside the registry's own write transactions.
"""
