"""Speed of the generate stage's backends: vLLM through the Ray pipeline vs a bare vLLM loop, and semantic.

vLLM, on synthetic user contexts (`synthetic_contexts`: Amazon-like titles, deterministic, 10
history titles and 20 candidate titles each, target Food), one engine on CPU each side:

- model: `--model packaged` (default) is the real packaged:smollm2-135m-instruct; the pipeline's
  config names it so (build_vllm resolves it, as the stage does), the bare loop loads the folder
  `prepare_packaged` converted it into (~/.cache/mdrec/models, converted once per machine).
  `--model tiny` is the random-weight Llama of tests/tiny_llm.py (2 layers, hidden 64);
- modes (`--modes choose,score`, default both): choose is one request per context (structured
  JSON answer, greedy, a seed per user); score is one request per (context, candidate), the
  candidate's title appended to the prompt (prompt_logprobs=0, max_tokens=1), scored by the
  title's mean log-probability (`title_logprob`), the candidates put back together per context;
- pipeline: `build_vllm(cfg, inputs).apply(contexts)`, what the generate stage runs: our prompt
  stage, ray.data.llm's engine actor, the postprocess (answer parsing or log-likelihood); the
  driver reads the results as they come and puts the contexts back together;
- bare: the same requests (token ids and sampling params from our `PromptStage`, built before
  the clock starts) through one in-process `vllm.LLM` with the engine arguments our
  `processor_config` gives the engine actor (structured output in choose mode; in score mode no
  tokenizer, and the prefix cache), `llm.generate` in batches of `--batch-size` requests, answers
  parsed as postprocess does (`parse_choice`, `parse_least`) or scored with the same
  `title_logprob`, contexts put back together the same way. It runs in a child process of its
  own while Ray is down, so the two sides never share the CPUs;
- bare, building its prompts (`--bare-building-prompts`, off by default): the same with the
  prompt stage inside the clock, the pipeline's whole job in one process; the ratio against it
  (`ratio_same_job`) is what Ray itself costs.

Equal conditions. Ray runs an actor with OMP_NUM_THREADS = its CPUs (cpus_per_actor =
`--engine-cpus`, rounded down, at least 1) and at niceness 15 (worker_niceness); the bare engine
gets the same threads (`--bare-threads` to change) and niceness. Left alone, a bare engine would
take every core at niceness 0: on this 2-core machine, with another job running, its two OMP
threads made it about 3x slower than on one thread (0.86 against 2.4 choose contexts/s), and
niceness 0 beat Ray's workers to the CPUs. Equal work: `same_work` says both sides made the same
contexts (all complete), requests and prompt tokens (and, choose, generated tokens: greedy with
the same seeds writes the same answers); score mode also reports the largest difference between
the two sides' log-likelihoods (`max_score_difference`).

Throughput. Each side runs at two sizes, N and `--scale` x N contexts (N: `--contexts` for
choose, `--score-contexts` for score; the small run a prefix of the large), each from a cold
start; a side's marginal rate is (extra work) / (extra seconds), so start-up cancels: contexts/s
(= prompts/s in choose), requests/s, prompt tokens/s and generated tokens/s (0 in score mode,
which generates nothing it keeps). The ratio is the pipeline's marginal contexts/s over the
bare loop's; goal: at least 0.9 (`goal_met`: the median over the repeats). `--repeats` (default
3) repeats the whole measurement, bare and pipeline at both sizes in both modes, alternating
which side goes first; `per_repeat` lists every figure per repeat. Start-up, per side and run:
`fixed_seconds`, the intercept, the small run's seconds less its requests at the marginal rate
(what a run with no work would take: engine start-up, Ray Data's start and wind-down; as noisy
as the two runs' difference); `first_result_seconds`, from the start to the first results (it
includes the first batch's work); bare only, `engine_startup_seconds`, measured directly:
`import torch`/`vllm` and `vllm.LLM(...)`. Rates over a whole large run, start-up included, are
in `large_with_startup`.

Measured on this 2-core machine while another job used it too (load average 5-7), with
packaged:smollm2-135m-instruct, one engine thread each side (so take the rates as rough):

| piece | seconds |
|---|---|
| bare, start-up (`engine_startup_seconds`; `fixed_seconds`) | 10-13; 12-14 per run |
| pipeline, start-up (`fixed_seconds`: engine actor, Ray Data) | 29-47 per run |
| choose, a context (prompt ~425 tokens, ~18 generated) | 0.34-0.45, either side |
| score, a context (20 requests of ~153 tokens) | 0.4-1.3 (20-65 ms a request) |
| `--repeats 1 --contexts 16 --score-contexts 4` (both modes) | 330-350 |
| `--quick` (tiny model, choose, 8 and 16 contexts, one repeat) | 130 in all on quiet cores; 282 beside two other Ray jobs |

So one repeat at the defaults (choose 32 and 128 contexts, score 16 and 64) is 7-8 minutes
(bare ~3, pipeline 4.5-5; about 3.5 of it start-ups), and the whole run (3 repeats) 20-25 minutes
here, less on a quiet machine; the semantic part adds its own (not measured here; the README's
last run: 311 s for the stage, encoding included). The pipeline's start-up varied by 15 s between
runs under that load: at `--contexts 16 --score-contexts 4` (10-20 s of marginal work per side
and mode) single ratios swung from 0.95 to 1.24 (choose) and 0.42 to 1.43 (score). The defaults
give each side and mode 40-90 s of marginal work, and the repeats a median. `--quick` only shows
that every piece still runs: its sizes are too small for a marginal rate (a null ratio is normal
there).

Semantic: `prepare` (reused when the work folder already holds it) and the generate stage on
the shared data with configs/amazon-food-kitchen.yaml, backend semantic, warm protocol, target
Food, at most `--max-users` users; users/s over the backend's seconds and over the whole stage,
and the time to encode the item titles (from the stage's log; none when the run folder already
holds the embeddings, which the stage keeps). Skipped by `--quick`.

Prints one JSON line on stdout (everything else, vLLM's and Ray's logs included, goes to stderr):

    python benchmarks/generate.py [--workdir DIR] [--model packaged|tiny] [--modes choose,score]
                                  [--repeats 3] [--contexts 32] [--score-contexts 16] [--scale 4]
                                  [--batch-size 64] [--engine-cpus 1] [--bare-threads N]
                                  [--bare-building-prompts] [--max-users 2000]
                                  [--skip-vllm] [--skip-semantic] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "amazon-food-kitchen").resolve()
sys.path.insert(0, str(REPO))

PACKAGED = "smollm2-135m-instruct"
DOMAINS = ["Food", "Kitchen"]  # domain_idx order, as prepare sorts them
HISTORY, CANDIDATES, PER_USER = 10, 20, 3
USERS_PER_SHARD = 512  # the stage's default: about one block of contexts per shard
ENGINE = {"max_model_len": 1024, "engine_kwargs": {"enforce_eager": True}}
# What ray.data.llm's engine actor gets from our backend (vllm.CPU_ENGINE_ENV, ENGINE_ENV), plus the
# in-process engine core that keeps a bare LLM's start at seconds (DESIGN.md, "Running on 2 cores").
BARE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Ray runs its workers, the pipeline's engine among them, at this niceness (its worker_niceness);
# the bare loop takes the same, so that on a shared machine neither side gets the CPUs first.
WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", "15"))
GOAL = 0.9  # pipeline / bare marginal throughput
# The sizes of a whole run and of --quick; an option given on the command line wins over either.
FULL = {"model": "packaged", "modes": "choose,score", "repeats": 3, "contexts": 32, "score_contexts": 16, "scale": 4}
QUICK = {"model": "tiny", "modes": "choose", "repeats": 1, "contexts": 8, "score_contexts": 2, "scale": 2}
MODES = ("choose", "score")

_WORDS = {
    "Food": (["organic", "dark", "roasted", "sweet", "spicy", "whole", "natural", "gluten free", "premium", "classic"],
             ["coffee beans", "green tea", "chocolate", "rice", "pasta", "olive oil", "honey", "almonds", "oats",
              "cookies", "hot sauce", "vanilla extract"]),
    "Kitchen": (["stainless", "nonstick", "ceramic", "cast iron", "glass", "bamboo", "silicone", "heavy duty"],
                ["skillet", "chef knife", "kettle", "mug set", "mixing bowl", "spatula", "blender", "toaster",
                 "cutting board", "stock pot"]),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- vLLM: inputs


def title(rng: random.Random, domain: str) -> str:
    adjectives, nouns = _WORDS[domain]
    first, second = rng.sample(adjectives, 2)
    text = f"{first.title()} {second} {rng.choice(nouns)}"
    return text + (f", {rng.randint(2, 32)} {rng.choice(['oz', 'Count', 'Pack', 'inch'])}" if rng.random() < 0.5 else "")


def synthetic_contexts(n: int, seed: int = 0):
    """n contexts (one user each, target Food, HISTORY history titles, CANDIDATES candidate titles)
    with CONTEXT_SCHEMA; row i depends on (seed, i) only, so a smaller run is a prefix of a larger."""
    import pyarrow as pa

    from mdrec.generate.contexts import CONTEXT_SCHEMA

    rows = []
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        domains = [rng.choice(["Kitchen", "Kitchen", "Food"]) for _ in range(HISTORY)]
        candidates = rng.sample(range(1000, 5000), CANDIDATES)
        rows.append({
            "context_id": i, "shard": i // USERS_PER_SHARD, "protocol": "warm", "user_idx": i, "user_id": f"u{i}",
            "target_idx": 0, "target": "Food",
            "history_items": rng.sample(range(1000), HISTORY), "history_titles": [title(rng, d) for d in domains],
            "history_domains": domains, "history_domain_idx": [DOMAINS.index(d) for d in domains],
            "candidates": candidates, "candidate_titles": [title(rng, "Food") for _ in candidates],
            "candidate_popularity": [rng.randint(1, 500) for _ in candidates],
        })
    return pa.Table.from_pylist(rows, schema=CONTEXT_SCHEMA)


def resolve_model(kind: str, workdir: Path) -> tuple[str, str, str]:
    """(the config's `model`, the folder it resolves to, which the bare loop loads, a description)."""
    if kind == "tiny":
        from tests.tiny_llm import build_tiny_llm

        path = str(build_tiny_llm(workdir / "tiny-llama"))
        return path, path, "tiny random Llama (tests/tiny_llm.py, 2 layers, hidden 64)"
    from mdrec.packaged.cache import prepare_packaged

    # Converted once per machine (~/.cache/mdrec/models); at once when it is there. The pipeline
    # resolves `packaged:NAME` itself, in build_vllm, as the stage does.
    return f"packaged:{PACKAGED}", prepare_packaged(PACKAGED, log=log), f"packaged:{PACKAGED} (30 layers, hidden 576)"


def vllm_config(model: str, mode: str, batch_size: int, engine_cpus: float):
    from mdrec.config import config_from_dict

    return config_from_dict({
        "name": "bench-generate", "seed": 0,
        "data": {"source": {"type": "table", "interactions": str(SHARED / "interactions.parquet"),
                            "items": str(SHARED / "items.parquet")}},
        "generate": {"backend": {"type": "vllm", "model": model, "mode": mode, "num_actors": 1,
                                 "cpus_per_actor": engine_cpus, "batch_size": batch_size, **ENGINE},
                     "budget": {"per_user": PER_USER}},
        "ray": {"progress_bars": False, "num_cpus": 2},
    })


def engine_requests_for(backend, contexts, seed: int, model_source: str) -> list[dict]:
    """What our prompt stage sends the engine: one request per context (choose) or per (context,
    candidate) (score), with its token ids, sampling params and what the answer is read with."""
    from mdrec.generate.backends.vllm import PromptStage

    stage = PromptStage(backend, PER_USER, seed, model_source=model_source)
    return [{"ids": r["tokenized_prompt"], "params": r["sampling_params"], "context_id": r["context_id"],
             "candidates": len(r["candidates"]), "problems": r["prompt_problems"], "skipped": r["skipped"],
             "title_start": r["title_start"], "item": r["item"], "parts": r["parts"]}
            for r in stage(contexts).to_pylist()]


# --------------------------------------------------------------------------- vLLM: the two sides


class Tally:
    """Each side's results, counted the same way: requests, tokens, problems, and the contexts put
    back together (score mode: a context is complete once all its candidates came back; its
    candidates are then ranked by score, as the stage's writer does)."""

    def __init__(self) -> None:
        self.requests = self.prompt_tokens = self.generated_tokens = self.with_problems = 0
        self.parts: dict[int, int] = {}
        self.seen: dict[int, list] = {}

    def add(self, context_id: int, prompt_tokens: int, generated_tokens: int, problem: bool,
            parts: int = 1, item: int = -1, score: float | None = None) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += generated_tokens
        self.with_problems += problem
        self.parts[context_id] = parts
        self.seen.setdefault(context_id, []).append((item, score))

    def summary(self, seconds: float, first: float | None, **extra) -> dict:
        complete = {c: sorted(got, key=lambda x: -x[1] if x[1] is not None else math.inf)
                    for c, got in self.seen.items() if len(got) == self.parts[c]}
        scores = {f"{c}:{item}": s for c, got in self.seen.items() for item, s in got if s is not None}
        return {"seconds": round(seconds, 2), "first_result_seconds": round(first, 2) if first is not None else None,
                **extra, "contexts": len(self.seen), "complete_contexts": len(complete), "requests": self.requests,
                "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                "with_problems": self.with_problems, "_scores": scores}


def run_pipeline(cfg, contexts) -> dict:
    """The backend as the stage runs it, from building the processor to the last result."""
    import ray.data

    from mdrec.generate.backends import BackendInputs
    from mdrec.generate.backends.vllm import build_vllm

    blocks = max(math.ceil(contexts.num_rows / USERS_PER_SHARD), 2 * cfg.generate.backend.num_actors)
    step = math.ceil(contexts.num_rows / blocks)
    parts = [contexts.slice(i, step) for i in range(0, contexts.num_rows, step)]
    inputs = BackendInputs(cfg, None, None, 5000, {}, len(DOMAINS), [], [0], log)
    columns = ["context_id", "prompt_tokens", "generated_tokens", "problems", "scores", "parts", "part_item"]
    tally, first = Tally(), None
    started = time.perf_counter()
    results = build_vllm(cfg.generate.backend, inputs).apply(ray.data.from_arrow(parts))
    for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        if first is None:
            first = time.perf_counter() - started
        for r in batch.select(columns).to_pylist():
            tally.add(r["context_id"], r["prompt_tokens"], r["generated_tokens"], bool(r["problems"]),
                      r["parts"], r["part_item"], r["scores"][0] if r["scores"] else None)
    return tally.summary(time.perf_counter() - started, first)


def _bare_worker(model: str, engine: dict, mode: str, requests: list[dict], batch_size: int, threads: int,
                 build=None) -> dict:
    """In a child process: one vLLM engine on `threads` threads, the requests in batches; seconds
    from `import torch` (which `import vllm` needs) on.

    With `build = (backend config, contexts, seed, model folder)` the prompts are built inside the
    clock too, by the same prompt stage: the whole job of the pipeline, in one process without Ray.
    """
    os.environ.update(BARE_ENV | {"OMP_NUM_THREADS": str(threads)})
    niceness = os.nice(max(WORKER_NICENESS - os.nice(0), 0))
    started = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    if build is not None:
        requests = engine_requests_for(*build)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    from mdrec.generate.backends.answers import parse_choice, parse_least
    from mdrec.generate.backends.vllm import title_logprob

    llm = LLM(model=model, distributed_executor_backend="uni", **engine)
    startup = time.perf_counter() - started
    tally, first = Tally(), None
    for i in range(0, len(requests), batch_size):
        batch = requests[i:i + batch_size]
        prompts = [TokensPrompt(prompt_token_ids=r["ids"]) for r in batch]
        params = []
        for r in batch:
            p = dict(r["params"])
            if p.get("structured_outputs") is not None:
                p["structured_outputs"] = StructuredOutputsParams(**p["structured_outputs"])
            params.append(SamplingParams(**p))
        for r, out in zip(batch, llm.generate(prompts, params, use_tqdm=False)):
            prompt_tokens = 0 if r["skipped"] else len(out.prompt_token_ids)
            if r["skipped"]:
                tally.add(r["context_id"], 0, 0, bool(r["problems"]), r["parts"], r["item"])
            elif mode == "choose":  # as postprocess reads an answer
                answer = out.outputs[0]
                positions, found = parse_choice(answer.text, r["candidates"], PER_USER)
                _, least_found = parse_least(answer.text, r["candidates"], positions) if positions else (None, [])
                tally.add(r["context_id"], prompt_tokens, len(answer.token_ids),
                          bool(r["problems"] or found or least_found))
            else:  # score: the title's mean log-probability, from the prompt logprobs
                score = title_logprob(out.prompt_logprobs, list(out.prompt_token_ids), int(r["title_start"]))
                tally.add(r["context_id"], prompt_tokens, 0, bool(r["problems"]) or score is None,
                          r["parts"], r["item"], score)
        if first is None:
            first = time.perf_counter() - started
    return tally.summary(time.perf_counter() - started, first, engine_startup_seconds=round(startup, 2),
                         engine_threads=torch.get_num_threads(), niceness=niceness)


def engine_kwargs(cfg, model_folder: str) -> dict:
    """The engine arguments ray.data.llm's engine actor gets from our backend (processor_config:
    structured output in choose mode; in score mode no tokenizer and the prefix cache, ...), less
    the processor's own `task_type`: the bare engine is built the same way."""
    from mdrec.generate.backends.vllm import processor_config

    kwargs = dict(processor_config(cfg.generate.backend, PER_USER, model_folder).engine_kwargs)
    kwargs.pop("task_type", None)
    return kwargs


def pipeline_engine_threads(cfg) -> int:
    """The threads of the pipeline's engine: Ray sets OMP_NUM_THREADS in an actor to its CPUs, rounded
    down, at least 1 (ray._private.utils.set_omp_num_threads_if_unset), unless its env sets it; the
    engine actor asks for cpus_per_actor. A bare engine left alone takes every core instead."""
    backend = cfg.generate.backend
    return int(backend.env.get("OMP_NUM_THREADS", max(math.floor(backend.cpus_per_actor), 1)))


def run_bare(cfg, model_folder: str, requests: list[dict], threads: int, contexts=None) -> dict:
    """The bare loop in a fresh process, which exits (engine and all) before anything else runs.
    Given `contexts`, it builds the prompts itself, inside its clock."""
    engine = engine_kwargs(cfg, model_folder)
    backend = cfg.generate.backend
    build = (backend, contexts, cfg.seed, model_folder) if contexts is not None else None
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_bare_worker, model_folder, engine, backend.mode.value, [] if build else requests,
                           backend.batch_size, threads, build).result()


# --------------------------------------------------------------------------- vLLM: the figures


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def rates(run: dict) -> dict:
    """Rates over a whole run, start-up included."""
    s = run["seconds"]
    return {"contexts_per_s": round(run["contexts"] / s, 2), "requests_per_s": round(run["requests"] / s, 2),
            "prompt_tokens_per_s": round(run["prompt_tokens"] / s, 1),
            "generated_tokens_per_s": round(run["generated_tokens"] / s, 1)}


def side(small: dict, large: dict) -> dict:
    """Marginal rates (the large run's work beyond the small one's, over its extra seconds: start-up
    cancels) and the fixed seconds (the intercept: a run's seconds extrapolated to no work)."""
    extra = large["seconds"] - small["seconds"]
    marginal = {f"{key}_per_s": _round((large[key] - small[key]) / extra if extra > 0 else None,
                                       1 if "tokens" in key else 2)
                for key in ("contexts", "requests", "prompt_tokens", "generated_tokens")}
    per_request = extra / (large["requests"] - small["requests"]) if extra > 0 else None
    fixed = small["seconds"] - small["requests"] * per_request if per_request else None
    out = {"marginal": marginal, "fixed_seconds": _round(fixed, 1),
           "first_result_seconds": [small["first_result_seconds"], large["first_result_seconds"]]}
    if "engine_startup_seconds" in small:
        out["engine_startup_seconds"] = [small["engine_startup_seconds"], large["engine_startup_seconds"]]
    return out | {"small": small, "large": large, "large_with_startup": rates(large)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def compare(mode: str, runs: dict[str, list[dict]]) -> dict:
    """One repeat of one mode: each side's figures, the ratio, and whether both did the same work."""
    pipeline, bare = runs["pipeline"], runs["bare"]
    out = {name: side(*pair) for name, pair in runs.items()}
    keys = ["contexts", "complete_contexts", "requests", "prompt_tokens"]
    keys += ["generated_tokens"] if mode == "choose" else []
    out["same_work"] = all(p[k] == b[k] for p, b in zip(pipeline, bare) for k in keys)
    if mode == "score":  # the same requests should give the same log-likelihoods (up to float noise)
        diffs = [abs(p["_scores"][k] - b["_scores"][k]) for p, b in zip(pipeline, bare)
                 for k in p["_scores"].keys() & b["_scores"].keys()]
        out["scores_compared"] = len(diffs)
        out["max_score_difference"] = _round(max(diffs), 6) if diffs else None
    p = out["pipeline"]["marginal"]["contexts_per_s"]
    out["ratio"] = _ratio(p, out["bare"]["marginal"]["contexts_per_s"])  # goal: >= GOAL
    if "bare_building_prompts" in out:  # against the pipeline's whole job in one process: what Ray itself costs
        out["ratio_same_job"] = _ratio(p, out["bare_building_prompts"]["marginal"]["contexts_per_s"])
    for pair in runs.values():
        for run in pair:
            run.pop("_scores", None)
    return out


def mode_summary(repeats: list[dict]) -> dict:
    """The per-repeat figures side by side (what a results table needs), the ratios and the goal."""
    table: dict = {}
    for name in ("pipeline", "bare", "bare_building_prompts"):
        if name not in repeats[0]:
            continue
        for key in ("contexts_per_s", "requests_per_s", "prompt_tokens_per_s", "generated_tokens_per_s"):
            table[f"{name}_{key}"] = [r[name]["marginal"][key] for r in repeats]
        table[f"{name}_fixed_seconds"] = [r[name]["fixed_seconds"] for r in repeats]
        table[f"{name}_first_result_seconds"] = [r[name]["first_result_seconds"] for r in repeats]
    table["bare_engine_startup_seconds"] = [r["bare"]["engine_startup_seconds"] for r in repeats]
    ratios = [r["ratio"] for r in repeats]
    known = [r for r in ratios if r is not None]
    median = round(statistics.median(known), 3) if known else None
    out = {"per_repeat": table, "ratios": ratios, "median_ratio": median, "goal": f"ratio >= {GOAL}",
           "goal_met": median is not None and median >= GOAL,
           "same_work": all(r["same_work"] for r in repeats)}
    if "ratio_same_job" in repeats[0]:
        out["ratios_same_job"] = [r["ratio_same_job"] for r in repeats]
    return out


def bench_vllm(args, workdir: Path) -> dict:
    import ray

    from mdrec.ray_session import ensure_ray

    model, folder, described = resolve_model(args.model, workdir)
    plans = {}
    for mode in args.modes:
        cfg = vllm_config(model, mode, args.batch_size, args.engine_cpus)
        n = args.contexts if mode == "choose" else args.score_contexts
        sizes = (n, n * args.scale)
        contexts = synthetic_contexts(sizes[1])
        requests = engine_requests_for(cfg.generate.backend, contexts, cfg.seed, folder)
        counts = [sum(r["context_id"] < k for r in requests) for k in sizes]
        tokens = [len(r["ids"]) for r in requests]
        log(f"vllm {mode}: {sizes} contexts, {counts} requests of {min(tokens)}-{max(tokens)} tokens")
        plans[mode] = {"cfg": cfg, "sizes": sizes, "contexts": contexts, "requests": requests, "counts": counts,
                       "info": {"contexts": list(sizes), "requests": counts,
                                "mean_prompt_tokens": round(sum(tokens) / len(tokens), 1)}}
        if mode == "choose":
            plans[mode]["info"]["max_tokens"] = cfg.generate.backend.sampling.max_tokens

    def bare_runs(mode: str, plan: dict, runs: dict) -> None:
        # Ray is down: nothing else of ours holds the CPUs.
        for n, count in zip(plan["sizes"], plan["counts"]):
            runs["bare"].append(run_bare(plan["cfg"], folder, plan["requests"][:count], threads))
            log(f"  bare {mode}, {n} contexts: {_brief(runs['bare'][-1])}")
            if args.bare_building_prompts:
                runs["bare_building_prompts"].append(
                    run_bare(plan["cfg"], folder, [], threads, plan["contexts"].slice(0, n)))
                log(f"  bare building its prompts {mode}, {n} contexts: {_brief(runs['bare_building_prompts'][-1])}")

    def pipeline_runs(mode: str, plan: dict, runs: dict) -> None:
        for n in plan["sizes"]:
            runs["pipeline"].append(run_pipeline(plan["cfg"], plan["contexts"].slice(0, n)))
            log(f"  pipeline {mode}, {n} contexts: {_brief(runs['pipeline'][-1])}")

    engine_threads = pipeline_engine_threads(plans[args.modes[0]]["cfg"])
    threads = args.bare_threads or engine_threads
    log(f"vllm: engine threads: pipeline {engine_threads} (Ray's OMP_NUM_THREADS), bare {threads}")
    results = {mode: [] for mode in args.modes}
    began = time.perf_counter()
    for repeat in range(args.repeats):
        sides = ["pipeline", "bare"] + (["bare_building_prompts"] if args.bare_building_prompts else [])
        runs = {mode: {name: [] for name in sides} for mode in args.modes}
        # Alternate which side goes first, so a drift in the machine's speed favours neither.
        for name in (["bare", "pipeline"] if repeat % 2 == 0 else ["pipeline", "bare"]):
            log(f"vllm repeat {repeat + 1}/{args.repeats}: {name} ({time.perf_counter() - began:.0f}s so far)")
            if name == "pipeline":
                ensure_ray(plans[args.modes[0]]["cfg"].ray)
            for mode in args.modes:
                (pipeline_runs if name == "pipeline" else bare_runs)(mode, plans[mode], runs[mode])
            if name == "pipeline":
                ray.shutdown()  # its workers would share the CPUs with the bare loop
        for mode in args.modes:
            results[mode].append(compare(mode, runs[mode]))
            log(f"vllm repeat {repeat + 1} {mode}: ratio {results[mode][-1]['ratio']}, "
                f"same work {results[mode][-1]['same_work']}")
    out = {"model": described, "model_source": folder, "batch_size": args.batch_size, "engine_cpus": args.engine_cpus,
           "engine_threads": {"pipeline": engine_threads, "bare": threads}, "niceness": WORKER_NICENESS,
           "max_model_len": ENGINE["max_model_len"], "history": HISTORY, "candidates": CANDIDATES,
           "scale": args.scale, "repeats": args.repeats, "seconds": round(time.perf_counter() - began, 1)}
    for mode in args.modes:
        out[mode] = plans[mode]["info"] | mode_summary(results[mode]) | {"runs": results[mode]}
    return out


def _brief(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "_scores"}


# --------------------------------------------------------------------------- semantic on the shared data


ENCODED = re.compile(r"encoded ([\d,]+) item titles .*? in ([\d.]+)s")


def semantic_config(max_users: int):
    from mdrec.config import load_config

    return load_config(REPO / "configs" / "amazon-food-kitchen.yaml", [
        f"data.source.interactions={SHARED / 'interactions.parquet'}", f"data.source.items={SHARED / 'items.parquet'}",
        "generate.backend.type=semantic", "generate.protocols=[warm]", "generate.targets=[Food]",
        f"generate.users.max_users={max_users}", "ray.progress_bars=false", "ray.num_cpus=2",
    ])


def bench_semantic(args, workdir: Path) -> dict:
    from mdrec.generate.stage import run_generate
    from mdrec.prepare.stage import run_prepare
    from mdrec.ray_session import ensure_ray
    from mdrec.storage import RunDir

    cfg = semantic_config(args.max_users)
    ensure_ray(cfg.ray)
    run_dir = RunDir(str(workdir / "run"))
    started = time.perf_counter()
    prepared = run_prepare(cfg, run_dir, log=log)
    prepare_seconds = time.perf_counter() - started

    lines: list[str] = []
    started = time.perf_counter()
    report = run_generate(cfg, run_dir, force=True, log=lambda m: (lines.append(m), log(m)))  # force: always measure
    wall = time.perf_counter() - started
    encoded = next((m for m in map(ENCODED.search, lines) if m), None)  # no line: embeddings reused
    t = report["timings"]
    return {
        "data": "amazon-food-kitchen (warm protocol, target Food)", "encoder": cfg.generate.encoder.model,
        "prepare_seconds": round(prepare_seconds, 1), "prepare_reused": prepared.reused,
        "max_users": args.max_users, "contexts": report["contexts"], "rows": report["rows"],
        "embeddings": "encoded" if encoded else "reused",
        "encoded_titles": int(encoded.group(1).replace(",", "")) if encoded else None,
        "encode_seconds": float(encoded.group(2)) if encoded else None,
        "backend_seconds": t["backend_seconds"], "stage_seconds": t["seconds"], "wall_seconds": round(wall, 2),
        "users_per_s_backend": round(report["contexts"] / t["backend_seconds"], 2) if t["backend_seconds"] else None,
        "users_per_s_stage": round(report["contexts"] / wall, 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="work folder (kept; its prepared run is reused)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short end-to-end check: {QUICK}, no semantic (options given still win)")
    parser.add_argument("--model", choices=["packaged", "tiny"], default=None,
                        help=f"vLLM: packaged:{PACKAGED} (default) or the tiny random Llama of tests/tiny_llm.py")
    parser.add_argument("--modes", default=None, help=f"vLLM: comma-separated, of {MODES} (default {FULL['modes']})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"vLLM: measurements of both sides (default {FULL['repeats']})")
    parser.add_argument("--contexts", type=int, default=None,
                        help=f"vLLM choose: contexts of the small run (default {FULL['contexts']})")
    parser.add_argument("--score-contexts", type=int, default=None,
                        help=f"vLLM score: contexts of the small run, {CANDIDATES} requests each "
                             f"(default {FULL['score_contexts']})")
    parser.add_argument("--scale", type=int, default=None,
                        help=f"vLLM: the large run has this many times more contexts (default {FULL['scale']})")
    parser.add_argument("--batch-size", type=int, default=64, help="vLLM: requests per engine batch (both sides)")
    parser.add_argument("--engine-cpus", type=float, default=1.0,
                        help="vLLM: CPUs reserved by the pipeline's engine actor")
    parser.add_argument("--bare-threads", type=int, default=None,
                        help="vLLM: threads of the bare engine (default: as many as the pipeline's engine actor gets)")
    parser.add_argument("--bare-building-prompts", action="store_true",
                        help="vLLM: also a bare loop that builds its prompts inside its clock "
                             "(the pipeline's whole job)")
    parser.add_argument("--max-users", type=int, default=2000, help="semantic: generate.users.max_users")
    parser.add_argument("--skip-vllm", action="store_true", help="skip the vLLM comparison")
    parser.add_argument("--skip-semantic", action="store_true", help="skip the semantic backend")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.skip_semantic = True
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES) or len(set(args.modes)) < len(args.modes):
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}")
    if args.scale < 2:
        parser.error("--scale must be at least 2 (the marginal rate needs two sizes)")
    if min(args.repeats, args.contexts, args.score_contexts) < 1:
        parser.error("--repeats, --contexts and --score-contexts must be at least 1")
    return args


def main() -> None:
    args = parse_args()

    # stdout carries the one JSON line and nothing else: vLLM logs to stdout, in the bare loop's
    # process and in Ray's workers (whose output Ray copies to the driver's stdout), so everything
    # written to file descriptor 1 from here on, by this process or its children, goes to stderr.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mdrec-bench-generate-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths must stay short: Ray's temp folder goes under /tmp, not the work folder.
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="mdrec-ray-", dir="/tmp"))
    started = time.perf_counter()
    results: dict = {"benchmark": "generate", "quick": args.quick}
    if not args.skip_vllm:
        results["vllm"] = bench_vllm(args, workdir)
    if not args.skip_semantic:
        results["semantic"] = bench_semantic(args, workdir)
    results.update({"seconds": round(time.perf_counter() - started, 1), "python": platform.python_version(),
                    "machine": f"{os.cpu_count()} cores", "workdir": str(workdir)})
    print(json.dumps(results), file=answer, flush=True)


if __name__ == "__main__":
    sys.exit(main())
