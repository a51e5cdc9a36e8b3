"""`world`: a generated multi-domain data set with a known truth, for the demo and the tests.

Every user has a taste: a sparse mix over a set of themes (space, ocean, mystery, ...). Every
item belongs to one theme and its title is built from that theme's words, in the style of its
domain ("The Nebula Orbit" is a space book, "Nebula Sessions" a space album). A user's
interactions in every domain follow the same taste, so a model (or an LLM reading titles) can
carry what a user likes from a rich domain into a sparse one. Domains differ in how many users
visit them and how active those users are, so some domains are dense and some are cold.

Output is a pure function of (config, seed): users are generated in fixed chunks, each from its
own random stream, so the result does not depend on how the work is split across workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mdrec.config import WorldDomainConfig, WorldSourceConfig
from mdrec.data.schema import INTERACTIONS, ITEMS

THEMES: dict[str, list[str]] = {
    "space": ["Star", "Galaxy", "Nebula", "Orbit", "Rocket", "Comet", "Cosmos", "Astronaut", "Moonbase", "Quasar"],
    "ocean": ["Ocean", "Tide", "Coral", "Harbor", "Sailor", "Reef", "Wave", "Lighthouse", "Mariner", "Lagoon"],
    "forest": ["Forest", "Pine", "Moss", "Fern", "Oak", "Woodland", "Cedar", "Wildwood", "Acorn", "Grove"],
    "city": ["City", "Neon", "Subway", "Skyline", "Downtown", "Metro", "Avenue", "Rooftop", "Taxi", "Boulevard"],
    "mystery": ["Shadow", "Secret", "Cipher", "Midnight", "Clue", "Alibi", "Detective", "Whisper", "Riddle", "Enigma"],
    "romance": ["Heart", "Kiss", "Rose", "Valentine", "Darling", "Moonlight", "Sweetheart", "Promise", "Honey", "Embrace"],
    "history": ["Empire", "Crown", "Castle", "Dynasty", "Legion", "Pharaoh", "Knight", "Kingdom", "Samurai", "Viking"],
    "comedy": ["Giggle", "Silly", "Banana", "Prank", "Goofy", "Clown", "Pickle", "Noodle", "Blunder", "Wisecrack"],
    "horror": ["Ghost", "Crypt", "Haunted", "Zombie", "Nightmare", "Vampire", "Grave", "Phantom", "Werewolf", "Cursed"],
    "sports": ["Champion", "Goal", "Marathon", "Stadium", "Victory", "Rally", "Slam", "Trophy", "Sprint", "Playoff"],
    "desert": ["Desert", "Dune", "Cactus", "Mirage", "Oasis", "Canyon", "Sandstorm", "Mesa", "Scorpion", "Caravan"],
    "winter": ["Snow", "Frost", "Glacier", "Blizzard", "Icicle", "Tundra", "Aurora", "Sleigh", "Polar", "Flurry"],
}

# Title templates per domain kind; {a} and {b} are words of the item's theme.
TEMPLATES: dict[str, list[str]] = {
    "books": ["The {a} {b}", "{a} of the {b}", "A {a} Story", "The {a} Chronicles", "Tales of the {a}", "{a} and {b}"],
    "movies": ["{a} {b}", "Return to {a}", "{a}: The Movie", "Escape from {a}", "The Last {a}", "{a} Rising"],
    "music": ["{a} Sessions", "Songs of the {a}", "{a} {b} (Live)", "{a} Nights", "Greatest {a} Hits", "{a} Lullabies"],
    "food": ["{a} Hot Sauce", "{a} Herbal Tea", "{a} Cookies", "{a} Dark Chocolate", "{a} Granola", "{a} {b} Coffee Blend"],
    "kitchen": ["{a} Coffee Mug", "{a} Cast Iron Skillet", "{a} Apron", "{a} Teapot", "{a} Cutting Board", "{a} {b} Bowl Set"],
    "games": ["{a} {b} Adventure", "Super {a}", "{a} Quest", "{a} Tactics", "{a} Racers", "Legend of the {a}"],
}
SEQUELS = ["", " II", " III", " IV", " V", " VI", " VII", " VIII", " IX", " X"]
START_TIME = 1_600_000_000  # 2020-09-13, the world's first day
TIME_SPAN = 2 * 365 * 86_400


@dataclass(frozen=True)
class WorldCatalog:
    """Items of every domain, with the truth the generator used."""

    items: pa.Table  # ITEMS schema
    themes: np.ndarray  # theme index of each item, aligned with `items`
    domain_offsets: list[int]  # first row of each domain in `items`, plus the total at the end
    theme_cdfs: list[list[np.ndarray]]  # [domain][theme] -> cumulative popularity over that theme's items
    theme_members: list[list[np.ndarray]]  # [domain][theme] -> item rows (global) of that theme


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, *stream])


def _check_kind(domain: WorldDomainConfig) -> None:
    if domain.kind not in TEMPLATES:
        from mdrec.errors import ConfigError

        raise ConfigError(
            f"data.source.domains: domain '{domain.name}' has unknown kind '{domain.kind}'"
            f" (known: {', '.join(TEMPLATES)})"
        )


def make_catalog(cfg: WorldSourceConfig, seed: int) -> WorldCatalog:
    names = [d.name for d in cfg.domains]
    if len(set(names)) != len(names):
        from mdrec.errors import ConfigError

        raise ConfigError(f"data.source.domains: duplicate domain names in {names}")
    n_themes = len(THEMES)
    theme_words = list(THEMES.values())
    ids, domains, titles, themes = [], [], [], []
    offsets, cdfs, members = [0], [], []
    for d_i, dom in enumerate(cfg.domains):
        _check_kind(dom)
        rng = _rng(seed, 1, d_i)
        # Balanced themes, shuffled, so every theme exists in every domain of fair size.
        item_theme = np.resize(np.arange(n_themes), dom.items)
        rng.shuffle(item_theme)
        seen: dict[str, int] = {}
        templates = TEMPLATES[dom.kind]
        missing = rng.random(dom.items) < cfg.missing_title_rate
        for i, th in enumerate(item_theme):
            words = theme_words[th]
            a, b = rng.choice(len(words), size=2, replace=False)
            base = templates[rng.integers(len(templates))].format(a=words[a], b=words[b])
            k = seen.get(base, 0)
            seen[base] = k + 1
            title = base + (SEQUELS[k] if k < len(SEQUELS) else f" Vol. {k + 1}")
            ids.append(f"{dom.name.lower()}-{i:06d}")
            titles.append(None if missing[i] else title)
        domains += [dom.name] * dom.items
        themes.append(item_theme)
        offset = offsets[-1]
        dom_cdfs, dom_members = [], []
        for th in range(n_themes):
            rows = np.flatnonzero(item_theme == th)
            rng.shuffle(rows)  # popularity rank inside the theme is random, not by item id
            weights = 1.0 / np.power(np.arange(1, len(rows) + 1), cfg.popularity_skew)
            dom_cdfs.append(np.cumsum(weights) / weights.sum() if len(rows) else np.zeros(0))
            dom_members.append(rows + offset)
        cdfs.append(dom_cdfs)
        members.append(dom_members)
        offsets.append(offset + dom.items)
    items = pa.table([ids, domains, titles], schema=ITEMS)
    return WorldCatalog(items, np.concatenate(themes), offsets, cdfs, members)


def user_tastes(cfg: WorldSourceConfig, seed: int, chunk: int) -> np.ndarray:
    """Taste vectors (users x themes) of one chunk of users."""
    first = chunk * cfg.users_per_chunk
    n = max(0, min(cfg.users, first + cfg.users_per_chunk) - first)
    return _rng(seed, 2, chunk).dirichlet(np.full(len(THEMES), cfg.taste_concentration), size=n)


def tastes_of(cfg: WorldSourceConfig, seed: int, user_ids: list[str]) -> np.ndarray:
    """True taste vectors (len(user_ids) x themes) of world users, by user id ("u" + the
    zero-padded user number, as generate_chunk writes it); each chunk's tastes are drawn once."""
    numbers = np.array([int(u[1:]) for u in user_ids], dtype=np.int64)
    chunks = numbers // cfg.users_per_chunk
    out = np.empty((len(numbers), len(THEMES)))
    for chunk in np.unique(chunks):
        rows = chunks == chunk
        out[rows] = user_tastes(cfg, seed, int(chunk))[numbers[rows] - chunk * cfg.users_per_chunk]
    return out


def item_themes(catalog: WorldCatalog, item_ids: list[str]) -> np.ndarray:
    """The theme of each item id, -1 for an id the world's catalog does not have."""
    theme_of = dict(zip(catalog.items["item_id"].to_pylist(), catalog.themes.tolist()))
    return np.array([theme_of.get(i, -1) for i in item_ids], dtype=np.int64)


def generate_chunk(cfg: WorldSourceConfig, seed: int, catalog: WorldCatalog, chunk: int) -> pa.Table:
    """Interactions of users [chunk*users_per_chunk, ...) in the INTERACTIONS schema."""
    first = chunk * cfg.users_per_chunk
    n = max(0, min(cfg.users, first + cfg.users_per_chunk) - first)
    if n == 0:
        return INTERACTIONS.empty_table()
    n_themes = len(THEMES)
    taste = user_tastes(cfg, seed, chunk)
    rng = _rng(seed, 3, chunk)
    # How active a user is overall, shared across domains (heavy users are heavy everywhere).
    vigor = rng.lognormal(mean=-0.125, sigma=0.5, size=n)
    taste_cdf = np.cumsum(taste, axis=1)
    users, item_rows, ratings = [], [], []
    for d_i, dom in enumerate(cfg.domains):
        active = rng.random(n) < dom.participation
        counts = np.where(active, 1 + rng.poisson(np.maximum(dom.activity - 1.0, 0.0) * vigor), 0)
        owner = np.repeat(np.arange(n), counts)
        m = len(owner)
        on_taste = rng.random(m) < cfg.taste_fidelity
        theme = np.minimum((taste_cdf[owner] < rng.random(m)[:, None]).sum(axis=1), n_themes - 1)
        theme = np.where(on_taste, theme, rng.integers(n_themes, size=m))
        rows = np.empty(m, dtype=np.int64)
        pick = rng.random(m)
        for th in range(n_themes):
            sel = np.flatnonzero(theme == th)
            cdf = catalog.theme_cdfs[d_i][th]
            if len(sel) == 0 or len(cdf) == 0:
                rows[sel] = catalog.domain_offsets[d_i]  # degenerate tiny domain: first item
                continue
            rows[sel] = catalog.theme_members[d_i][th][np.minimum(np.searchsorted(cdf, pick[sel]), len(cdf) - 1)]
        # On-taste picks are mostly liked; off-taste picks get any rating.
        liked = rng.integers(4, 6, size=m)
        anything = rng.integers(1, 6, size=m)
        users.append(owner)
        item_rows.append(rows)
        ratings.append(np.where(on_taste, liked, anything).astype(np.float32))
    owner = np.concatenate(users)
    rows = np.concatenate(item_rows)
    rating = np.concatenate(ratings)
    # One interaction per user and item: keep the first draw.
    key = owner.astype(np.int64) * (catalog.domain_offsets[-1] + 1) + rows
    _, first_idx = np.unique(key, return_index=True)
    first_idx.sort()
    owner, rows, rating = owner[first_idx], rows[first_idx], rating[first_idx]
    ts = START_TIME + (first + owner) % 97 * 3_600 + rng.integers(0, TIME_SPAN, size=len(owner))
    user_ids = np.char.add("u", np.char.zfill((first + owner).astype(str), 7))
    items = catalog.items
    return pa.table(
        [
            pa.array(user_ids.tolist(), pa.string()),
            items["item_id"].take(pa.array(rows)),
            items["domain"].take(pa.array(rows)),
            pa.array(ts, pa.int64()),
            pa.array(rating, pa.float32()),
        ],
        schema=INTERACTIONS,
    )


def num_chunks(cfg: WorldSourceConfig) -> int:
    return -(-cfg.users // cfg.users_per_chunk)


def generate(cfg: WorldSourceConfig, seed: int) -> tuple[pa.Table, pa.Table]:
    """The whole world in this process (items, interactions): for tests and small demos."""
    catalog = make_catalog(cfg, seed)
    chunks = [generate_chunk(cfg, seed, catalog, c) for c in range(num_chunks(cfg))]
    return catalog.items, pa.concat_tables(chunks)
