"""Training modes for synthetic rows, found by name (`train.synthetic.modes[].name`).

One module per mode; each declares its parameters beside its code. See base.py for what a mode
decides (the loss, the context) and the README's "Training modes" table for which models each
mode changes.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mdrec.train.synthetic.base import ModeParams, SyntheticMode
from mdrec.train.synthetic.context import Context
from mdrec.train.synthetic.label import Label
from mdrec.train.synthetic.pairwise import Pairwise
from mdrec.train.synthetic.pretrain import Pretrain
from mdrec.train.synthetic.soft import Soft

MODES: dict[str, type[SyntheticMode]] = {m.name: m for m in (Label, Context, Pretrain, Pairwise, Soft)}


def build_mode(name: str, params: dict[str, Any] | None = None) -> SyntheticMode:
    """The mode `name` with its parameters validated; ValueError in one line otherwise."""
    if name not in MODES:
        raise ValueError(f"unknown synthetic training mode {name!r} (known: {', '.join(MODES)})")
    cls = MODES[name]
    try:
        return cls(cls.Params(**(params or {})))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"mode {name!r}: params.{where}: {first['msg']}") from None


__all__ = ["MODES", "ModeParams", "SyntheticMode", "build_mode"]
