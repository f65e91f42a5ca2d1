"""Content-addressed artifact store: every file is kept under the sha256 of its bytes.

Layout under ``root``::

    sha256/ab/ab12...ef     one file per digest, never modified once in place
    tmp/                    partial writes; a crash leaves debris here, never in sha256/

A write streams into its own directory under ``tmp/`` while hashing, fsyncs, then renames into
place and fsyncs the directory, so a reader sees either no file or the complete one. A
``check`` given to the write (registration loads the model) runs on that complete copy first:
when it raises, nothing is stored.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from slipway.errors import ArtifactCorrupt, NotFound, UnsafePath

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20

# Runs on the complete copy of an artifact before it is stored; raises to refuse it.
Check = Callable[[Path], None]


class ArtifactStore:
    """Files addressed by the sha256 of their content, under one root directory.

    Directories are created on the first write, so a replica that only reads never needs write
    access to the store.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing -------------------------------------------------------------------------------

    def put_file(self, src: Path, *, check: Check | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store; return ``(sha256 hex digest, size in bytes)``.

        ``check(path)`` runs on the complete copy, which has ``src``'s file name, before it
        takes its place; when it raises, nothing is stored and the error propagates.
        """
        with open(src, "rb") as stream:
            return self._put(stream, name=Path(src).name, check=check)

    def put_bytes(
        self, data: bytes, *, name: str = "artifact", check: Check | None = None
    ) -> tuple[str, int]:
        """Store ``data``; return ``(sha256 hex digest, size in bytes)``. ``check`` as for
        :meth:`put_file`, on a copy named ``name``."""
        return self._put_chunks(
            (memoryview(data)[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)),
            name=name,
            check=check,
        )

    def _put(self, stream: BinaryIO, *, name: str, check: Check | None) -> tuple[str, int]:
        return self._put_chunks(iter(lambda: stream.read(_CHUNK), b""), name=name, check=check)

    def _put_chunks(
        self,
        chunks: Iterator[bytes | memoryview],
        *,
        name: str = "artifact",
        check: Check | None = None,
    ) -> tuple[str, int]:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        # A directory of its own per write (mkdir fails if it exists), so the copy can keep the
        # source's name: what a check says about it names the user's file, not a digest.
        work = tmp_dir / f"{secrets.token_hex(8)}.part"
        work.mkdir(mode=0o700)
        tmp = work / (name if name not in ("", ".", "..") and "/" not in name else "artifact")
        digest = hashlib.sha256()
        size = 0
        # O_EXCL: never write through a file (or symlink) someone else put there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if check is not None:
                check(tmp)
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
        finally:
            # The copy was moved into place, or is discarded (a failed write or check); a
            # check may leave files of its own beside it.
            shutil.rmtree(work, ignore_errors=True)

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
