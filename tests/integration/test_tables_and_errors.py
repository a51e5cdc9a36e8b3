"""Flat-table sources (CSV, Parquet, S3) and the one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.integration.conftest import world_config, write_config


def table_config(tmp_path, inter, items, **over):
    source = {"type": "table", "interactions": str(inter), "items": str(items)}
    source.update(over.pop("source", {}))
    cfg = {"name": "t", "data": {"source": source, **over.pop("data", {})},
           "prepare": {"num_negatives": 3, **over.pop("prepare", {})}, "ray": {"progress_bars": False}}
    return write_config(tmp_path / "t.yaml", cfg)


def toy_frames(n_users=30):
    rows = []
    for u in range(n_users):
        for k in range(4):
            rows.append({"uid": u, "iid": f"b{(u + k) % 12}", "dom": "Books", "when": 1_600_000_000_000 + (u * 10 + k) * 1000, "stars": 4})
        if u % 3 == 0:
            rows += [{"uid": u, "iid": f"m{(u + k) % 5}", "dom": "Music", "when": 1_700_000_000_000 + k, "stars": 5} for k in range(3)]
    inter = pd.DataFrame(rows)
    items = pd.DataFrame({"id": [f"b{i}" for i in range(12)] + [f"m{i}" for i in range(5)] + ["t0"],
                          "category": ["Books"] * 12 + ["Music"] * 5 + ["Toys"],
                          "name": [f"Book {i}" for i in range(12)] + [f"Album {i}" for i in range(5)] + ["Toy"]})
    return inter, items


MAPPED = {
    "interaction_columns": {"user_id": "uid", "item_id": "iid", "domain": "dom", "timestamp": "when", "rating": "stars"},
    "item_columns": {"item_id": "id", "domain": "category", "title": "name"},
    "timestamp_unit": "ms",
}


def test_csv_with_mapped_columns(ray_session, tmp_path):
    inter, items = toy_frames()
    inter = pd.concat([inter, inter.iloc[:5]])  # five exact duplicates
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    cfg = table_config(tmp_path, tmp_path / "inter.csv", tmp_path / "items.csv", source=MAPPED)
    code, out, err = run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "prepared" / "stats.json").read_text())
    assert stats["time_order"] == "timestamp"
    # the first five rows: user 0's four Books rows and first Music row
    assert stats["domains"]["Books"]["dropped"]["duplicate"] == 4
    assert stats["domains"]["Music"]["dropped"]["duplicate"] == 1
    assert stats["totals"]["dropped"]["duplicate"] == 5
    assert stats["domains"]["Books"]["interactions"] == 120 and stats["domains"]["Music"]["interactions"] == 30
    assert stats["domains"]["Music"]["role"] == "cold"
    assert "Toys" not in stats["domains"]  # in the catalog only: no interactions, not configured
    got = pd.read_parquet(tmp_path / "run" / "prepared" / "interactions")
    assert got["ts"].min() == 1_600_000_000  # ms -> s
    assert got["user_id"].dtype == object or str(got["user_id"].dtype).startswith("str")


def test_changed_input_file_redoes_the_stage(ray_session, tmp_path):
    inter, items = toy_frames()
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    cfg = table_config(tmp_path, tmp_path / "inter.csv", tmp_path / "items.csv", source=MAPPED)
    assert run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))[0] == 0
    code, _, err = run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))
    assert "reusing committed output" in err
    inter.iloc[:-3].to_csv(tmp_path / "inter.csv", index=False)  # the data changed
    code, _, err = run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))
    assert code == 0 and "reusing" not in err
    stats = json.loads((tmp_path / "run" / "prepared" / "stats.json").read_text())
    assert stats["totals"]["rows_read"] == len(inter) - 3


def test_single_domain_table_and_s3_input(ray_session, tmp_path, s3_bucket):
    import boto3

    inter, items = toy_frames()
    inter = inter[inter["dom"] == "Books"].drop(columns="dom")
    items = items[items["category"] == "Books"].drop(columns="category")
    pq.write_table(pa.Table.from_pandas(inter, preserve_index=False), tmp_path / "inter.parquet")
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp_path / "items.parquet")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.upload_file(str(tmp_path / "inter.parquet"), s3_bucket, "in/inter.parquet")
    s3.upload_file(str(tmp_path / "items.parquet"), s3_bucket, "in/items.parquet")
    source = {
        "interaction_columns": {"user_id": "uid", "item_id": "iid", "domain": None, "seq": "when"},
        "item_columns": {"item_id": "id", "domain": None, "title": "name"},
        "domain": "Books",
    }
    cfg = table_config(tmp_path, f"s3://{s3_bucket}/in/inter.parquet", f"s3://{s3_bucket}/in/items.parquet", source=source)
    code, out, err = run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "prepared" / "stats.json").read_text())
    assert list(stats["domains"]) == ["Books"] and stats["domains"]["Books"]["users"] == 30


def bad_case(tmp_path, kind):
    inter, items = toy_frames()
    source, extra = dict(MAPPED), {}
    if kind == "missing column":
        inter = inter.drop(columns="stars")
    elif kind == "wrong column type":
        inter["when"] = "yesterday"
    elif kind == "empty table":
        inter = inter.iloc[:0]
    elif kind == "unknown domain":
        extra = {"data": {"domains": ["Books", "Games"]}}
    elif kind == "domain with no rows":
        extra = {"data": {"domains": ["Books", "Toys"]}}
    elif kind == "unknown role domain":
        extra = {"prepare": {"roles": {"Movies": "cold"}}}
    pq.write_table(pa.Table.from_pandas(inter, preserve_index=False), tmp_path / "inter.parquet")
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp_path / "items.parquet")
    inter_path = tmp_path / "inter.parquet"
    if kind == "unreadable path":
        inter_path = tmp_path / "nowhere" / "inter.parquet"
    elif kind == "corrupt file":
        (tmp_path / "corrupt.parquet").write_bytes(b"not a parquet file at all")
        inter_path = tmp_path / "corrupt.parquet"
    elif kind == "folder without data":
        (tmp_path / "empty-folder").mkdir()
        inter_path = tmp_path / "empty-folder"
    return table_config(tmp_path, inter_path, tmp_path / "items.parquet", source=source, **extra)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing column", "inter.parquet: missing column 'stars' (mapped from 'rating')"),
        ("wrong column type", "inter.parquet: column 'when' has type string, expected integer or timestamp"),
        ("empty table", "interactions table is empty"),
        ("unknown domain", "data.domains: unknown domain 'Games' (the data has: Books, Music, Toys)"),
        ("domain with no rows", "domain 'Toys': no interactions in"),
        ("unknown role domain", "prepare.roles: unknown domain 'Movies' (domains: Books, Music)"),
        ("unreadable path", "nowhere/inter.parquet: no such file or directory"),
        ("corrupt file", "corrupt.parquet: cannot read as parquet"),
        ("folder without data", "empty-folder: no data files found"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(ray_session, tmp_path, kind, message):
    cfg = bad_case(tmp_path, kind)
    code, out, err = run_cli("prepare", cfg, "--run-dir", str(tmp_path / "run"))
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "prepared").exists()
    assert not list((tmp_path / "run" / ".staging").glob("*")) if (tmp_path / "run" / ".staging").exists() else True


def test_a_backend_that_reads_titles_stops_before_work_on_a_catalog_without_any(ray_session, tmp_path):
    """A world whose items have no titles: the semantic backend fails in one line naming the target
    domain and how many of its items lack a title, and nothing of the generate stage is left."""
    raw = world_config(users=80)
    raw["data"]["source"]["missing_title_rate"] = 1.0
    raw["generate"] = {"backend": {"type": "semantic"}, "candidates": {"size": 10, "popular": 10}}
    cfg = write_config(tmp_path / "c.yaml", raw)
    run = tmp_path / "run"
    assert run_cli("prepare", cfg, "--run-dir", str(run))[0] == 0
    code, out, err = run_cli("generate", cfg, "--run-dir", str(run))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and "Traceback" not in err, err
    assert "target domain 'Music' has none" in last and "items lack a title" in last and "popularity" in last
    assert not (run / "synthetic").exists() and not (run / ".generate").exists()


def test_missing_s3_bucket(ray_session, tmp_path, s3_server):
    cfg = write_config(tmp_path / "c.yaml", world_config(users=50))
    code, out, err = run_cli("prepare", cfg, "--run-dir", "s3://no-such-bucket/run")
    assert code == 2
    assert err.strip().splitlines()[-1] == "error: s3://no-such-bucket/run: S3 bucket 'no-such-bucket' does not exist"


def test_config_errors_through_the_cli(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", world_config(users=50))
    code, _, err = run_cli("prepare", cfg, "--set", "prepare.num_negatives=lots")
    assert code == 2 and "'prepare.num_negatives'" in err and "'lots'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("prepare", str(tmp_path / "absent.yaml"))
    assert code == 2 and "absent.yaml: cannot read config" in err


def test_real_console_script(ray_session, tmp_path):
    """The installed `mdrec` entry point: help texts, and a clean one-line failure (exit 2)."""
    exe = os.path.join(os.path.dirname(sys.executable), "mdrec")
    help_ = subprocess.run([exe, "prepare", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--run-dir", "--set", "--force", "CONFIG"):
        assert option in help_
    top = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "prepare" in top and "run" in top
    cfg = write_config(tmp_path / "c.yaml", world_config(users=50))
    bad = subprocess.run([exe, "prepare", cfg, "--set", "data.domains=[Books, Games]", "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address})
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == "error: data.domains: unknown domain 'Games' (the data has: Books, Music)"
