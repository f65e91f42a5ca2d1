from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from slipway.errors import ArtifactCorrupt, NotFound, UnsafePath
from slipway.registry.artifacts import ArtifactStore


def _leftovers(store: ArtifactStore) -> list[Path]:
    tmp = store.root / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def test_put_bytes_round_trip(artifacts: ArtifactStore) -> None:
    data = b"onnx model bytes" * 1000
    digest, size = artifacts.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert size == len(data)
    path = artifacts.verified_path(digest)
    assert path == artifacts.root / "sha256" / digest[:2] / digest
    assert path.read_bytes() == data
    assert artifacts.exists(digest)
    assert _leftovers(artifacts) == []


def test_put_file_streams_large_file(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    src.write_bytes(data)
    digest, size = artifacts.put_file(src)
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert artifacts.verified_path(digest).read_bytes() == data
    assert _leftovers(artifacts) == []


def test_empty_artifact(artifacts: ArtifactStore) -> None:
    digest, size = artifacts.put_bytes(b"")
    assert size == 0
    assert artifacts.verified_path(digest).read_bytes() == b""


def test_put_is_idempotent(artifacts: ArtifactStore) -> None:
    first = artifacts.put_bytes(b"same")
    path = artifacts.path(first[0])
    inode = path.stat().st_ino
    assert artifacts.put_bytes(b"same") == first
    assert path.stat().st_ino == inode  # the intact copy was kept, not rewritten
    assert _leftovers(artifacts) == []


def test_flipped_byte_is_detected(artifacts: ArtifactStore) -> None:
    digest, _ = artifacts.put_bytes(b"weights" * 100)
    path = artifacts.path(digest)
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactCorrupt) as info:
        artifacts.verified_path(digest)
    assert info.value.digest == digest
    assert info.value.actual == hashlib.sha256(raw).hexdigest()


def test_putting_again_repairs_a_damaged_copy(artifacts: ArtifactStore) -> None:
    digest, _ = artifacts.put_bytes(b"weights")
    artifacts.path(digest).write_bytes(b"garbage")
    assert artifacts.put_bytes(b"weights")[0] == digest
    assert artifacts.verified_path(digest).read_bytes() == b"weights"


def test_missing_artifact_raises_not_found(artifacts: ArtifactStore) -> None:
    digest = "0" * 64
    assert not artifacts.exists(digest)
    with pytest.raises(NotFound, match="missing from the artifact store"):
        artifacts.verified_path(digest)


def test_failed_write_leaves_no_temp_file(artifacts: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        artifacts.put_file(tmp_path / "does-not-exist")
    assert _leftovers(artifacts) == []

    class Boom(Exception):
        pass

    def chunks():  # type: ignore[no-untyped-def]
        yield b"part"
        raise Boom

    with pytest.raises(Boom):
        artifacts._put_chunks(chunks())
    assert _leftovers(artifacts) == []
    assert not (artifacts.root / "sha256").exists()


@pytest.mark.parametrize(
    "digest",
    [
        pytest.param("", id="empty"),
        pytest.param("A" * 64, id="uppercase"),
        pytest.param("a" * 63, id="short"),
        pytest.param("a" * 65, id="long"),
        pytest.param("../" + "a" * 61, id="parent"),
        pytest.param("a" * 63 + "\n", id="newline"),
        pytest.param("g" * 64, id="not-hex"),
    ],
)
def test_bad_digest_is_unsafe(artifacts: ArtifactStore, digest: str) -> None:
    with pytest.raises(UnsafePath):
        artifacts.path(digest)
    with pytest.raises(UnsafePath):
        artifacts.verified_path(digest)


def test_resolve_inside_store(artifacts: ArtifactStore) -> None:
    artifacts.root.mkdir(parents=True)
    root = artifacts.root.resolve()
    assert artifacts.resolve("bundles/churn/model.onnx") == root / "bundles/churn/model.onnx"
    assert artifacts.resolve("a/./b") == root / "a/b"
    assert artifacts.resolve("a..b/c...d") == root / "a..b/c...d"


@pytest.mark.parametrize(
    "relative",
    [
        pytest.param("", id="empty"),
        pytest.param("..", id="dotdot"),
        pytest.param("../etc/passwd", id="parent"),
        pytest.param("a/../../b", id="nested-parent"),
        pytest.param("a/..", id="trailing-parent"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("//server/share", id="unc-slashes"),
        pytest.param("C:/Windows", id="drive"),
        pytest.param("C:Windows", id="drive-relative"),
        pytest.param("..\\x", id="backslash-parent"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("%2e%2e/x", id="encoded-dots"),
        pytest.param("%2E%2E%2Fx", id="encoded-upper"),
        pytest.param("..%2fx", id="encoded-slash"),
        pytest.param("..%5cx", id="encoded-backslash"),
        pytest.param("%252e%252e/x", id="double-encoded"),
        pytest.param("%c0%ae%c0%ae/x", id="overlong-utf8"),
        pytest.param("\uff0e\uff0e/x", id="fullwidth-dots"),
    ],
)
def test_resolve_refuses_escapes(artifacts: ArtifactStore, relative: str) -> None:
    with pytest.raises(UnsafePath):
        artifacts.resolve(relative)


def test_resolve_refuses_symlink_out_of_store(artifacts: ArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    artifacts.root.mkdir(parents=True)
    (artifacts.root / "link").symlink_to(outside)
    with pytest.raises(UnsafePath):
        artifacts.resolve("link/secret")


def test_a_check_that_fails_stores_nothing(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"not a model")
    seen = []

    def refuse(path: Path) -> None:
        seen.append((path.name, path.read_bytes()))
        raise ValueError("not a model")

    with pytest.raises(ValueError):
        artifacts.put_file(src, check=refuse)
    # The check saw the complete copy under the file's own name (its errors name the file).
    assert seen == [("model.onnx", b"not a model")]
    assert not artifacts.exists(hashlib.sha256(b"not a model").hexdigest())
    assert _leftovers(artifacts) == []
    with pytest.raises(ValueError):
        artifacts.put_bytes(b"not a model either", check=refuse)
    assert not (artifacts.root / "sha256").exists() or not any(
        (artifacts.root / "sha256").rglob("*")
    )
    assert _leftovers(artifacts) == []
    digest, _ = artifacts.put_file(src, check=lambda path: None)
    assert artifacts.verified_path(digest).read_bytes() == b"not a model"
    assert _leftovers(artifacts) == []
