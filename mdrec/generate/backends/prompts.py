"""Prompts from user contexts, fitted to the model's context window.

Titles are data, not instructions: each is cut to `MAX_TITLE_CHARS`, stripped of line breaks (so
no title can start a line that looks like a new candidate or a new instruction) and the answer
is only ever read as candidate numbers (see answers.py). When a prompt is longer than the
window allows, its oldest history titles go first; if the candidates alone do not fit, the
context is skipped and counted, never failing the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mdrec.config import DEFAULT_PROMPT, DEFAULT_SCORE_PROMPT, LLMMode, VllmBackendConfig
from mdrec.generate.backends.answers import Problem

MAX_TITLE_CHARS = 200


def clean_title(title: str | None) -> str:
    text = " ".join((title or "").split())
    return text[:MAX_TITLE_CHARS] or "(untitled)"


def history_lines(titles: list, domains: list) -> list[str]:
    return [f"- [{d}] {clean_title(t)}" for t, d in zip(titles, domains) if t]


def candidate_lines(titles: list) -> str:
    return "\n".join(f"{i}. {clean_title(t)}" for i, t in enumerate(titles, start=1))


@dataclass
class Prompt:
    text: str | None  # None: skipped (see problems)
    tokens: int
    problems: list[str]


class PromptBuilder:
    """Renders a context's prompt in the configured template, then fits it to the window."""

    def __init__(self, cfg: VllmBackendConfig, per_user: int, count_tokens: Callable[[str], int],
                 wrap: Callable[[str], str] | None = None):
        self.cfg, self.per_user, self.count, self.wrap = cfg, per_user, count_tokens, wrap or (lambda s: s)
        default = DEFAULT_PROMPT if cfg.mode is LLMMode.choose else DEFAULT_SCORE_PROMPT
        self.template = cfg.prompt_template or default
        # Room for the answer (choose) or for the longest candidate title (score).
        reserve = cfg.sampling.max_tokens if cfg.mode is LLMMode.choose else 64
        self.budget = cfg.max_model_len - reserve

    def render(self, history: list[str], domain: str, candidates: list | None) -> str:
        body = self.template.format(history="\n".join(history), domain=domain, k=self.per_user,
                                    candidates=candidate_lines(candidates) if candidates is not None else "")
        return self.wrap(body)

    def build(self, history_titles: list, history_domains: list, domain: str, candidates: list | None) -> Prompt:
        history = history_lines(history_titles, history_domains)
        text = self.render(history, domain, candidates)
        tokens = self.count(text)
        if tokens <= self.budget:
            return Prompt(text, tokens, [])
        # Too long: binary search the most recent history that fits.
        lo, hi = 0, len(history) - 1
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            trial = self.render(history[len(history) - mid:] if mid else [], domain, candidates)
            n = self.count(trial)
            if n <= self.budget:
                best, lo = (trial, n), mid + 1
            else:
                hi = mid - 1
        if best is None:
            return Prompt(None, tokens, [Problem.prompt_too_long.value])
        return Prompt(best[0], best[1], [Problem.prompt_truncated.value])
