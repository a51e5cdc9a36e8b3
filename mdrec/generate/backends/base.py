"""The backend contract: a batch of user contexts in, candidates ranked with scores out.

Every backend is a Ray Data stage over the contexts dataset (see `mdrec.generate.contexts`)
that returns one row per context with RESULT_SCHEMA. `chosen` only ever holds items of that
context's `candidates`: backends choose or rank positions in the candidate list, and positions
are mapped back to item indices here, so nothing a model writes can name another item.

A scoring backend returns its whole ranking of the candidates (the stage writes the best
`per_user` as rows and measures the rest against held-out items, see quality.py); a choosing one
returns its picks. `rejected` is the candidate the backend finds least likely (the lowest-scored,
or the one an LLM names), the negative of an LLMRec-style (preferred, rejected) pair; -1: none.
"""

from __future__ import annotations

import hashlib
import json
import numpy as np
import pyarrow as pa

RESULT_SCHEMA = pa.schema([
    ("context_id", pa.int64()), ("shard", pa.int64()), ("protocol", pa.string()), ("user_idx", pa.int64()),
    ("user_id", pa.string()), ("target_idx", pa.int64()),
    ("chosen", pa.list_(pa.int64())),  # item_idx, best first, each one of the context's candidates
    ("scores", pa.list_(pa.float64())),  # the backend's score of each chosen item
    ("problems", pa.list_(pa.string())),  # reasons this context's answer was (partly) unusable
    ("prompt_sha", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("generated_tokens", pa.int64()),
    ("candidates", pa.list_(pa.int64())),  # the context's candidates, as it listed them
    ("candidate_popularity", pa.list_(pa.int64())),  # their training counts (the quality's popularity floor)
    ("rejected", pa.int64()),  # item_idx of the least likely candidate, never one of the picks; -1: none
])

PASSTHROUGH = ["context_id", "shard", "protocol", "user_idx", "user_id", "target_idx", "candidates",
               "candidate_popularity"]


def context_sha(history_items, candidates) -> str:
    """The provenance key of a non-LLM backend's input (an LLM backend hashes its prompt text)."""
    text = json.dumps({"history": list(map(int, history_items)), "candidates": list(map(int, candidates))})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ranking(items, scores, per_user: int) -> tuple[list[int], list[float], int]:
    """Items with a finite score, best first, their scores, and the rejected one (the lowest,
    when there are more than `per_user`, so it is never a pick; else -1).

    Ties keep the candidate order, which is a seeded shuffle: no bias toward retrieval rank.
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    order = [i for i in np.argsort(-np.where(finite, s, -np.inf), kind="stable") if finite[i]]
    ranked = [int(items[i]) for i in order]
    return ranked, [float(s[i]) for i in order], ranked[-1] if len(ranked) > per_user else -1


def with_popularity_prior(candidates, popularity, ranked, scores, prior: float,
                          per_user: int) -> tuple[list[int], list[float], int]:
    """A scoring backend's ranking again, each score plus `prior` x log(1 + the item's training
    count): relevance times a popularity prior, in log space. Same return as `ranking`."""
    count = dict(zip(map(int, candidates), popularity))
    score_of = {int(i): float(s) for i, s in zip(ranked, scores)}
    items = [int(i) for i in candidates if int(i) in score_of]  # list order, so ties stay unbiased
    return ranking(items, [score_of[i] + prior * np.log1p(count[i]) for i in items], per_user)


def ranked_results(batch: pa.Table, scores: list[np.ndarray], per_user: int, *, shas: list[str] | None = None,
                   problems: list[list[str]] | None = None, prompt_tokens=None, generated_tokens=None) -> pa.Table:
    """Results of score-type backends: each context's whole candidate ranking (see `ranking`)."""
    candidates = batch["candidates"].to_pylist()
    chosen, kept_scores, rejected = [], [], []
    for cands, s in zip(candidates, scores):
        ranked, ranked_scores, worst = ranking(cands, s, per_user)
        chosen.append(ranked)
        kept_scores.append(ranked_scores)
        rejected.append(worst)
    n = batch.num_rows
    if shas is None:
        shas = [context_sha(h, c) for h, c in zip(batch["history_items"].to_pylist(), candidates)]
    return result_table(batch, chosen, kept_scores, problems or [[] for _ in range(n)], shas,
                        prompt_tokens if prompt_tokens is not None else [0] * n,
                        generated_tokens if generated_tokens is not None else [0] * n, rejected)


def result_table(batch: pa.Table, chosen, scores, problems, shas, prompt_tokens, generated_tokens,
                 rejected) -> pa.Table:
    columns = {c: batch[c] for c in PASSTHROUGH}
    columns.update(chosen=pa.array(chosen, pa.list_(pa.int64())), scores=pa.array(scores, pa.list_(pa.float64())),
                   problems=pa.array(problems, pa.list_(pa.string())), prompt_sha=pa.array(shas, pa.string()),
                   prompt_tokens=pa.array(prompt_tokens, pa.int64()),
                   generated_tokens=pa.array(generated_tokens, pa.int64()), rejected=pa.array(rejected, pa.int64()))
    return pa.table({name: columns[name] for name in RESULT_SCHEMA.names}, schema=RESULT_SCHEMA)
