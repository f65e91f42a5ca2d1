"""The GGUF runtime: text generation with llama.cpp (llama-cpp-python) behind ``Runtime``.

llama-cpp-python is an optional extra (``pip install llama-cpp-python==0.3.36``; it builds
llama.cpp from source) imported only here. The signature is fixed: one BYTES input ``prompt``
(one prompt per row) and one BYTES output ``text`` (the completion per row), so a V2 client
sends a BYTES tensor and ``/predict`` takes ``{"instances": ["a prompt", ...]}``.

Generation is greedy (temperature 0, top-k 1), so the same prompt always gives the same text
and a served completion can be compared with llama.cpp's own. Two limits bound the work one
request can cause: ``max_tokens`` per prompt, and ``timeout_s`` per batch, checked after every
generated token; a batch over its time is stopped and reported as ``DeadlineExceeded``. A
request may ask for fewer tokens per prompt: the optional ``max_tokens`` row parameter (see
``base.RowParameter``), capped by the runtime's own ``max_tokens``.
A llama.cpp context is not thread-safe, so batches run one at a time per loaded model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slipway.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    UnsupportedFormat,
)
from slipway.registry.records import Signature, TensorSpec
from slipway.runtimes.base import RowParameter
from slipway.runtimes.extras import import_extra

FORMAT = "gguf"
MAGIC = b"GGUF"
SIGNATURE = Signature(
    inputs=[TensorSpec(name="prompt", datatype="BYTES", shape=[-1])],
    outputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
)


def is_gguf_file(path: Path) -> bool:
    """Whether ``path`` starts with the GGUF magic bytes."""
    try:
        with Path(path).open("rb") as stream:
            return stream.read(4) == MAGIC
    except OSError:
        return False


class GgufRuntime:
    """A loaded GGUF model generating text greedily, one batch at a time."""

    signature: Signature = SIGNATURE

    def __init__(
        self,
        llama: Any,
        *,
        max_tokens: int,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._llama: Any | None = llama
        self.max_tokens = max_tokens
        self.parameters = {
            "max_tokens": RowParameter(minimum=1, maximum=max_tokens, setting="SLIPWAY_MAX_TOKENS")
        }
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._llama_cpp = import_extra(FORMAT)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        threads: int = 1,
        context_tokens: int = 512,
        max_tokens: int = 64,
        timeout_s: float = 30.0,
    ) -> GgufRuntime:
        """Load the GGUF file at ``path`` on the CPU with a ``context_tokens`` window."""
        llama_cpp = import_extra(FORMAT)
        path = Path(path)
        if not is_gguf_file(path):
            raise UnsupportedFormat(f"{path.name} is not a GGUF file (no GGUF magic bytes)")
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context_tokens,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=0,
                seed=0,
                verbose=False,
            )
        except Exception as exc:  # llama-cpp-python raises ValueError, RuntimeError, ...
            raise UnsupportedFormat(
                f"llama.cpp cannot load {path.name} ({type(exc).__name__}: {exc}); check that"
                " the file is a complete GGUF model of an architecture llama.cpp supports"
            ) from exc
        return cls(llama, max_tokens=max_tokens, timeout_s=timeout_s)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Complete each prompt in ``inputs["prompt"]``, each with at most its row's
        ``inputs["max_tokens"]`` tokens (default and cap: the runtime's ``max_tokens``);
        returns ``{"text": completions}``."""
        prompts = inputs.get("prompt")
        if prompts is None or not set(inputs) <= {"prompt", "max_tokens"}:
            raise InvalidInput(f"the model takes one input 'prompt'; got [{', '.join(inputs)}]")
        texts = [_text(value) for value in np.asarray(prompts, dtype=object).ravel()]
        limits = self._limits(inputs.get("max_tokens"), len(texts))
        with self._lock:
            llama = self._llama
            if llama is None:
                raise ModelNotReady("the model was unloaded; load it again before predicting")
            deadline = self._clock() + self.timeout_s
            out = np.empty(len(texts), dtype=object)
            out[:] = [
                self._complete(llama, text, deadline, limit)
                for text, limit in zip(texts, limits, strict=True)
            ]
        return {"text": out.reshape(np.shape(prompts))}

    def _limits(self, asked: np.ndarray | None, rows: int) -> list[int]:
        if asked is None:
            return [self.max_tokens] * rows
        values = np.asarray(asked).ravel()
        if values.shape != (rows,) or values.dtype.kind not in "iu":
            raise InvalidInput(f"max_tokens must be one whole number per prompt ({rows})")
        bad = values[(values < 1) | (values > self.max_tokens)]
        if bad.size:
            raise InvalidInput(
                f"max_tokens must be from 1 to this server's limit of {self.max_tokens}"
                f" (SLIPWAY_MAX_TOKENS); got {int(bad[0])}"
            )
        return [int(v) for v in values]

    def _complete(self, llama: Any, prompt: str, deadline: float, max_tokens: int) -> str:
        llama.reset()  # no cached state from the previous prompt: same prompt, same text
        overdue = [False]

        def stop(_tokens: Any, _logits: Any) -> bool:
            overdue[0] = self._clock() > deadline
            return overdue[0]

        try:
            result = llama.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=0.0,
                top_k=1,
                seed=0,
                stopping_criteria=self._llama_cpp.StoppingCriteriaList([stop]),
            )
        except ValueError as exc:  # "Requested tokens exceed context window" and similar
            raise InvalidInput(f"the prompt cannot be completed: {exc}") from exc
        except Exception as exc:  # llama.cpp failures surface as RuntimeError and friends
            raise InferenceFailed(f"llama.cpp failed while generating: {exc}") from exc
        if overdue[0] or self._clock() > deadline:
            raise DeadlineExceeded(self.timeout_s)
        return str(result["choices"][0]["text"])

    def unload(self) -> None:
        """Free the llama.cpp context once the running batch (if any) is done."""
        with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"a prompt is not valid UTF-8: {exc}") from exc
    if isinstance(value, str):
        return value
    raise InvalidInput(f"prompts must be text; got {type(value).__name__}")
