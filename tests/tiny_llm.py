"""A tiny Llama model with random weights, written to disk for the LLM tests.

The tests cannot reach a model hub, so they cannot download even the smallest real model.
Instead this module writes one in Hugging Face format (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) that `vllm.LLM(model=path)` loads on CPU:

- a byte-level BPE tokenizer trained with `tokenizers` on a small built-in corpus of
  item-title-like text, digits and JSON punctuation, so titles and JSON answers tokenize
  into a few tokens each and any string (byte-level) can be encoded;
- a 2-layer Llama (hidden 64, 2 heads of 32, vocabulary 512) with random weights.

Its outputs are noise: tests can check plumbing, shapes, structured-output constraints and
log-likelihood bookkeeping, never quality. Everything is deterministic given `seed`, and a
build takes well under a second.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# "<|role|>\ncontent\n" per message, then "<|assistant|>\n" when asked for a generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_ADJECTIVES = (
    "stainless", "organic", "nonstick", "ceramic", "cast", "iron", "glass", "bamboo", "silicone",
    "large", "small", "classic", "premium", "dark", "roasted", "sweet", "spicy", "whole", "fresh",
    "red", "green", "black", "white", "gluten", "free", "sugar", "natural", "heavy", "duty",
)
_NOUNS = (
    "coffee", "tea", "chocolate", "beans", "rice", "pasta", "sauce", "oil", "honey", "salt",
    "pepper", "flour", "knife", "pan", "skillet", "pot", "kettle", "mug", "bowl", "spatula",
    "grinder", "blender", "mixer", "toaster", "set", "pack", "jar", "bottle", "box", "cookies",
    "snack", "bar", "nuts", "almonds", "cereal", "oats", "spice", "vanilla", "cinnamon", "cup",
)
_WORDS = (
    "the", "and", "with", "for", "of", "in", "a", "to", "user", "history", "items", "item",
    "candidates", "candidate", "recommend", "next", "title", "answer", "rating", "score", "ids",
    "list", "bought", "reviewed", "liked", "ounce", "oz", "inch", "count", "by", "from",
)


def _corpus(rng: random.Random) -> list[str]:
    lines: list[str] = []
    for _ in range(400):
        words = [rng.choice(_ADJECTIVES) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(_NOUNS) for _ in range(rng.randint(1, 2))]
        title = " ".join(w.capitalize() if rng.random() < 0.5 else w for w in words)
        if rng.random() < 0.4:
            title += f", {rng.randint(1, 64)} {rng.choice(('oz', 'Ounce', 'Count', 'inch', 'Pack'))}"
        lines.append(title)
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))) + ".")
    for _ in range(200):
        ids = [rng.randint(0, 9999) for _ in range(rng.randint(1, 8))]
        lines.append(json.dumps({"items": ids}, separators=(",", ":")))
        lines.append(json.dumps({"items": ids}))
        lines.append(f"{rng.randint(0, 999)}: {rng.choice(_NOUNS)} [{rng.randint(0, 99)}]")
    lines.append("0123456789 0 1 2 3 4 5 6 7 8 9 10 100 1000 [ ] { } , : \" ' - . ( ) / & ! ?")
    lines += [f"{t}\n" for t in ROLE_TOKENS]
    return lines


def _train_tokenizer(rng: random.Random, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng), trainer=trainer)
    # Prepend BOS like a real Llama tokenizer does; `add_special_tokens=False` skips it.
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def _llama_config(vocab_size: int, ids: dict[str, int]) -> dict:
    # Written by hand (not via transformers.LlamaConfig) because importing transformers alone
    # takes several seconds; transformers and vLLM fill in every key left out.
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
        "dtype": "float32",
        "torch_dtype": "float32",
    }


def _weights(config: dict, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    std = config["initializer_range"]

    def normal(*shape):
        return np.ascontiguousarray(rng.normal(0.0, std, size=shape).astype(np.float32))

    def ones(n):
        return np.ones(n, dtype=np.float32)

    w = {"model.embed_tokens.weight": normal(v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = normal(q, h)
        w[p + "self_attn.k_proj.weight"] = normal(kv, h)
        w[p + "self_attn.v_proj.weight"] = normal(kv, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, q)
        w[p + "mlp.gate_proj.weight"] = normal(inter, h)
        w[p + "mlp.up_proj.weight"] = normal(inter, h)
        w[p + "mlp.down_proj.weight"] = normal(h, inter)
        w[p + "input_layernorm.weight"] = ones(h)
        w[p + "post_attention_layernorm.weight"] = ones(h)
    w["model.norm.weight"] = ones(h)
    w["lm_head.weight"] = normal(v, h)
    return w


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def build_tiny_llm(path: str | Path, *, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write a tiny random-weight Llama plus tokenizer to `path` (created); return the path."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tok = _train_tokenizer(random.Random(seed), vocab_size)
    tok.save(str(path / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}

    config = _llama_config(tok.get_vocab_size(), ids)
    _write_json(path / "config.json", config)
    _write_json(
        path / "generation_config.json",
        {"bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[PAD]},
    )
    save_file(_weights(config, seed), str(path / "model.safetensors"), metadata={"format": "pt"})

    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
               "additional_special_tokens": list(ROLE_TOKENS)}
    _write_json(
        path / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "unk_token": None,
            "model_max_length": config["max_position_embeddings"],
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(path / "special_tokens_map.json", special)
    return path


if __name__ == "__main__":  # python tests/tiny_llm.py OUT_DIR
    import sys

    print(build_tiny_llm(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-llm"))
