import numpy as np
import pytest

from mdrec.config import WorldDomainConfig, WorldSourceConfig
from mdrec.data import world
from mdrec.data.schema import INTERACTIONS, ITEMS
from mdrec.errors import ConfigError


def small(**kw) -> WorldSourceConfig:
    return WorldSourceConfig(users=kw.pop("users", 600), users_per_chunk=kw.pop("users_per_chunk", 128), **kw)


def test_deterministic_by_seed():
    a_items, a = world.generate(small(), seed=3)
    b_items, b = world.generate(small(), seed=3)
    _, c = world.generate(small(), seed=4)
    assert a.equals(b) and a_items.equals(b_items)
    assert not a.equals(c)
    assert a.schema == INTERACTIONS and a_items.schema == ITEMS


def test_any_size_and_chunking_does_not_matter_for_catalog():
    cfg = small(users=1000, domains=[WorldDomainConfig(name="X", kind="games", items=5000, participation=1.0, activity=3)])
    items, inter = world.generate(cfg, seed=0)
    assert items.num_rows == 5000
    assert len(set(inter["user_id"].to_pylist())) == 1000  # participation 1.0: everyone is there
    assert len(set(items["title"].to_pylist())) == 5000  # titles stay unique (sequels, volumes)


def test_domains_have_very_different_density():
    _, inter = world.generate(small(users=2000), seed=0)
    df = inter.to_pandas()
    per = df.groupby("domain").size()
    # Expected volumes: 0.9 x 14 : 0.6 x 8 : 0.3 x 4 per user.
    assert per["Books"] > 2 * per["Movies"]
    assert per["Movies"] > 3 * per["Music"]


def test_titles_reflect_the_item_theme():
    cfg = small()
    cat = world.make_catalog(cfg, seed=0)
    words = list(world.THEMES.values())
    titles = cat.items["title"].to_pylist()
    for title, theme in zip(titles, cat.themes):
        assert any(w in title for w in words[theme]), title


def test_a_users_taste_carries_across_domains():
    """A user's favourite theme in one domain predicts it in another, far above chance."""
    cfg = small(users=1500, users_per_chunk=256)
    cat = world.make_catalog(cfg, seed=1)
    _, inter = world.generate(cfg, seed=1)
    df = inter.to_pandas()
    theme_of = dict(zip(cat.items["item_id"].to_pylist(), cat.themes))
    df["theme"] = df["item_id"].map(theme_of)
    top = df.groupby(["user_id", "domain"])["theme"].agg(lambda s: s.value_counts().idxmax()).unstack()
    both = top.dropna(subset=["Books", "Movies"])
    agreement = (both["Books"] == both["Movies"]).mean()
    assert len(both) > 300
    assert agreement > 0.4 > 3 / len(world.THEMES)  # chance would be 1/12


def test_missing_titles_rate():
    cat = world.make_catalog(small(missing_title_rate=0.3), seed=0)
    share = cat.items["title"].null_count / cat.items.num_rows
    assert 0.2 < share < 0.4


def test_one_interaction_per_user_and_item():
    _, inter = world.generate(small(), seed=0)
    df = inter.to_pandas()
    assert not df.duplicated(["user_id", "item_id"]).any()


def test_unknown_kind_and_duplicate_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown kind 'poems'"):
        world.make_catalog(small(domains=[WorldDomainConfig(name="P", kind="poems", items=5, participation=1, activity=1)]), 0)
    twice = [WorldDomainConfig(name="A", kind="books", items=5, participation=1, activity=1)] * 2
    with pytest.raises(ConfigError, match="duplicate domain names"):
        world.make_catalog(small(domains=twice), 0)


def test_user_tastes_are_distributions():
    t = world.user_tastes(small(), seed=0, chunk=1)
    assert t.shape == (128, len(world.THEMES))
    assert np.allclose(t.sum(axis=1), 1.0)
