"""Amazon Review Data raw files (2014 gzipped with Python-literal metadata, 2018 JSON, 2023 JSONL)."""

from __future__ import annotations

import gzip
import json

import pandas as pd

from mdrec.storage import resolve
from tests.conftest import run_cli
from tests.integration.conftest import write_config


def write_lines(path, lines, gz=False):
    data = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(data)
    else:
        path.write_text(data)
    return str(path)


def old_reviews(users, items, start=1_400_000_000, rating=lambda u, i: 5.0):
    return [
        json.dumps({"reviewerID": u, "asin": i, "overall": rating(u, i), "unixReviewTime": start + k * 86400,
                    "reviewText": "fine", "reviewTime": "x"})
        for k, (u, i) in enumerate((u, i) for u in users for i in items)
    ]


def amazon_files(tmp_path):
    users = [f"U{u}" for u in range(12)]
    food_items = [f"F{i}" for i in range(6)]
    # 2014: gzipped reviews; metadata as Python literals, one item without a title
    food_reviews = old_reviews(users, food_items[:4], rating=lambda u, i: 2.0 if i == "F3" else 5.0)
    food_reviews += ["{broken json", ""]  # one malformed line, one empty line (ignored)
    food_reviews.append(json.dumps({"reviewerID": "U0", "asin": "UNKNOWN", "overall": 5.0, "unixReviewTime": 1}))
    food_meta = [str({"asin": i, "title": f"Tea {i}", "categories": [["Grocery"]]}) for i in food_items[:5]]
    food_meta.append(str({"asin": "F5", "categories": [["Grocery"]]}))
    # 2023: JSONL with parent_asin and millisecond timestamps
    home_reviews = [
        json.dumps({"user_id": u, "asin": f"child-{i}", "parent_asin": i, "rating": 4.0,
                    "timestamp": 1_600_000_000_000 + k * 1000, "title": "ok", "text": "t"})
        for k, (u, i) in enumerate((u, i) for u in users for i in ["H1", "H2", "H3"])
    ]
    home_meta = [json.dumps({"parent_asin": i, "title": f"Pan {i}", "main_category": "Home"}) for i in ["H1", "H2", "H3"]]
    return {
        "Food": {
            "reviews": write_lines(tmp_path / "Grocery_and_Gourmet_Food.json.gz", food_reviews, gz=True),
            "metadata": write_lines(tmp_path / "meta_Grocery_and_Gourmet_Food.json.gz", food_meta, gz=True),
        },
        "Home": {
            "reviews": write_lines(tmp_path / "Home_and_Kitchen.jsonl", home_reviews),
            "metadata": write_lines(tmp_path / "meta_Home_and_Kitchen.jsonl", home_meta),
        },
    }


def config(tmp_path, domains, **source):
    return write_config(tmp_path / "amazon.yaml", {
        "name": "amazon",
        "data": {"source": {"type": "amazon", "domains": domains, **source}},
        "prepare": {"num_negatives": 2, "cold_start": {"fraction": 0.0}},
        "ray": {"progress_bars": False},
    })


def test_amazon_raw_files(ray_session, tmp_path):
    domains = amazon_files(tmp_path)
    cfg = config(tmp_path, domains, min_rating=4.0, max_error_rate=0.1)
    code, out, err = run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "prepared" / "stats.json").read_text())
    food, home = stats["domains"]["Food"], stats["domains"]["Home"]
    assert food["dropped"]["malformed_review_line"] == 1
    assert food["dropped"]["item_not_in_catalog"] == 1
    assert food["dropped"]["below_min_rating"] == 12  # every user's F3 review was rated 2
    assert (food["users"], food["items"], food["interactions"]) == (12, 3, 36)
    assert (home["users"], home["items"], home["interactions"]) == (12, 3, 36)
    assert food["catalog_items"] == 6
    inter = resolve(str(tmp_path / "run" / "prepared" / "interactions")).read_table().to_pandas()
    home_ts = inter.loc[inter["domain"] == "Home", "ts"]
    assert home_ts.min() >= 1_600_000_000 and home_ts.max() < 1_600_001_000  # ms -> s
    items = pd.read_parquet(tmp_path / "run" / "prepared" / "items.parquet")
    assert set(items.loc[items["domain"] == "Home", "item_id"]) == {"H1", "H2", "H3"}  # parent_asin
    assert items.set_index("item_id").loc["F0", "title"] == "Tea F0"


def test_missing_title_is_null_and_counted(ray_session, tmp_path):
    domains = amazon_files(tmp_path)
    code, _, err = run_cli("prepare", config(tmp_path, domains, max_error_rate=0.1), "--run-dir", str(tmp_path / "run"))
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "prepared" / "stats.json").read_text())
    # no rating threshold: F3 stays; F5 has no title but also no reviews, so items with reviews all have titles
    assert stats["domains"]["Food"]["titles_missing"] == 0
    reviews = old_reviews(["U1", "U2"], ["F5"])
    domains["Food"]["reviews"] = write_lines(tmp_path / "more.json", reviews)
    code, _, err = run_cli("prepare", config(tmp_path, domains), "--run-dir", str(tmp_path / "run2"))
    assert code == 0, err
    stats = json.loads((tmp_path / "run2" / "prepared" / "stats.json").read_text())
    assert stats["domains"]["Food"]["titles_missing"] == 1
    items = pd.read_parquet(tmp_path / "run2" / "prepared" / "items.parquet")
    assert pd.isna(items.set_index("item_id").loc["F5", "title"])


def test_error_rate_above_the_limit_fails(ray_session, tmp_path):
    domains = amazon_files(tmp_path)
    code, out, err = run_cli("prepare", config(tmp_path, domains, max_error_rate=0.01), "--run-dir", str(tmp_path / "run"))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Grocery_and_Gourmet_Food.json.gz" in lines[-1]
    assert "1 of 50 lines are malformed" in lines[-1] and "max_error_rate=0.01" in lines[-1]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "prepared").exists()  # nothing half-written


def test_empty_domain_file_fails(ray_session, tmp_path):
    domains = amazon_files(tmp_path)
    domains["Home"]["reviews"] = write_lines(tmp_path / "empty.jsonl", [""])
    code, _, err = run_cli("prepare", config(tmp_path, domains, max_error_rate=0.1), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "empty.jsonl: file is empty (domain 'Home')" in err
