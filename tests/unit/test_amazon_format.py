import json

from mdrec.config import AmazonRelease
from mdrec.data.sources.amazon_format import metadata_table, parse_metadata, parse_review, reviews_table


def test_2014_review():
    line = json.dumps({"reviewerID": "A1", "asin": "B01", "overall": 4.0, "unixReviewTime": 1400000000,
                       "reviewTime": "05 13, 2014"})
    assert parse_review(line) == ("A1", "B01", 1400000000, 4.0)


def test_2023_review_uses_parent_asin_and_milliseconds():
    line = json.dumps({"user_id": "U9", "asin": "B02", "parent_asin": "P02", "rating": 5,
                       "timestamp": 1600000000123, "title": "Great", "text": "..."})
    assert parse_review(line) == ("U9", "P02", 1600000000, 5.0)


def test_2014_metadata_is_a_python_literal():
    line = str({"asin": "B01", "title": "Earl Grey Tea", "categories": [["Grocery"]], "price": 3.5})
    assert "'" in line  # single quotes, as in the 2014 files: not JSON
    assert parse_metadata(line) == ("B01", "Earl Grey Tea")


def test_2018_and_2023_metadata():
    assert parse_metadata(json.dumps({"asin": "B03", "title": "Mug", "main_cat": "Home"})) == ("B03", "Mug")
    assert parse_metadata(json.dumps({"parent_asin": "P4", "title": "Pan", "main_category": "Home"})) == ("P4", "Pan")
    assert parse_metadata(json.dumps({"asin": "B05"})) == ("B05", None)  # missing title is allowed


def test_malformed_lines_are_none():
    bad = [
        "{not json",
        "[1, 2]",
        json.dumps({"reviewerID": "A1", "overall": 4.0, "unixReviewTime": 1}),  # no asin
        json.dumps({"reviewerID": "A1", "asin": "B", "overall": "great", "unixReviewTime": 1}),
        json.dumps({"reviewerID": "A1", "asin": "B", "overall": True, "unixReviewTime": 1}),
        "__import__('os').system('echo no')",  # never evaluated
    ]
    assert all(parse_review(line) is None for line in bad)
    assert parse_metadata("{'title': 'no id'}") is None


def test_forced_release_reads_the_named_fields():
    line = json.dumps({"user_id": "U", "parent_asin": "P", "rating": 3, "timestamp": 2000,
                       "reviewerID": "R", "asin": "A", "overall": 1, "unixReviewTime": 5})
    assert parse_review(line, AmazonRelease.r2023) == ("U", "P", 2, 3.0)
    assert parse_review(line, AmazonRelease.r2014) == ("R", "A", 5, 1.0)


def test_tables_count_malformed_lines():
    lines = [json.dumps({"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": 10}), "garbage"]
    table, bad = reviews_table(lines, "Food", AmazonRelease.auto)
    assert bad == 1 and table.num_rows == 1 and table["domain"].to_pylist() == ["Food"]
    items, bad = metadata_table([json.dumps({"asin": "B", "title": "T"}), "{"], "Food", AmazonRelease.auto)
    assert bad == 1 and items["title"].to_pylist() == ["T"]
