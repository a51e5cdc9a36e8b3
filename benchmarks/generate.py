"""Speed of the generate stage's backends: vLLM through the Ray pipeline vs a bare vLLM loop, and semantic.

vLLM (choose mode, structured JSON answers) on a tiny random-weight Llama built into the work
folder (tests/tiny_llm.py), on synthetic user contexts (10 history titles, 20 candidate titles):

- pipeline: `build_vllm(cfg, inputs).apply(contexts)`, what the generate stage runs: our prompt
  stage, ray.data.llm's engine actor (one engine), the postprocess (answer parsing);
- bare: the same token ids (from our `PromptStage`, built before the clock starts) and the same
  sampling params (JSON schema, temperature, per-row seed) through one in-process `vllm.LLM`,
  `llm.generate` in batches of the same size, answers parsed with `parse_choice`. It runs in a
  child process of its own, before Ray starts, so the two never share the CPUs;
- bare, building its prompts: the same, with the prompt stage run inside the clock: the whole
  job of the pipeline in one process, so the ratio against it is what Ray itself costs.

An engine actor of ray.data.llm takes ~30 s to start on CPU (its AsyncLLM keeps the engine core in
a process of its own), a bare `vllm.LLM` ~5 s plus the import of vllm (all in one process); with
the tiny model that start-up dwarfs the work, and what the pipeline costs at scale is its effect on
throughput. So each side runs at two sizes, N and `--scale` x N contexts (the small ones a
prefix of the large), each from a cold start, and the marginal throughput of a side is
(extra prompts) / (extra seconds): start-up cancels out. The overhead ratio is the pipeline's
marginal prompts/s over the bare loop's (goal: at least 0.9). Rates at the large size with
start-up included are reported too, so nothing is hidden.

Semantic: `prepare` (reused when the work folder already holds it) and the generate stage on
the shared data with configs/amazon-food-kitchen.yaml, backend semantic, warm protocol, target
Food, at most `--max-users` users; users/s over the backend's seconds and over the whole stage,
and the time to encode the item titles (from the stage's log; none when the run folder already
holds the embeddings, which the stage keeps). Prints one JSON line.

    python benchmarks/generate.py [--workdir DIR] [--contexts 256] [--scale 4] [--max-users 2000]
                                  [--skip-vllm] [--skip-semantic]
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
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "amazon-food-kitchen").resolve()
sys.path.insert(0, str(REPO))

DOMAINS = ["Food", "Kitchen"]  # domain_idx order, as prepare sorts them
HISTORY, CANDIDATES, PER_USER = 10, 20, 3
USERS_PER_SHARD = 512  # the stage's default: about one block of contexts per shard
ENGINE = {"max_model_len": 1024, "engine_kwargs": {"enforce_eager": True}}
# What ray.data.llm's engine actor gets from our backend (vllm.CPU_ENGINE_ENV, ENGINE_ENV), plus the
# in-process engine core that keeps a bare LLM's start at seconds (DESIGN.md, "Running on 2 cores").
BARE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}

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
    """n contexts (one user each, target Food) with CONTEXT_SCHEMA; row i depends on (seed, i) only."""
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


def vllm_config(model: Path, batch_size: int, engine_cpus: float):
    from mdrec.config import config_from_dict

    return config_from_dict({
        "name": "bench-generate", "seed": 0,
        "data": {"source": {"type": "table", "interactions": str(SHARED / "interactions.parquet"),
                            "items": str(SHARED / "items.parquet")}},
        "generate": {"backend": {"type": "vllm", "model": str(model), "mode": "choose", "num_actors": 1,
                                 "cpus_per_actor": engine_cpus, "batch_size": batch_size, **ENGINE},
                     "budget": {"per_user": PER_USER}},
        "ray": {"progress_bars": False, "num_cpus": 2},
    })


def engine_requests(cfg, contexts) -> list[dict]:
    """What our prompt stage sends the engine: token ids, sampling params and candidates per context."""
    return engine_requests_for(cfg.generate.backend, contexts, cfg.seed)


def engine_requests_for(backend, contexts, seed: int = 0) -> list[dict]:
    from mdrec.generate.backends.vllm import PromptStage

    stage = PromptStage(backend, PER_USER, seed)
    return [{"ids": r["tokenized_prompt"], "params": r["sampling_params"], "candidates": len(r["candidates"]),
             "problems": r["prompt_problems"]} for r in stage(contexts).to_pylist()]


# --------------------------------------------------------------------------- vLLM: the two sides


def run_pipeline(cfg, contexts) -> dict:
    """The backend as the stage runs it, from building the processor to the last result."""
    import ray.data

    from mdrec.generate.backends import BackendInputs
    from mdrec.generate.backends.vllm import build_vllm

    blocks = max(math.ceil(contexts.num_rows / USERS_PER_SHARD), 2 * cfg.generate.backend.num_actors)
    step = math.ceil(contexts.num_rows / blocks)
    parts = [contexts.slice(i, step) for i in range(0, contexts.num_rows, step)]
    inputs = BackendInputs(cfg, None, None, 5000, {}, len(DOMAINS), [], [0], log)
    started = time.perf_counter()
    results = build_vllm(cfg.generate.backend, inputs).apply(ray.data.from_arrow(parts)).take_all()
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "prompts": len(results), "users": len({r["user_idx"] for r in results}),
            "generated_tokens": sum(int(r["generated_tokens"]) for r in results),
            "answers_with_problems": sum(bool(len(r["problems"])) for r in results)}


def _bare_worker(model: str, engine: dict, requests: list[dict], batch_size: int, build=None) -> dict:
    """In a child process: one vLLM engine, the requests in batches; seconds from `import vllm` on.

    With `build = (backend config, contexts)` the prompts are built inside the clock too, by the
    same prompt stage: the whole job of the pipeline, in one process without Ray.
    """
    os.environ.update(BARE_ENV)
    started = time.perf_counter()
    if build is not None:
        requests = engine_requests_for(*build)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    from mdrec.generate.backends.answers import parse_choice

    llm = LLM(model=model, distributed_executor_backend="uni", max_model_len=engine["max_model_len"],
              structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
              **engine["engine_kwargs"])
    startup = time.perf_counter() - started
    generated = with_problems = 0
    for i in range(0, len(requests), batch_size):
        batch = requests[i:i + batch_size]
        prompts = [TokensPrompt(prompt_token_ids=r["ids"]) for r in batch]
        params = []
        for r in batch:
            p = dict(r["params"])
            p["structured_outputs"] = StructuredOutputsParams(**p["structured_outputs"])
            params.append(SamplingParams(**p))
        for r, out in zip(batch, llm.generate(prompts, params, use_tqdm=False)):
            answer = out.outputs[0]
            generated += len(answer.token_ids)
            _, problems = parse_choice(answer.text, r["candidates"], PER_USER)
            with_problems += bool(problems or r["problems"])
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "startup_seconds": round(startup, 2), "prompts": len(requests),
            "users": len(requests), "generated_tokens": generated, "answers_with_problems": with_problems}


def run_bare(cfg, requests: list[dict], contexts=None) -> dict:
    """The bare loop in a fresh process, which exits (engine and all) before anything else runs.
    Given `contexts`, it builds the prompts itself, inside its clock."""
    backend = cfg.generate.backend
    engine = {"max_model_len": backend.max_model_len, "engine_kwargs": dict(backend.engine_kwargs)}
    build = (backend, contexts, cfg.seed) if contexts is not None else None
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_bare_worker, backend.model, engine, [] if build else requests, backend.batch_size,
                           build).result()


def rates(run: dict) -> dict:
    s = run["seconds"]
    return {"prompts_per_s": round(run["prompts"] / s, 2), "users_per_s": round(run["users"] / s, 2),
            "generated_tokens_per_s": round(run["generated_tokens"] / s, 1)}


def marginal(small: dict, large: dict) -> float | None:
    """Prompts per second of the work the large run did beyond the small one (start-up cancels)."""
    extra = large["seconds"] - small["seconds"]
    return round((large["prompts"] - small["prompts"]) / extra, 2) if extra > 0 else None


def side(small: dict, large: dict) -> dict:
    return {"small": small, "large": large, "marginal_prompts_per_s": marginal(small, large),
            "large_with_startup": rates(large)}


def bench_vllm(args, workdir: Path) -> dict:
    from tests.tiny_llm import build_tiny_llm

    model = build_tiny_llm(workdir / "tiny-llama")
    cfg = vllm_config(model, args.batch_size, args.engine_cpus)
    sizes = (args.contexts, args.contexts * args.scale)
    contexts = synthetic_contexts(sizes[1])
    requests = engine_requests(cfg, contexts)
    prompt_tokens = [len(r["ids"]) for r in requests]
    log(f"vllm: {sizes[1]} contexts, prompts of {min(prompt_tokens)}-{max(prompt_tokens)} tokens")

    bare, bare_job = [], []
    for n in sizes:  # before Ray starts: nothing else holds the CPUs
        bare.append(run_bare(cfg, requests[:n]))
        log(f"vllm bare loop, {n} contexts: {bare[-1]}")
        bare_job.append(run_bare(cfg, [], contexts.slice(0, n)))
        log(f"vllm bare loop building its prompts, {n} contexts: {bare_job[-1]}")

    from mdrec.ray_session import ensure_ray

    ensure_ray(cfg.ray)
    pipeline = []
    for n in sizes:
        pipeline.append(run_pipeline(cfg, contexts.slice(0, n)))
        log(f"vllm pipeline, {n} contexts: {pipeline[-1]}")

    result = {"model": "tiny random Llama (tests/tiny_llm.py, 2 layers, hidden 64)", "mode": "choose",
              "batch_size": args.batch_size, "engine_cpus": args.engine_cpus, "max_tokens": cfg.generate.backend.sampling.max_tokens,
              "contexts": list(sizes), "mean_prompt_tokens": round(sum(prompt_tokens) / len(prompt_tokens), 1),
              "pipeline": side(*pipeline), "bare": side(*bare), "bare_building_prompts": side(*bare_job)}
    p, b = result["pipeline"]["marginal_prompts_per_s"], result["bare"]["marginal_prompts_per_s"]
    result["overhead_ratio"] = round(p / b, 3) if p and b else None  # goal: >= 0.9
    # Against a loop that does the pipeline's whole job (prompts, engine, parsing) in one process:
    # what Ray itself costs.
    j = result["bare_building_prompts"]["marginal_prompts_per_s"]
    result["overhead_ratio_same_job"] = round(p / j, 3) if p and j else None
    # Greedy decoding with the same seeds: both sides should write the same answers.
    result["same_generated_tokens"] = all(x["generated_tokens"] == y["generated_tokens"] for x, y in zip(pipeline, bare))
    return result


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
    parser.add_argument("--contexts", type=int, default=256, help="vLLM: contexts of the small run")
    parser.add_argument("--scale", type=int, default=4, help="vLLM: the large run has this many times more contexts")
    parser.add_argument("--batch-size", type=int, default=64, help="vLLM: contexts per engine batch (both sides)")
    parser.add_argument("--engine-cpus", type=float, default=1.0, help="vLLM: CPUs reserved by the pipeline's engine actor")
    parser.add_argument("--max-users", type=int, default=2000, help="semantic: generate.users.max_users")
    parser.add_argument("--skip-vllm", action="store_true", help="skip the vLLM comparison")
    parser.add_argument("--skip-semantic", action="store_true", help="skip the semantic backend")
    args = parser.parse_args()
    if args.scale < 2:
        parser.error("--scale must be at least 2 (the marginal rate needs two sizes)")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mdrec-bench-generate-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths must stay short: Ray's temp folder goes under /tmp, not the work folder.
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="mdrec-ray-", dir="/tmp"))
    results: dict = {"benchmark": "generate"}
    if not args.skip_vllm:
        results["vllm"] = bench_vllm(args, workdir)
    if not args.skip_semantic:
        results["semantic"] = bench_semantic(args, workdir)
    results.update({"python": platform.python_version(), "machine": f"{os.cpu_count()} cores", "workdir": str(workdir)})
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
