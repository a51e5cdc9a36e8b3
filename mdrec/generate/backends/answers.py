"""Strict parsing of an LLM's `choose` answer. Its output is untrusted input.

The only accepted shape is a JSON object `{"items": [n, ...], "least": m}` of integers naming
positions 1..C in the numbered candidate list (`least`, the item the user would least likely buy,
is optional: without it the context simply has no rejected item). Anything else is counted under a reason and never raises;
what survives is a list of candidate positions, so no answer can name an item outside the list.
"""

from __future__ import annotations

import enum
import json


class Problem(str, enum.Enum):
    empty_answer = "empty_answer"  # the model wrote nothing (or only whitespace)
    unparseable = "unparseable"  # not JSON, or not {"items": [integers]}
    no_items = "no_items"  # a valid answer with an empty list
    out_of_range = "out_of_range"  # a number that names no candidate (dropped)
    repeat = "repeat"  # a number given twice (the repeat is dropped)
    too_many = "too_many"  # more numbers than allowed (the rest are dropped)
    prompt_truncated = "prompt_truncated"  # the history was cut to fit max_model_len
    prompt_too_long = "prompt_too_long"  # even without history the prompt does not fit: skipped
    engine_error = "engine_error"  # the engine failed on this prompt: skipped
    missing_logprobs = "missing_logprobs"  # score mode: a title's logprobs did not all come back (e.g. its first
    # tokens, shared with another candidate's title, filled a block read from the prefix cache): unscored
    least_invalid = "least_invalid"  # `least` names no candidate, or one of the picks: no rejected item


def parse_choice(text: str | None, num_candidates: int, limit: int) -> tuple[list[int], list[str]]:
    """0-based candidate positions in answer order, and the problems found."""
    if text is None or not text.strip():
        return [], [Problem.empty_answer.value]
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        return [], [Problem.unparseable.value]
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        return [], [Problem.unparseable.value]
    numbers = answer["items"]
    # bool is an int in Python; true/false are not numbers here.
    if any(isinstance(n, bool) or not isinstance(n, int) for n in numbers):
        return [], [Problem.unparseable.value]
    if not numbers:
        return [], [Problem.no_items.value]
    problems: set[str] = set()
    positions: list[int] = []
    for n in numbers:
        if not 1 <= n <= num_candidates:
            problems.add(Problem.out_of_range.value)
        elif n - 1 in positions:
            problems.add(Problem.repeat.value)
        elif len(positions) >= limit:
            problems.add(Problem.too_many.value)
        else:
            positions.append(n - 1)
    return positions, sorted(problems)


def parse_least(text: str | None, num_candidates: int, picks: list[int]) -> tuple[int | None, list[str]]:
    """The 0-based position the answer names as least likely (`least`), or None; never a pick."""
    try:
        answer = json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None, []  # the picks' parse already counted it
    if not isinstance(answer, dict) or "least" not in answer:
        return None, []
    n = answer["least"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= num_candidates or n - 1 in picks:
        return None, [Problem.least_invalid.value]
    return n - 1, []
