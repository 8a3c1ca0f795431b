"""Addition problems answered in several equally correct styles: a response-strategy benchmark.

A prompt is ``"Q:{a}+{b} A:"`` (bytes); a *strategy* writes the response to it in its own style,
always with the right sum and ending in ``";"``. The target model is pretrained on one style
(``direct``) over small numbers; fine-tuning on data of each strategy over larger numbers then shows
which style the target learns best from (Ren, Chen, Liu, arXiv 2502.11779, in miniature).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

STRATEGIES: dict[str, Callable[[int, int], str]] = {
    "direct": lambda a, b: f"{a + b};",
    "equals": lambda a, b: f"={a + b};",
    "restate": lambda a, b: f"{a}+{b}={a + b};",
    "swap": lambda a, b: f"{b}+{a}={a + b};",
    "verbose": lambda a, b: f"sum is {a + b};",
    "spaced": lambda a, b: " ".join(str(a + b)) + ";",
}


def prompt(a: int, b: int) -> str:
    return f"Q:{a}+{b} A:"


def problems(n: int, max_value: int, seed: int) -> list[tuple[int, int]]:
    """``n`` pairs ``(a, b)`` uniform in ``[0, max_value]`` (deterministic in ``seed``)."""
    if n < 1 or max_value < 0:
        raise ValueError(f"n, max_value: expected n >= 1 and max_value >= 0, got {n}, {max_value}")
    g = torch.Generator().manual_seed(seed)
    return [tuple(row) for row in torch.randint(0, max_value + 1, (n, 2), generator=g).tolist()]


def response(strategy: str, a: int, b: int) -> str:
    """The response of ``strategy`` to ``a + b``; ValueError naming the strategies for an unknown one."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: unknown {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](a, b)


def parse_answer(text: str) -> int | None:
    """The answer in a response: the digits (spaces removed) after the last ``=`` or, failing
    that, the last number before the first ``";"``; None if there is none."""
    head = text.split(";", 1)[0]
    tail = head.rsplit("=", 1)[-1]
    numbers = re.findall(r"\d+", tail.replace(" ", ""))
    return int(numbers[-1]) if numbers else None


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))
