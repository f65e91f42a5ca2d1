"""Write a tiny llama-architecture GGUF model: random weights, its own small vocabulary.

Nothing is downloaded: the file is built from scratch with the ``gguf`` package, so the GGUF
runtime is tested against a real llama.cpp load and real generation in well under a second.
The model is meaningless but deterministic: greedy decoding gives the same text every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "a",
    "mat",
    "hat",
    "big",
    "small",
    "red",
    "blue",
    "and",
    "then",
    "slept",
    "ate",
    "fish",
    "bird",
    "sang",
    "tree",
    "under",
    "over",
    "sun",
    "moon",
]

EMBED, LAYERS, HEADS, FFN, CONTEXT = 32, 2, 4, 64, 512


def write_tiny_llama(path: Path, *, seed: int = 0) -> Path:
    """Write the model to ``path`` and return it."""
    import gguf

    rng = np.random.default_rng(seed)
    # SentencePiece-style vocabulary: control tokens, the 256 byte-fallback tokens, words.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    tokens += ["\u2581" + word for word in WORDS]
    types += [gguf.TokenType.NORMAL] * len(WORDS)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(WORDS))]
    vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def weights(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, size=shape).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(vocab, EMBED))
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(EMBED, EMBED))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FFN, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FFN, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(EMBED, FFN))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, np.float32))
    output = weights(vocab, EMBED)
    # Control and byte tokens get zero logits while some word's is almost surely positive, so
    # greedy generation never stops early at </s> and always decodes to whole words.
    output[: 3 + 256] = 0.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
