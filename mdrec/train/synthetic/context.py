"""`context` (LLMCDSR): synthetic items are only read, never predicted.

They enter what a model reads about the user (SASRec's history, LightGCN's graph, EMCDR's active
domains) and never the loss, so a wrong synthetic item can shape a user's representation but the
model is never taught to rank it: the training dataset holds real rows only.
"""

from __future__ import annotations

from mdrec.train.synthetic.base import SyntheticMode


class Context(SyntheticMode):
    name = "context"

    def describe(self) -> str:
        return "synthetic rows are read as context only, never targets of the loss"
