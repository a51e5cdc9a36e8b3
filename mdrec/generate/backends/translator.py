"""The translator backend: the non-LLM SCALR reference, P(target item | source history).

A two-tower model per (protocol, target domain), learned from the users active in both the
target and another domain under that protocol (so held-out cold-start rows are never seen):
the user tower averages embeddings of the user's recent source-domain items and maps them
through an MLP; the item tower is an embedding plus a bias over the target domain's items.
Training maximises the softmax likelihood of each user's target items over the whole target
domain. It runs as one Ray task per (protocol, target); the scorer actors then hold the weights.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from mdrec.data.schema import Protocol
from mdrec.generate.backends.base import ranked_results
from mdrec.generate.histories import FlatHistories


class TwoTower(nn.Module):
    def __init__(self, num_items: int, target_size: int, dim: int):
        super().__init__()
        self.source = nn.EmbeddingBag(num_items + 1, dim, mode="mean", padding_idx=num_items)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.target = nn.Embedding(target_size, dim)
        self.bias = nn.Parameter(torch.zeros(target_size))

    def log_probs(self, history: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(users, target_size) log P(target item | history)."""
        user = self.mlp(self.source(history, offsets))
        return torch.log_softmax(user @ self.target.weight.T + self.bias, dim=1)


def translator_examples(batch: pa.Table, *, protocol: str, target: int, start: int, end: int,
                        history_per_domain: int, num_domains: int) -> pa.Table:
    """Users active in the target and elsewhere: (recent source items, target items)."""
    fh = FlatHistories(batch, Protocol(protocol))
    counts = fh.counts(num_domains)
    both = np.flatnonzero((counts[:, target] > 0) & (counts.sum(axis=1) > counts[:, target]))
    recent = fh.recent_mask(history_per_domain)
    sources, targets = [], []
    for row in both:
        s, e = np.searchsorted(fh.parent, row, "left"), np.searchsorted(fh.parent, row, "right")
        dom, items = fh.domains[s:e], fh.items[s:e]
        sources.append(items[(dom != target) & recent[s:e]].tolist())
        targets.append((items[dom == target] - start).tolist())
    return pa.table({"source": pa.array(sources, pa.list_(pa.int64())), "target": pa.array(targets, pa.list_(pa.int64()))})


def train_translator(tables: list, num_items: int, target_size: int, dim: int, epochs: int, lr: float,
                     batch_size: int, seed: int) -> dict:
    """Fit one two-tower model; returns its state (serialised tensors) and the final loss."""
    import ray

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    table = pa.concat_tables([ray.get(t) for t in tables])
    sources, targets = table["source"].to_pylist(), table["target"].to_pylist()
    model = TwoTower(num_items, target_size, dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(max(1, epochs) if sources else 0):
        order = rng.permutation(len(sources))
        total, n = 0.0, 0
        for b in range(0, len(order), batch_size):
            rows = order[b:b + batch_size]
            history, offsets = flat_batch([sources[i] for i in rows], num_items)
            user_row = np.repeat(np.arange(len(rows)), [len(targets[i]) for i in rows])
            item = np.concatenate([targets[i] for i in rows]).astype(np.int64)
            logp = model.log_probs(history, offsets)
            loss = -logp[torch.from_numpy(user_row), torch.from_numpy(item)].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(item), n + len(item)
        losses.append(total / max(n, 1))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return {"state": buf.getvalue(), "losses": losses, "users": len(sources)}


def flat_batch(histories: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [max(len(h), 1) for h in histories]
    flat = np.concatenate([h if h else [pad] for h in histories]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return torch.from_numpy(flat), torch.from_numpy(offsets)


class TranslatorScorer:
    """Ray Data actor: scores candidates with the model of each context's (protocol, target)."""

    def __init__(self, models: dict, num_items: int, dim: int, ranges: dict, target_sizes: dict, per_user: int):
        torch.set_num_threads(1)
        self.models, self.ranges, self.num_items, self.per_user = {}, ranges, num_items, per_user
        for key, state in models.items():
            model = TwoTower(num_items, target_sizes[key], dim)
            model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
            self.models[key] = model.eval()

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = [None] * batch.num_rows
        protocol, target = batch["protocol"].to_pylist(), batch["target_idx"].to_pylist()
        histories, candidates = batch["history_items"].to_pylist(), batch["candidates"].to_pylist()
        domains = batch["history_domain_idx"].to_pylist()
        for key in set(zip(protocol, target)):
            rows = [i for i in range(batch.num_rows) if (protocol[i], target[i]) == key]
            start = self.ranges[key[1]][0]
            sources = [[h for h, d in zip(histories[i], domains[i]) if d != key[1]] for i in rows]
            with torch.no_grad():
                logp = self.models[key].log_probs(*flat_batch(sources, self.num_items)).numpy()
            for j, i in enumerate(rows):
                scores[i] = logp[j, np.asarray(candidates[i], dtype=np.int64) - start]
        return ranked_results(batch, scores, self.per_user)
