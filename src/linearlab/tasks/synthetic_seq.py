"""Four byte-level sequence-to-sequence tasks: copy, reverse, sort and add.

One row is a task letter, the input, ``=`` and the answer, as bytes (token id = byte value)::

    copy     "C" + s + "=" + s                  s: ``length`` letters of ``a..h``
    reverse  "R" + s + "=" + reversed(s)
    sort     "S" + s + "=" + sorted(s)
    add      "A" + a + "+" + b + "=" + (a + b)  a, b: ``digits``-digit numbers, zero-padded, and
                                                the ``digits + 1``-digit sum, all written least
                                                significant digit first

Rows of one batch are right-padded with ``PAD`` (``"."``) to one length; targets are the next
byte at answer positions only (``-100`` elsewhere), so a model's loss and exact match cover
exactly the answers. With ``digits = length - 3`` every task's row has ``2 length + 2`` bytes.
Used by the ``lora-mixer`` and ``migu`` recipes.
"""

from __future__ import annotations

import torch

from linearlab.tasks.mqar import IGNORE_INDEX

TASKS = ("copy", "reverse", "sort", "add")
LETTERS = "abcdefgh"
PAD = "."
_MARK = {"copy": "C", "reverse": "R", "sort": "S", "add": "A"}


def task_example(task: str, generator: torch.Generator, length: int = 6) -> tuple[str, str]:
    """One ``(prompt, answer)`` pair of ``task``; the prompt ends with ``=``."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if not isinstance(length, int) or length < 4:
        raise ValueError(f"length: expected an int >= 4, got {length!r}")
    if task == "add":
        digits = length - 3
        a, b = (int(torch.randint(10**digits, (), generator=generator)) for _ in range(2))
        # least significant digit first: each answer digit then depends only on digits already seen
        # and one carry, which a tiny causal model can learn (most significant first needs look-ahead)
        rev = lambda v, w: f"{v:0{w}d}"[::-1]  # noqa: E731
        return f"A{rev(a, digits)}+{rev(b, digits)}=", rev(a + b, digits + 1)
    s = "".join(LETTERS[int(i)] for i in torch.randint(len(LETTERS), (length,), generator=generator))
    answer = {"copy": s, "reverse": s[::-1], "sort": "".join(sorted(s))}[task]
    return f"{_MARK[task]}{s}=", answer


def task_batch(
    tasks: str | list[str], n: int, seed: int, length: int = 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` rows: ``(input_ids [n, T], targets [n, T], task index [n])``.

    ``tasks`` is one task name or a list to draw each row's task from uniformly.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names or any(t not in TASKS for t in names):
        raise ValueError(f"tasks: expected names from {TASKS}, got {tasks!r}")
    g = torch.Generator().manual_seed(seed)
    rows, answers, which = [], [], []
    for _ in range(n):
        task = names[int(torch.randint(len(names), (), generator=g))]
        prompt, answer = task_example(task, g, length)
        rows.append(prompt + answer)
        answers.append((len(prompt), len(answer)))
        which.append(TASKS.index(task))
    width = max(len(r) for r in rows)
    full = torch.tensor([list((r + PAD * (width - len(r))).encode()) for r in rows], dtype=torch.long)
    inputs = full[:, :-1]
    targets = torch.full_like(inputs, IGNORE_INDEX)
    for i, (start, size) in enumerate(answers):
        # the answer's bytes sit at full[start : start + size]; they are predicted from one step earlier
        targets[i, start - 1 : start - 1 + size] = full[i, start : start + size]
    return inputs, targets, torch.tensor(which)


@torch.no_grad()
def exact_match(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row, whether the model's argmax is right at every answer position (``[n]`` bool).

    With teacher forcing this equals greedy decoding of the whole answer: if every next byte is the
    argmax given the correct prefix, greedy decoding produces exactly that prefix.
    """
    out = model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    pred = logits.argmax(-1)
    labelled = targets != IGNORE_INDEX
    return ((pred == targets) | ~labelled).all(-1)
