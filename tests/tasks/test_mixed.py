"""Joint text + MQAR batches in one byte vocabulary (linearlab.tasks.mixed)."""

import math

import pytest
import torch

from linearlab.tasks.mixed import MQAR_MARKER, MixedBatches, mixed_loss, mqar_bytes
from linearlab.tasks.mqar import IGNORE_INDEX


def test_mqar_rows_are_marked_bytes_and_keep_every_query():
    x, y = mqar_bytes(seq_len=256, num_kv_pairs=32, num_examples=16, seed=3)
    assert x.shape == y.shape == (16, 256) and x.dtype == torch.int64
    assert (x[:, 0] == MQAR_MARKER).all() and x.min() >= 0 and x.max() < 256
    assert ((y != IGNORE_INDEX).sum(1) == 32).all()
    for row_x, row_y in zip(x, y):
        keys, values = row_x[1:65:2], row_x[2:66:2]
        lookup = dict(zip(keys.tolist(), values.tolist()))
        for pos in (row_y != IGNORE_INDEX).nonzero().flatten().tolist():
            # the input at a query position is a key; its label is that key's value
            assert lookup[row_x[pos].item()] == row_y[pos].item() >= 128


def test_text_never_contains_the_marker():
    from linearlab.tasks.text import ByteCorpus

    corpus = ByteCorpus.from_files(max_bytes=500_000)
    assert not (corpus.train == MQAR_MARKER).any() and not (corpus.val == MQAR_MARKER).any()


def test_mixed_batches_are_a_function_of_the_step_and_cycle_kv_counts():
    text = torch.randint(1, 128, (5000,), dtype=torch.uint8)
    batches = MixedBatches(text, seq_len=64, kv_pairs=[2, 8], lm_rows=3, mqar_rows=4, seed=1)
    x, y, is_mqar = batches(7)
    assert x.shape == y.shape == (7, 64) and is_mqar.tolist() == [False] * 3 + [True] * 4
    assert torch.equal(y[:3, :-1], x[:3, 1:])  # text rows: next-byte targets
    assert ((y[3:] != IGNORE_INDEX).sum(1)).tolist() == [2, 8, 2, 8]
    again = batches(7)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    assert not torch.equal(x, batches(8)[0])
    held_out = mqar_bytes(64, 8, 4, batches.test_seed())[0]
    assert not any(torch.equal(held_out[i], x[4]) for i in range(4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 258}, "seq_len"),
        ({"seq_len": 63}, "seq_len"),
        ({"kv_pairs": [16]}, "num_kv_pairs"),
        ({"lm_rows": 0, "mqar_rows": 0}, "lm_rows"),
    ],
)
def test_mixed_batches_reject_impossible_settings(kwargs, message):
    args = {"train_bytes": torch.ones(500, dtype=torch.uint8), "seq_len": 64, "kv_pairs": [4],
            "lm_rows": 2, "mqar_rows": 2, **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        MixedBatches(**args)


def test_mixed_loss_weights_each_task_by_its_own_mean():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 256)
    targets = torch.randint(0, 256, (4, 6))
    targets[2:, :5] = IGNORE_INDEX  # MQAR rows: one labelled position each
    is_mqar = torch.tensor([False, False, True, True])
    loss, parts = mixed_loss(logits, targets, is_mqar, mqar_weight=0.25)
    lm = torch.nn.functional.cross_entropy(logits[:2].flatten(0, 1), targets[:2].flatten())
    mq = torch.nn.functional.cross_entropy(logits[2:, 5], targets[2:, 5])
    assert loss.item() == pytest.approx(0.75 * lm.item() + 0.25 * mq.item(), rel=1e-6)
    assert parts == pytest.approx({"lm_ce": lm.item(), "mqar_ce": mq.item()}, rel=1e-6)
    # uniform logits cost ln(256) nats on every task
    flat, _ = mixed_loss(torch.zeros(4, 6, 256), targets, is_mqar)
    assert flat.item() == pytest.approx(math.log(256))
