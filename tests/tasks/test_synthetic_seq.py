"""The copy / reverse / sort / add tasks (``tasks/synthetic_seq.py``): answers and labels."""

from __future__ import annotations

import pytest
import torch

from linearlab.tasks.synthetic_seq import TASKS, exact_match, task_batch


def _solve(prompt: str) -> str:
    mark, body = prompt[0], prompt[1:-1]
    if mark == "A":
        a, b = body.split("+")
        total = int(a[::-1]) + int(b[::-1])
        return f"{total:0{len(a) + 1}d}"[::-1]
    return {"C": body, "R": body[::-1], "S": "".join(sorted(body))}[mark]


def test_rows_hold_correct_answers_and_only_answers_are_labelled():
    x, y, which = task_batch(list(TASKS), 200, seed=0, length=6)
    assert set(which.tolist()) == {0, 1, 2, 3}
    for row, tgt in zip(x, y):
        text = bytes(row.tolist()).decode()
        prompt = text[: text.index("=") + 1]
        answer = _solve(prompt)
        labelled = tgt != -100
        assert bytes(tgt[labelled].tolist()).decode() == answer
        start = len(prompt) - 1  # the answer's first byte is predicted from the '=' position
        assert labelled.nonzero().flatten().tolist() == list(range(start, start + len(answer)))


def test_exact_match_is_all_answer_positions_right():
    x, y, _ = task_batch("sort", 4, seed=1)

    def oracle(ids, wrong_row=None):
        logits = torch.full((*ids.shape, 256), -1.0)
        t = y.clone()
        t[t == -100] = 0
        logits.scatter_(-1, t.unsqueeze(-1), 1.0)
        if wrong_row is not None:
            pos = int((y[wrong_row] != -100).nonzero()[-1])
            logits[wrong_row, pos] = 0.0
            logits[wrong_row, pos, 0] = 5.0
        return logits

    assert exact_match(oracle, x, y).all()
    assert exact_match(lambda ids: oracle(ids, wrong_row=2), x, y).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="tasks: expected names from"):
        task_batch("multiply", 2, seed=0)
