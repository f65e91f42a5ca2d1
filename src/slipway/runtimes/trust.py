"""Pickle-based model files: recognise them, and load them only when the operator trusts them.

Unpickling runs whatever code the file names, so a pickle from an untrusted source is a remote
code execution waiting to happen. Slipway serves ONNX; pickles are only read, on explicit
trust, to convert them to ONNX at registration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway.errors import UnsupportedFormat, UntrustedArtifact

PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".sav"})

# Leading bytes of files that are (or wrap) a pickle. Pickle protocols 2-5 start with PROTO;
# joblib writes plain pickles or compresses them with zlib, gzip, bz2, xz, lzma or lz4, and
# its oldest format starts with "ZF". ONNX files are protobuf (first byte 0x08), so none of
# these prefixes can match a real ONNX model.
_MAGIC: tuple[bytes, ...] = (
    b"\x80\x02",
    b"\x80\x03",
    b"\x80\x04",
    b"\x80\x05",
    b"\x78\x01",  # zlib, fastest .. best compression
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x1f\x8b",  # gzip
    b"BZh",  # bz2
    b"\xfd7zXZ\x00",  # xz
    b"\x5d\x00\x00",  # raw lzma
    b"\x04\x22\x4d\x18",  # lz4 frame
    b"ZF",  # joblib < 0.10 ZFile
)


def looks_like_pickle(head: bytes) -> bool:
    """Whether bytes start like a pickle or a (compressed) joblib file."""
    return head.startswith(_MAGIC)


def is_pickle_file(path: Path) -> bool:
    """Whether ``path`` is pickle-based, by suffix or by its leading bytes (without unpickling)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError:
        return False  # a directory or unreadable file is not a pickle we could load either
    return looks_like_pickle(head)


def load_pickled_estimator(path: Path, *, trusted: bool) -> Any:
    """Unpickle a model file (plain pickle or joblib) when ``trusted``; else ``UntrustedArtifact``.

    The refusal comes before the file is opened. Loading runs code from the file: pass
    ``trusted=True`` only for files whose source you trust as you trust your own code.
    """
    if not trusted:
        raise UntrustedArtifact(str(path))
    import joblib  # a scikit-learn dependency; reads plain and compressed pickles alike

    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling can raise anything the file's code raises
        raise UnsupportedFormat(
            f"cannot load {Path(path).name} as a pickled estimator ({type(exc).__name__}: {exc})"
        ) from exc
