"""Generate reads item titles only for some backends and candidate pools: check they are there
before any work, so a backend never selects users and writes nothing on a catalog it cannot read."""

from __future__ import annotations

import pandas as pd

from mdrec.config import MdrecConfig, SemanticBackendConfig, VllmBackendConfig
from mdrec.errors import DataError

NEED_NO_TITLES = "popularity, cooccurrence and translator"


def backend_reads_titles(cfg: MdrecConfig) -> bool:
    """The backend reads the candidates' and the user's history's titles."""
    return isinstance(cfg.generate.backend, (SemanticBackendConfig, VllmBackendConfig))


def title_similar_slots(cfg: MdrecConfig) -> bool:
    """The candidate list has slots left after the popular and co-occurring ones: title similarity fills them."""
    c = cfg.generate.candidates
    return c.size > c.popular + c.cooccurring


def title_readers(cfg: MdrecConfig) -> list[str]:
    """The parts of the generate config that read titles, as the config names them."""
    readers = [f"generate.backend ({cfg.generate.backend.type})"] if backend_reads_titles(cfg) else []
    if title_similar_slots(cfg):
        readers.append("generate.candidates (its title-similar slots)")
    return readers


def check_titles(cfg: MdrecConfig, items: pd.DataFrame, domains: pd.DataFrame, targets: list[int], where: str) -> None:
    """Fail in one line when a part of the config that reads titles meets a domain with none.

    `items`: prepared items (domain_idx, title); `targets`: the target domains' domain_idx; `where`:
    the items file, for the message. The backend reads target titles (the candidates) and the
    source domains' titles (the history); the candidates' similar slots only target titles."""
    readers = title_readers(cfg)
    if not readers:
        return
    titled = items["title"].map(lambda t: isinstance(t, str) and bool(t.strip()))
    names = dict(zip(domains["domain_idx"].astype(int), domains["domain"]))
    by_domain = items.assign(titled=titled).groupby("domain_idx")["titled"].agg(["sum", "size"])
    for d in targets:
        have, size = (int(by_domain.loc[d, "sum"]), int(by_domain.loc[d, "size"])) if d in by_domain.index else (0, 0)
        if have == 0:
            raise DataError(f"{where}: {readers[0]} reads item titles, but target domain {names[d]!r} has none "
                            f"({size:,} of {size:,} items lack a title); the {NEED_NO_TITLES} backends need no titles")
    sources = [d for d in by_domain.index if d not in targets]
    if sources and backend_reads_titles(cfg):
        have = int(by_domain.loc[sources, "sum"].sum())
        if have == 0:
            size = int(by_domain.loc[sources, "size"].sum())
            listed = ", ".join(repr(names[int(d)]) for d in sources)
            raise DataError(f"{where}: {readers[0]} reads the titles of a user's history, but the source domains "
                            f"({listed}) have none ({size:,} of {size:,} items lack a title); the {NEED_NO_TITLES} "
                            "backends need no titles")
