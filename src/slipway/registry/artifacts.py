"""Content-addressed artifact store: every file is kept under the sha256 of its bytes.

Layout under ``root``::

    sha256/ab/ab12...ef     one file per digest, never modified once in place
    tmp/                    partial writes; a crash leaves debris here, never in sha256/

A write streams into ``tmp/`` while hashing, fsyncs, then renames into place and fsyncs the
directory, so a reader sees either no file or the complete one.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from slipway.errors import ArtifactCorrupt, NotFound, UnsafePath

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class ArtifactStore:
    """Files addressed by the sha256 of their content, under one root directory.

    Directories are created on the first write, so a replica that only reads never needs write
    access to the store.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing -------------------------------------------------------------------------------

    def put_file(self, src: Path) -> tuple[str, int]:
        """Copy ``src`` into the store; return ``(sha256 hex digest, size in bytes)``."""
        with open(src, "rb") as stream:
            return self._put(stream)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; return ``(sha256 hex digest, size in bytes)``."""
        return self._put_chunks(
            memoryview(data)[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)
        )

    def _put(self, stream: BinaryIO) -> tuple[str, int]:
        return self._put_chunks(iter(lambda: stream.read(_CHUNK), b""))

    def _put_chunks(self, chunks: Iterator[bytes | memoryview]) -> tuple[str, int]:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{secrets.token_hex(8)}.part"
        digest = hashlib.sha256()
        size = 0
        # O_EXCL: never write through a file (or symlink) someone else put there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            hexdigest = digest.hexdigest()
            final = self.path(hexdigest)
            if final.is_file() and _hash_file(final) == hexdigest:
                tmp.unlink()  # already stored, intact: nothing to do
                return hexdigest, size
            # A missing or damaged copy is (re)placed atomically; readers holding the old file
            # open keep reading their inode.
            created = not final.parent.exists()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            if created:
                _fsync_dir(final.parent.parent)
            return hexdigest, size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- reading -------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        """Where the artifact with ``digest`` lives (whether or not it exists).

        ``digest`` must be 64 lowercase hex characters, else :class:`UnsafePath`.
        """
        if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
            raise UnsafePath(str(digest))
        return self.root / "sha256" / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        """True if an artifact with ``digest`` is in the store (its content is not checked)."""
        return self.path(digest).is_file()

    def verified_path(self, digest: str) -> Path:
        """The artifact's path after re-hashing its content.

        Raises :class:`NotFound` when it is missing and :class:`ArtifactCorrupt` when its bytes no
        longer hash to ``digest``.
        """
        path = self.path(digest)
        try:
            actual = _hash_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(
                # No path in the message: it can reach HTTP clients (readiness reasons).
                f"artifact sha256:{digest[:12]} is missing from the artifact store"
                " (SLIPWAY_HOME/artifacts); check that this replica mounts the same store the"
                " registry wrote to, or register the model again"
            ) from None
        if actual != digest:
            raise ArtifactCorrupt(digest, actual)
        return path

    def resolve(self, relative: str) -> Path:
        """Resolve a user-supplied path relative to the store root, refusing anything that could
        point outside it: ``..``, absolute or drive paths, backslashes, NUL and other control
        characters, percent-encoding (any ``%``), and symlinks that lead out of the root.
        Raises :class:`UnsafePath`.
        """
        if not isinstance(relative, str) or not relative:
            raise UnsafePath(str(relative))
        # Percent signs are refused outright: a layer above might decode %2e%2e (or %252e%252e,
        # decoded twice) into "..", and no artifact path needs them.
        if (
            "%" in relative
            or "\\" in relative
            or any(ord(c) < 0x20 or c == "\x7f" for c in relative)
        ):
            raise UnsafePath(relative)
        # NFKC folds look-alikes such as FULLWIDTH FULL STOP into "." before the checks below.
        for candidate in {relative, unicodedata.normalize("NFKC", relative)}:
            posix, windows = PurePosixPath(candidate), PureWindowsPath(candidate)
            if posix.is_absolute() or windows.anchor or ".." in posix.parts:
                raise UnsafePath(relative)
        root = self.root.resolve()
        final = (root / relative).resolve()
        if not final.is_relative_to(root):
            raise UnsafePath(relative)  # a symlink inside the store points out of it
        return final


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a rename durable. Windows cannot open directories; its renames are journaled."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
