"""Generate refuses, before any work, a backend or candidate pool that reads titles on a domain with none."""

from __future__ import annotations

import pandas as pd
import pytest

from mdrec.config import MdrecConfig
from mdrec.errors import DataError
from mdrec.generate.titles import check_titles

DOMAINS = pd.DataFrame({"domain_idx": [0, 1], "domain": ["Books", "Music"]})


def config(backend: dict, candidates: dict | None = None) -> MdrecConfig:
    generate = {"backend": backend, "candidates": candidates or {"size": 10, "popular": 10}}
    return MdrecConfig.model_validate({"name": "t", "data": {"source": {"type": "world"}}, "generate": generate})


def items(books_titles: list, music_titles: list) -> pd.DataFrame:
    return pd.DataFrame({"domain_idx": [0] * len(books_titles) + [1] * len(music_titles),
                         "title": books_titles + music_titles})


def test_a_title_reader_on_a_target_domain_without_titles_fails_naming_it():
    with pytest.raises(DataError) as err:
        check_titles(config({"type": "semantic"}), items(["A", "B"], [None, "", "  "]), DOMAINS, [1], "items.parquet")
    message = str(err.value)
    assert "\n" not in message and "'Music'" in message and "3 of 3 items lack a title" in message
    assert "generate.backend (semantic)" in message and "cooccurrence" in message


def test_a_backend_reading_histories_needs_some_source_titles():
    with pytest.raises(DataError, match=r"source domains \('Books'\) have none \(2 of 2"):
        check_titles(config({"type": "semantic"}), items([None, None], ["x"]), DOMAINS, [1], "items.parquet")


def test_title_similar_candidates_need_target_titles_even_with_a_backend_that_reads_none():
    cfg = config({"type": "popularity"}, {"size": 10, "popular": 5})
    with pytest.raises(DataError, match="generate.candidates"):
        check_titles(cfg, items(["A"], [None]), DOMAINS, [1], "items.parquet")
    check_titles(cfg, items([None], ["x"]), DOMAINS, [1], "items.parquet")  # source titles are not read


def test_backends_that_read_no_titles_and_partly_titled_domains_pass():
    check_titles(config({"type": "popularity"}), items([None], [None]), DOMAINS, [1], "items.parquet")
    check_titles(config({"type": "semantic"}), items(["A", None], [None, "x"]), DOMAINS, [1], "items.parquet")
