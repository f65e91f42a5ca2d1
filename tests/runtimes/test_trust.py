"""Pickle files are recognised without unpickling them, and refused unless trusted."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from slipway.errors import UnsupportedFormat, UntrustedArtifact
from slipway.runtimes.trust import is_pickle_file, load_pickled_estimator


class _Exploit:
    """Unpickling this creates a directory: proof that loading ran the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols_are_recognised_by_content(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=protocol))
    assert is_pickle_file(path)


@pytest.mark.parametrize(
    "compress",
    [
        pytest.param(3, id="zlib"),
        pytest.param(("gzip", 3), id="gzip"),
        pytest.param(("bz2", 3), id="bz2"),
        pytest.param(("xz", 3), id="xz"),
        pytest.param(("lzma", 3), id="lzma"),
    ],
)
def test_joblib_files_are_recognised_by_content(tmp_path: Path, compress: object) -> None:
    path = tmp_path / "model.data"
    joblib.dump({"weights": [1, 2]}, path, compress=compress)
    assert is_pickle_file(path)


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib", ".sav", ".PKL"])
def test_pickle_suffixes_are_recognised(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"")
    assert is_pickle_file(path)


def test_onnx_and_other_files_are_not_pickles(tmp_path: Path, cancer_lr_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_pickle_file(cancer_lr_path)
    assert not is_pickle_file(text)
    assert not is_pickle_file(tmp_path)  # a directory
    assert not is_pickle_file(tmp_path / "missing.onnx")


@pytest.mark.parametrize("suffix", [".pkl", ".onnx"])
def test_untrusted_pickle_is_refused_before_unpickling(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Exploit(marker)))

    with pytest.raises(UntrustedArtifact, match="trusted=True") as info:
        load_pickled_estimator(path, trusted=False)

    assert info.value.path == str(path)
    assert not marker.exists()


def test_the_exploit_really_runs_when_trusted(tmp_path: Path) -> None:
    # The control for the test above: the payload does run once the operator trusts the file.
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Exploit(marker)))

    load_pickled_estimator(path, trusted=True)

    assert marker.is_dir()


def test_trusted_estimator_loads(tmp_path: Path, iris) -> None:
    x, y = iris
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), path, compress=3)

    estimator = load_pickled_estimator(path, trusted=True)

    assert list(estimator.predict(x[:1])) == [0]


def test_trusted_garbage_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UnsupportedFormat, match="model.pkl"):
        load_pickled_estimator(path, trusted=True)
