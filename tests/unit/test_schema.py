import pyarrow as pa
import pytest

from mdrec.data.schema import INTERACTIONS, ITEMS, ColumnKind, check_columns, conform_interactions, conform_items
from mdrec.errors import DataError


def test_conform_interactions_casts_and_converts_time():
    t = pa.table({
        "u": pa.array([1, 2], pa.int32()),
        "i": ["a", "b"],
        "when": pa.array([1_600_000_000_123, 1_600_000_001_999], pa.int64()),
        "stars": pa.array([5, 3], pa.int8()),
    })
    out = conform_interactions(t, user_id="u", item_id="i", domain=None, timestamp="when", seq=None,
                               rating="stars", domain_value="Books", timestamp_unit="ms")
    assert out.schema == INTERACTIONS
    assert out["user_id"].to_pylist() == ["1", "2"]
    assert out["domain"].to_pylist() == ["Books", "Books"]
    assert out["ts"].to_pylist() == [1_600_000_000, 1_600_000_001]
    assert out["rating"].to_pylist() == [5.0, 3.0]


def test_conform_interactions_timestamp_type_and_seq():
    t = pa.table({"u": ["x"], "i": ["y"], "d": ["D"], "t": pa.array([1_000_000_000_500_000], pa.timestamp("us"))})
    out = conform_interactions(t, user_id="u", item_id="i", domain="d", timestamp="t", seq=None, rating=None)
    assert out["ts"].to_pylist() == [1_000_000_000]
    assert out["rating"].null_count == 1
    s = pa.table({"u": ["x"], "i": ["y"], "d": ["D"], "s": pa.array([7], pa.int16())})
    assert conform_interactions(s, user_id="u", item_id="i", domain="d", timestamp=None, seq="s",
                                rating=None)["ts"].to_pylist() == [7]


def test_conform_items_blank_titles_become_null():
    t = pa.table({"id": ["a", "b", "c"], "dom": ["D"] * 3, "name": ["Tea", "  ", None]})
    out = conform_items(t, item_id="id", domain="dom", title="name")
    assert out.schema == ITEMS
    assert out["title"].to_pylist() == ["Tea", None, None]


@pytest.mark.parametrize(
    "schema, wanted, message",
    [
        (pa.schema([("u", pa.string())]), {"user_id": ("user", ColumnKind.key)}, "missing column 'user' (mapped from 'user_id')"),
        (pa.schema([("seq", pa.string())]), {"seq": ("seq", ColumnKind.order)}, "column 'seq' has type string, expected integer"),
        (pa.schema([("u", pa.float64())]), {"user_id": ("u", ColumnKind.key)}, "column 'u' has type double, expected string or integer"),
        (pa.schema([("t", pa.string())]), {"title": ("t", ColumnKind.text)}, None),
        (pa.schema([("r", pa.string())]), {"rating": ("r", ColumnKind.number)}, "column 'r' has type string, expected number"),
    ],
)
def test_check_columns(schema, wanted, message):
    if message is None:
        check_columns(schema, wanted, "f.parquet")
        return
    with pytest.raises(DataError) as err:
        check_columns(schema, wanted, "f.parquet")
    assert str(err.value).startswith("f.parquet: ")
    assert message in str(err.value)
