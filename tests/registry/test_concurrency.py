"""Many writers at once: version numbers must stay unique and gap-free on both backends."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from slipway.registry.store import SqlStore

from .samples import DIGEST, SIGNATURE

THREADS = 20


def _run_together(work: Callable[[int], int]) -> list[int]:
    barrier = threading.Barrier(THREADS)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait()
            number = work(i)
            with lock:
                results.append(number)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    return results


@pytest.mark.parametrize("existing", [True, False], ids=["existing-model", "new-model"])
def test_concurrent_registration_numbers_are_unique(store: SqlStore, existing: bool) -> None:
    if existing:
        store.register_version("other", format="onnx", digest=DIGEST, size=1, signature=SIGNATURE)
        store.register_version("churn", format="onnx", digest=DIGEST, size=1, signature=SIGNATURE)
    offset = 1 if existing else 0

    def register(i: int) -> int:
        record = store.register_version(
            "churn", format="onnx", digest=DIGEST, size=i, signature=SIGNATURE, actor=f"t{i}"
        )
        return record.number

    numbers = _run_together(register)
    assert sorted(numbers) == list(range(1 + offset, THREADS + 1 + offset))
    versions = store.list_versions("churn")
    assert [v.number for v in versions] == list(range(1, THREADS + 1 + offset))
    # Each thread's row carries its own number: nothing was overwritten or duplicated.
    assert sorted(v.size for v in versions[offset:]) == list(range(THREADS))
    assert len(store.list_models()) == (2 if existing else 1)
    registered = [e for e in store.events(limit=100) if e.kind == "version.registered"]
    assert len(registered) == THREADS + 2 * offset


def test_concurrent_registration_from_separate_stores(store_url: str) -> None:
    """Like separate processes or replicas: each writer has its own engine and pool."""
    stores = [SqlStore(store_url) for _ in range(4)]
    try:

        def register(i: int) -> int:
            record = stores[i % len(stores)].register_version(
                "churn", format="onnx", digest=DIGEST, size=i, signature=SIGNATURE
            )
            return record.number

        numbers = _run_together(register)
        assert sorted(numbers) == list(range(1, THREADS + 1))
    finally:
        for store in stores:
            store.close()
