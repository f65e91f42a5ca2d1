"""Registering a model a client uploaded as bytes (the management API's register route), and
unpacking an uploaded archive (a zipped or tarred SavedModel directory) safely.

The rules are the command line's: the format is detected unless named, a format whose package
is missing is refused with its install command, TorchScript needs sample rows, and a pickle is
never loaded. Over HTTP there is no ``--trusted``: trusting a pickle is an operator's decision
on their own machine (``slipway models register --trusted``), never a client's.

An upload is untrusted: before anything is written, every entry is checked. Refused: absolute
names, ``..``, names that are not plain text paths, links (symbolic or hard), devices, FIFOs
and anything else that is not a regular file or a directory, and archives that would unpack
to more than ``max_bytes`` or ``max_entries`` (a zip bomb). Only then are the files written,
one by one, under the target directory, with their sizes counted again as they are copied.
"""

from __future__ import annotations

import io
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from slipway.errors import InvalidInput, PayloadTooLarge, UnsupportedFormat
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import VersionMeta, VersionRecord
from slipway.registry.store import SqlStore
from slipway.runtimes.trust import looks_like_pickle

MAX_ENTRIES = 10_000
ARCHIVE_KINDS = "a .zip, .tar or .tar.gz archive"


def register_upload(
    store: SqlStore,
    artifacts: ArtifactStore,
    model: str,
    data: bytes,
    *,
    format: str | None = None,
    sample: dict[str, np.ndarray] | None = None,
    meta: VersionMeta | None = None,
    actor: str | None = None,
    max_unpacked_bytes: int,
    sample_hint: str = "give sample rows",
) -> VersionRecord:
    """Register the uploaded ``data`` as the next version of ``model``.

    ``format`` None detects ``onnx``, ``torchscript`` or ``gguf`` from the bytes; a SavedModel
    is a directory, so it comes as an archive (``archive_kind``) and must be named. ``sample``
    rows give a TorchScript module its signature; ``sample_hint`` says how to send them.
    Raises UnsupportedFormat (pickles, unknown or mismatched formats, a missing package),
    InvalidInput (an unsafe or malformed archive, no sample), PayloadTooLarge.
    """
    from slipway.registry.names import check_name
    from slipway.registry.registration import register_model, register_onnx
    from slipway.runtimes.base import FORMATS
    from slipway.runtimes.detect import detect_format
    from slipway.runtimes.extras import import_extra

    check_name("model", model)
    if format is not None and format not in FORMATS:
        raise UnsupportedFormat(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if format != "savedmodel" and looks_like_pickle(data[:8]):
        hint = "; for a SavedModel archive add format=savedmodel" if format is None else ""
        raise UnsupportedFormat(
            "the upload starts like a pickle (or a compressed file); pickle-based model files"
            " are never loaded from an upload: export the model to ONNX, TorchScript,"
            f" SavedModel or GGUF{hint}"
        )
    if format == "onnx":
        return register_onnx(store, artifacts, model, data, meta=meta, actor=actor)
    if format is not None:
        import_extra(format)  # refuse a missing package before unpacking or storing anything
    with tempfile.TemporaryDirectory(prefix="slipway-upload-") as tmp:
        if format == "savedmodel":
            unpacked = unpack_upload(data, Path(tmp) / "upload", max_bytes=max_unpacked_bytes)
            source = find_root(unpacked, "saved_model.pb")
        else:
            source = Path(tmp) / "model"
            source.write_bytes(data)
            detected = detect_format(source)  # refuses a torch.save zip (a pickle)
            if format is not None and detected != format:
                raise UnsupportedFormat(
                    f"the upload is not a {format} model (it looks like {detected})"
                )
            format = detected
            if format == "onnx":
                if archive_kind(data) is not None:
                    raise UnsupportedFormat(
                        "the upload is an archive; for a SavedModel add format=savedmodel"
                    )
                return register_onnx(store, artifacts, model, data, meta=meta, actor=actor)
        if format == "torchscript" and not sample:
            raise InvalidInput(
                "a TorchScript file records no input shapes or dtypes; " + sample_hint
            )
        return register_model(
            store, artifacts, model, source, format=format, sample=sample, meta=meta, actor=actor
        )


def archive_kind(data: bytes) -> str | None:
    """``zip`` or ``tar`` (plain, gzip, bz2 or xz) from the leading bytes, else None."""
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "zip"
    if data.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return "tar"
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar"
    return None


def unpack_upload(
    data: bytes, into: Path, *, max_bytes: int, max_entries: int = MAX_ENTRIES
) -> Path:
    """Unpack the archive ``data`` under the empty directory ``into``; return ``into``.

    Raises InvalidInput (400) for a malformed or unsafe archive, PayloadTooLarge (413) when it
    unpacks to more than ``max_bytes`` or ``max_entries``.
    """
    kind = archive_kind(data)
    if kind == "zip":
        _unpack_zip(data, into, max_bytes, max_entries)
    elif kind == "tar":
        _unpack_tar(data, into, max_bytes, max_entries)
    else:
        raise InvalidInput(f"the upload is not {ARCHIVE_KINDS}")
    return into


def find_root(directory: Path, marker: str) -> Path:
    """The directory holding ``marker``: ``directory`` itself, or its single top-level folder
    (archives made with ``zip -r model.zip model/`` or ``tar czf model.tgz model`` nest one)."""
    if (directory / marker).is_file():
        return directory
    children = [p for p in directory.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir() and (children[0] / marker).is_file():
        return children[0]
    raise InvalidInput(
        f"the archive has no {marker} at its top level or in its single top-level folder"
    )


def _checked_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or ":" in (path.parts or ("",))[0]  # "C:..." drive names
        or ".." in path.parts
        or any(ord(c) < 0x20 for c in name)
    ):
        raise InvalidInput(f"refused archive entry {name!r}: it would leave the upload's folder")
    return path


def _budget(sizes: list[int], max_bytes: int, max_entries: int) -> None:
    if len(sizes) > max_entries:
        raise PayloadTooLarge(f"archive entries ({len(sizes)})", max_entries)
    total = sum(sizes)
    if total > max_bytes:
        raise PayloadTooLarge(f"unpacked archive ({total} bytes)", max_bytes)


def _write(source: IO[bytes], target: Path, written: list[int], max_bytes: int) -> None:
    # The sizes an archive declares can lie: count what is really copied. "x": an entry given
    # twice is refused rather than overwritten.
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as out:
        while chunk := source.read(1 << 20):
            written[0] += len(chunk)
            if written[0] > max_bytes:
                raise PayloadTooLarge("unpacked archive", max_bytes)
            out.write(chunk)


def _unpack_zip(data: bytes, into: Path, max_bytes: int, max_entries: int) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"the upload is not a readable zip archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        _budget([i.file_size for i in infos], max_bytes, max_entries)
        for info in infos:
            _checked_name(info.filename)
            # Unix type bits, when the zip has them (many writers record permissions only).
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                kind = "a link" if stat.S_ISLNK(mode) else "not a regular file"
                raise InvalidInput(f"refused archive entry {info.filename!r}: {kind}")
        written = [0]
        try:
            for info in infos:
                target = into / _checked_name(info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                with archive.open(info) as source:
                    _write(source, target, written, max_bytes)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise InvalidInput(f"the zip archive cannot be unpacked: {exc}") from None


def _unpack_tar(data: bytes, into: Path, max_bytes: int, max_entries: int) -> None:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"the upload is not a readable tar archive: {exc}") from None
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidInput(f"the tar archive cannot be read: {exc}") from None
        _budget([m.size for m in members if m.isfile()], max_bytes, max_entries)
        for member in members:
            _checked_name(member.name)
            if not (member.isfile() or member.isdir()):
                kind = "a link" if member.issym() or member.islnk() else "not a regular file"
                raise InvalidInput(f"refused archive entry {member.name!r}: {kind}")
        written = [0]
        try:
            for member in members:
                target = into / _checked_name(member.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                source = archive.extractfile(member)
                if source is None:  # pragma: no cover - only for non-regular members
                    raise InvalidInput(f"refused archive entry {member.name!r}")
                with source:
                    _write(source, target, written, max_bytes)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidInput(f"the tar archive cannot be unpacked: {exc}") from None
