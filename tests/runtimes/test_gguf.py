"""GGUF: a tiny llama model built here, registered, served as text generation via llama.cpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slipway.errors import DeadlineExceeded, InvalidInput, UnsupportedFormat
from slipway.local import Registry
from slipway.runtimes.base import RuntimeOptions, load_runtime
from slipway.runtimes.detect import detect_format
from slipway.runtimes.gguf import GgufRuntime
from tests.runtimes.frameworks import require
from tests.runtimes.serve import make_settings, serving, v2_infer

llama_cpp = require("llama_cpp")
require("gguf")

from tests.runtimes.tiny_llama import write_tiny_llama  # noqa: E402  (needs gguf)

PROMPTS = ["the cat sat on", "a big red dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _llama_cpp_text(path: Path, prompt: str, max_tokens: int) -> str:
    """What llama.cpp itself generates, greedily, for ``prompt``."""
    llama = llama_cpp.Llama(model_path=str(path), n_ctx=512, seed=0, verbose=False)
    try:
        result = llama.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1)
        return str(result["choices"][0]["text"])
    finally:
        llama.close()


def test_registered_and_served_equal_to_llama_cpp(tiny: Path, tmp_path: Path) -> None:
    assert detect_format(tiny) == "gguf"
    settings = make_settings(tmp_path / "home", max_tokens=6)
    with Registry(settings) as registry:
        record = registry.register_model("tiny", tiny)
        assert record.format == "gguf"
        assert record.meta.tags["framework"] == f"llama_cpp:{llama_cpp.__version__}"
        assert [(s.name, s.datatype) for s in record.signature.inputs] == [("prompt", "BYTES")]
        assert [(s.name, s.datatype) for s in record.signature.outputs] == [("text", "BYTES")]
        with serving(registry, "tiny", record.number) as client:
            outputs = v2_infer(
                client,
                "tiny",
                [{"name": "prompt", "datatype": "BYTES", "shape": [2], "data": PROMPTS}],
            )
            predicted = client.post("/predict/tiny", json={"instances": PROMPTS[:1]})
            wrong = client.post(
                "/v2/models/tiny/infer",
                json={
                    "inputs": [{"name": "prompt", "datatype": "FP32", "shape": [1], "data": [1]}]
                },
            )
            still = client.post("/predict/tiny", json={"instances": PROMPTS[1:]})

    expected = [_llama_cpp_text(tiny, prompt, 6) for prompt in PROMPTS]
    assert all(expected), "the tiny model should always generate some words"
    assert outputs["text"]["datatype"] == "BYTES"
    assert outputs["text"]["shape"] == [2]
    assert outputs["text"]["data"] == expected
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"] == expected[:1]
    assert wrong.status_code == 400 and "prompt" in wrong.json()["error"]
    assert still.status_code == 200 and still.json()["predictions"] == expected[1:]


def test_max_tokens_bounds_each_completion(tiny: Path) -> None:
    short = load_runtime("gguf", tiny, options=RuntimeOptions(max_tokens=3))
    long = load_runtime("gguf", tiny, options=RuntimeOptions(max_tokens=12))
    try:
        prompts = np.array([p.encode() for p in PROMPTS], dtype=object)
        three = short.predict({"prompt": prompts})["text"]
        twelve = long.predict({"prompt": prompts})["text"]
    finally:
        short.unload()
        long.unload()
    for few, many, prompt in zip(three, twelve, PROMPTS, strict=True):
        assert few == _llama_cpp_text(tiny, prompt, 3)
        assert len(few.split()) == 3  # each vocabulary word is one token: three tokens, 3 words
        assert len(many.split()) == 12
        assert many.startswith(few)


def test_generation_over_its_time_is_stopped(tiny: Path) -> None:
    # A clock that jumps one second per reading: the deadline passes after the first token.
    ticks = iter(range(10_000))
    llama = llama_cpp.Llama(model_path=str(tiny), n_ctx=512, seed=0, verbose=False)
    runtime = GgufRuntime(llama, max_tokens=50, timeout_s=2.0, clock=lambda: float(next(ticks)))
    try:
        with pytest.raises(DeadlineExceeded, match="within 2s"):
            runtime.predict({"prompt": np.array(["the cat"], dtype=object)})
        assert next(ticks) < 10, "generation should stop within a few tokens of the deadline"
    finally:
        runtime.unload()


def test_prompt_longer_than_the_context_is_refused(tiny: Path) -> None:
    runtime = load_runtime("gguf", tiny, options=RuntimeOptions(context_tokens=64, max_tokens=4))
    try:
        with pytest.raises(InvalidInput, match="cannot be completed"):
            runtime.predict({"prompt": np.array(["the cat " * 200], dtype=object)})
        assert runtime.predict({"prompt": np.array(["the cat"], dtype=object)})["text"][0]
    finally:
        runtime.unload()


def test_a_file_without_the_gguf_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"NOPE" + bytes(60))
    with pytest.raises(UnsupportedFormat, match="not a GGUF file"):
        load_runtime("gguf", path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + bytes(12))
    with pytest.raises(UnsupportedFormat, match="llama.cpp cannot load truncated.gguf"):
        load_runtime("gguf", truncated)


def test_each_request_may_ask_for_fewer_tokens_up_to_the_servers_limit(
    tiny: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "home", max_tokens=8)
    with Registry(settings) as registry:
        record = registry.register_model("tiny", tiny)
        with serving(registry, "tiny", record.number) as client:
            prompt = {"name": "prompt", "datatype": "BYTES", "shape": [2], "data": PROMPTS}
            short = client.post(
                "/v2/models/tiny/infer",
                json={"inputs": [prompt], "parameters": {"max_tokens": 2}},
            )
            default = v2_infer(client, "tiny", [prompt])
            plain = client.post("/predict/tiny", json={"instances": PROMPTS, "max_tokens": 3})
            over = client.post(
                "/v2/models/tiny/infer",
                json={"inputs": [prompt], "parameters": {"max_tokens": 9}},
            )
            plain_over = client.post(
                "/predict/tiny", json={"instances": PROMPTS[:1], "max_tokens": 500}
            )
            zero = client.post("/predict/tiny", json={"instances": PROMPTS, "max_tokens": 0})
            text = client.post(
                "/v2/models/tiny/infer",
                json={"inputs": [prompt], "parameters": {"max_tokens": "many"}},
            )
            after = client.post("/predict/tiny", json={"instances": PROMPTS[:1]})

    assert short.status_code == 200, short.text
    two = [_llama_cpp_text(tiny, p, 2) for p in PROMPTS]
    assert short.json()["outputs"][0]["data"] == two
    assert [len(t.split()) for t in two] == [2, 2]  # one word per token in this vocabulary
    # Without the parameter, the server's limit applies, as before.
    assert default["text"]["data"] == [_llama_cpp_text(tiny, p, 8) for p in PROMPTS]
    assert plain.status_code == 200, plain.text
    assert plain.json()["predictions"] == [_llama_cpp_text(tiny, p, 3) for p in PROMPTS]
    for response, asked in ((over, 9), (plain_over, 500)):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert f"max_tokens {asked} is over this server's limit of 8" in error
        assert "SLIPWAY_MAX_TOKENS" in error
    assert zero.status_code == 400 and "at least 1" in zero.json()["error"]
    assert text.status_code == 400 and "whole number" in text.json()["error"]
    assert after.status_code == 200  # refused requests never reached a batch


def test_the_runtime_takes_one_limit_per_prompt(tiny: Path) -> None:
    runtime = load_runtime("gguf", tiny, options=RuntimeOptions(max_tokens=6))
    try:
        prompts = np.array([p.encode() for p in PROMPTS], dtype=object)
        texts = runtime.predict({"prompt": prompts, "max_tokens": np.array([1, 4], np.int32)})
        assert [len(t.split()) for t in texts["text"]] == [1, 4]
        with pytest.raises(InvalidInput, match="limit of 6"):
            runtime.predict({"prompt": prompts, "max_tokens": np.array([7, 1], np.int32)})
    finally:
        runtime.unload()
