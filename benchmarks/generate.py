"""DOCSTRING"""

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
GOAL = 0.9  # pipeline / bare marginal throughput
# The sizes of a whole run and of --quick; an option given on the command line wins over either.
FULL = {"model": "packaged", "modes": "choose,score", "repeats": 3, "contexts": 32, "score_contexts": 8, "scale": 4}
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


def _bare_worker(model: str, engine: dict, mode: str, requests: list[dict], batch_size: int, build=None) -> dict:
    """In a child process: one vLLM engine, the requests in batches; seconds from `import vllm` on.

    With `build = (backend config, contexts, seed, model folder)` the prompts are built inside the
    clock too, by the same prompt stage: the whole job of the pipeline, in one process without Ray.
    """
    os.environ.update(BARE_ENV)
    started = time.perf_counter()
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
    return tally.summary(time.perf_counter() - started, first, engine_startup_seconds=round(startup, 2))


def engine_kwargs(cfg, model_folder: str) -> dict:
    """The engine arguments ray.data.llm's engine actor gets from our backend (processor_config:
    structured output in choose mode; in score mode no tokenizer and the prefix cache, ...), less
    the processor's own `task_type`: the bare engine is built the same way."""
    from mdrec.generate.backends.vllm import processor_config

    kwargs = dict(processor_config(cfg.generate.backend, PER_USER, model_folder).engine_kwargs)
    kwargs.pop("task_type", None)
    return kwargs


def run_bare(cfg, model_folder: str, requests: list[dict], contexts=None) -> dict:
    """The bare loop in a fresh process, which exits (engine and all) before anything else runs.
    Given `contexts`, it builds the prompts itself, inside its clock."""
    engine = engine_kwargs(cfg, model_folder)
    backend = cfg.generate.backend
    build = (backend, contexts, cfg.seed, model_folder) if contexts is not None else None
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_bare_worker, model_folder, engine, backend.mode.value, [] if build else requests,
                           backend.batch_size, build).result()


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
    marginal = {f"{key}_per_s": _round((large[key] - small[key]) / extra if extra > 0 else None, 1 if "tokens" in key else 2)
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
    keys = ["contexts", "complete_contexts", "requests", "prompt_tokens"] + (["generated_tokens"] if mode == "choose" else [])
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
            runs["bare"].append(run_bare(plan["cfg"], folder, plan["requests"][:count]))
            log(f"  bare {mode}, {n} contexts: {_brief(runs['bare'][-1])}")
            if args.bare_building_prompts:
                runs["bare_building_prompts"].append(run_bare(plan["cfg"], folder, [], plan["contexts"].slice(0, n)))
                log(f"  bare building its prompts {mode}, {n} contexts: {_brief(runs['bare_building_prompts'][-1])}")

    def pipeline_runs(mode: str, plan: dict, runs: dict) -> None:
        for n in plan["sizes"]:
            runs["pipeline"].append(run_pipeline(plan["cfg"], plan["contexts"].slice(0, n)))
            log(f"  pipeline {mode}, {n} contexts: {_brief(runs['pipeline'][-1])}")

    results = {mode: [] for mode in args.modes}
    began = time.perf_counter()
    for repeat in range(args.repeats):
        runs = {mode: {"pipeline": [], "bare": []} | ({"bare_building_prompts": []} if args.bare_building_prompts else {})
                for mode in args.modes}
        # Alternate which side goes first, so a drift in the machine's speed favours neither.
        for first in (["bare", "pipeline"] if repeat % 2 == 0 else ["pipeline", "bare"]):
            log(f"vllm repeat {repeat + 1}/{args.repeats}: {first} ({time.perf_counter() - began:.0f}s so far)")
            if first == "pipeline":
                ensure_ray(plans[args.modes[0]]["cfg"].ray)
            for mode in args.modes:
                (pipeline_runs if first == "pipeline" else bare_runs)(mode, plans[mode], runs[mode])
            if first == "pipeline":
                ray.shutdown()  # its workers would share the CPUs with the bare loop
        for mode in args.modes:
            results[mode].append(compare(mode, runs[mode]))
            log(f"vllm repeat {repeat + 1} {mode}: ratio {results[mode][-1]['ratio']}, "
                f"same work {results[mode][-1]['same_work']}")
    out = {"model": described, "model_source": folder, "batch_size": args.batch_size, "engine_cpus": args.engine_cpus,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="work folder (kept; its prepared run is reused)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short end-to-end check: {QUICK}, no semantic (options given still win)")
    parser.add_argument("--model", choices=["packaged", "tiny"], default=None,
                        help=f"vLLM: packaged:{PACKAGED} (default) or the tiny random Llama of tests/tiny_llm.py")
    parser.add_argument("--modes", default=None, help=f"vLLM: comma-separated, of {MODES} (default {FULL['modes']})")
    parser.add_argument("--repeats", type=int, default=None, help=f"vLLM: measurements of both sides (default {FULL['repeats']})")
    parser.add_argument("--contexts", type=int, default=None,
                        help=f"vLLM choose: contexts of the small run (default {FULL['contexts']})")
    parser.add_argument("--score-contexts", type=int, default=None,
                        help=f"vLLM score: contexts of the small run, {CANDIDATES} requests each (default {FULL['score_contexts']})")
    parser.add_argument("--scale", type=int, default=None,
                        help=f"vLLM: the large run has this many times more contexts (default {FULL['scale']})")
    parser.add_argument("--batch-size", type=int, default=64, help="vLLM: requests per engine batch (both sides)")
    parser.add_argument("--engine-cpus", type=float, default=1.0, help="vLLM: CPUs reserved by the pipeline's engine actor")
    parser.add_argument("--bare-building-prompts", action="store_true",
                        help="vLLM: also a bare loop that builds its prompts inside its clock (the pipeline's whole job)")
    parser.add_argument("--max-users", type=int, default=2000, help="semantic: generate.users.max_users")
    parser.add_argument("--skip-vllm", action="store_true", help="skip the vLLM comparison")
    parser.add_argument("--skip-semantic", action="store_true", help="skip the semantic backend")
    args = parser.parse_args()
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
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
