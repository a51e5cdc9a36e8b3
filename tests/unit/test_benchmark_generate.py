"""benchmarks/generate.py's own bookkeeping, without a Ray session or a vLLM engine: its options,
its synthetic contexts, and how it turns two runs per side into marginal rates and a ratio."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "generate.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_default_to_the_whole_run_and_quick_shrinks_it(bench):
    full = bench.parse_args([])
    assert (full.model, full.modes, full.repeats) == ("packaged", ["choose", "score"], 3)
    assert (full.contexts, full.score_contexts, full.scale) == (
        bench.FULL["contexts"], bench.FULL["score_contexts"], bench.FULL["scale"])
    assert not full.skip_semantic and not full.skip_vllm

    quick = bench.parse_args(["--quick"])
    assert (quick.model, quick.modes, quick.repeats, quick.scale) == ("tiny", ["choose"], 1, 2)
    assert quick.skip_semantic
    # An option given wins over --quick's.
    assert bench.parse_args(["--quick", "--modes", "score", "--model", "packaged"]).modes == ["score"]
    assert bench.parse_args(["--quick", "--model", "packaged"]).model == "packaged"


@pytest.mark.parametrize("argv", [["--modes", "pick"], ["--modes", "choose,choose"], ["--modes", ","],
                                  ["--scale", "1"], ["--repeats", "0"], ["--score-contexts", "0"]])
def test_bad_options_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_synthetic_contexts_are_deterministic_and_a_small_run_is_a_prefix(bench):
    small, large = bench.synthetic_contexts(3), bench.synthetic_contexts(12)
    assert small.equals(large.slice(0, 3)) and small.equals(bench.synthetic_contexts(3))
    row = large.to_pylist()[5]
    assert len(row["history_titles"]) == bench.HISTORY == 10
    assert len(row["candidate_titles"]) == len(row["candidates"]) == bench.CANDIDATES == 20


def run(bench, seconds, contexts, per_context=1, tokens=100, generated=10, scores=None, **extra):
    """A run's summary as a side's Tally makes it."""
    tally = bench.Tally()
    for c in range(contexts):
        for part in range(per_context):
            score = (scores or {}).get((c, part), -1.0) if per_context > 1 else None
            tally.add(c, tokens, generated, False, per_context, part if per_context > 1 else -1, score)
    return tally.summary(seconds, seconds / 2, **extra)


def test_a_tally_puts_score_contexts_back_together(bench):
    tally = bench.Tally()
    tally.add(0, 50, 0, False, 2, 11, -0.5)
    tally.add(1, 50, 0, True, 2, 12, None)  # no score: a problem
    tally.add(0, 40, 0, False, 2, 13, -0.25)
    summary = tally.summary(3.0, 1.0)
    assert (summary["contexts"], summary["complete_contexts"], summary["requests"]) == (2, 1, 3)
    assert (summary["prompt_tokens"], summary["with_problems"]) == (140, 1)
    assert summary["_scores"] == {"0:11": -0.5, "0:13": -0.25}


def test_marginal_rates_cancel_start_up(bench):
    small, large = run(bench, 25.0, 10), run(bench, 55.0, 40)  # 30 contexts more in 30 s more
    figures = bench.side(small, large)
    assert figures["marginal"] == {"contexts_per_s": 1.0, "requests_per_s": 1.0, "prompt_tokens_per_s": 100.0,
                                   "generated_tokens_per_s": 10.0}
    assert figures["fixed_seconds"] == 15.0  # 25 s for 10 contexts at 1 s each: 15 s of start-up
    assert figures["large_with_startup"]["contexts_per_s"] == round(40 / 55, 2)
    # A large run no slower than the small one (start-up noise) gives no rate rather than a wrong one.
    assert bench.side(small, run(bench, 24.0, 40))["marginal"]["contexts_per_s"] is None


def test_compare_reports_the_ratio_and_whether_both_sides_did_the_same_work(bench):
    pipeline = [run(bench, 40.0, 8), run(bench, 64.0, 32)]  # 1 context/s
    bare = [run(bench, 15.0, 8, engine_startup_seconds=12.0), run(bench, 35.0, 32, engine_startup_seconds=12.0)]
    result = bench.compare("choose", {"pipeline": pipeline, "bare": bare})
    assert result["ratio"] == round(1.0 / 1.2, 3) and result["same_work"]
    assert result["bare"]["engine_startup_seconds"] == [12.0, 12.0]
    assert all("_scores" not in r for r in pipeline + bare)

    other = [run(bench, 15.0, 8, generated=11, engine_startup_seconds=12.0),
             run(bench, 35.0, 32, generated=11, engine_startup_seconds=12.0)]
    assert not bench.compare("choose", {"pipeline": [run(bench, 40.0, 8), run(bench, 64.0, 32)],
                                        "bare": other})["same_work"]

    summary = bench.mode_summary([result, result])
    assert summary["ratios"] == [result["ratio"]] * 2 and summary["goal_met"] is False and summary["same_work"]
    assert summary["per_repeat"]["pipeline_contexts_per_s"] == [1.0, 1.0]
    assert summary["per_repeat"]["bare_engine_startup_seconds"] == [[12.0, 12.0]] * 2


def test_score_mode_compares_the_log_likelihoods(bench):
    pipeline = [run(bench, 30.0, 2, per_context=3), run(bench, 50.0, 8, per_context=3, scores={(5, 1): -1.5})]
    bare = [run(bench, 10.0, 2, per_context=3, engine_startup_seconds=9.0),
            run(bench, 28.0, 8, per_context=3, engine_startup_seconds=9.0)]
    result = bench.compare("score", {"pipeline": pipeline, "bare": bare})
    assert result["same_work"] and result["scores_compared"] == 30
    assert result["max_score_difference"] == 0.5
    assert result["pipeline"]["marginal"]["requests_per_s"] == 0.9  # 18 requests in 20 s
    assert result["ratio"] == round(0.3 / round(6 / 18, 2), 3)
