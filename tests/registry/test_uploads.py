"""Unpacking uploaded archives: what is safe is written, anything that could escape is refused
before a single file is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from slipway.errors import InvalidInput, PayloadTooLarge
from slipway.registry.uploads import archive_kind, find_root, unpack_upload


def zip_of(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def tar_of(entries: dict[str, bytes], *, mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return bytes(buffer.getvalue())


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(zip_of({"model/saved_model.pb": b"pb", "model/variables/v": b"1"}), id="zip"),
        pytest.param(tar_of({"model/saved_model.pb": b"pb", "model/variables/v": b"1"}), id="tgz"),
        pytest.param(
            tar_of({"model/saved_model.pb": b"pb", "model/variables/v": b"1"}, mode="w"), id="tar"
        ),
    ],
)
def test_safe_archives_unpack_and_their_root_is_found(data: bytes, tmp_path: Path) -> None:
    root = find_root(unpack_upload(data, tmp_path / "u", max_bytes=1000), "saved_model.pb")
    assert root == tmp_path / "u" / "model"
    assert (root / "variables" / "v").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(zip_of({"../up.txt": b"x"}), "leave the upload", id="zip-dot-dot"),
        pytest.param(zip_of({"/etc/cron.d/x": b"x"}), "leave the upload", id="zip-absolute"),
        pytest.param(zip_of({"a\\..\\..\\x": b"x"}), "leave the upload", id="zip-backslash"),
        pytest.param(
            zip_of({"saved_model.pb": b"x"}, links={"variables": "/etc"}), "a link", id="zip-link"
        ),
        pytest.param(tar_of({"ok/../../x": b"x"}), "leave the upload", id="tar-dot-dot"),
        pytest.param(tar_of({"/abs": b"x"}), "leave the upload", id="tar-absolute"),
    ],
)
def test_unsafe_entries_are_refused_before_anything_is_written(
    data: bytes, message: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        unpack_upload(data, tmp_path / "u", max_bytes=1000)
    assert not (tmp_path / "u").exists() and not (tmp_path / "up.txt").exists()


def test_zip_bombs_duplicates_and_garbage_are_refused(tmp_path: Path) -> None:
    bomb = zip_of({"saved_model.pb": b"\0" * 100_000})  # compresses to a few hundred bytes
    assert len(bomb) < 1000
    with pytest.raises(PayloadTooLarge, match="10000"):
        unpack_upload(bomb, tmp_path / "a", max_bytes=10_000)
    with pytest.raises(PayloadTooLarge, match="entries"):
        unpack_upload(zip_of({f"f{i}": b"" for i in range(5)}), tmp_path / "b", max_bytes=10,
                      max_entries=4)  # fmt: skip
    twice = _tar_twice()
    with pytest.raises(InvalidInput, match="cannot be unpacked"):
        unpack_upload(twice, tmp_path / "c", max_bytes=100)
    with pytest.raises(InvalidInput, match="not a .zip, .tar or .tar.gz"):
        unpack_upload(b"just bytes", tmp_path / "d", max_bytes=100)
    with pytest.raises(InvalidInput, match="no saved_model.pb"):
        find_root(unpack_upload(zip_of({"a/b": b"1"}), tmp_path / "e", max_bytes=100),
                  "saved_model.pb")  # fmt: skip
    assert archive_kind(b"PK\x03\x04rest") == "zip" and archive_kind(b"\x08\x01") is None


def _tar_twice() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for _ in range(2):
            info = tarfile.TarInfo("saved_model.pb")
            info.size = 1
            archive.addfile(info, io.BytesIO(b"1"))
    return buffer.getvalue()
