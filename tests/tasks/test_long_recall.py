"""The long-range recall rows: layout, far keys, and the scorer."""

import pytest
import torch

from linearlab.tasks.long_recall import KEY_BYTES, VALUE_BYTES, recall_accuracy, recall_rows

TEXT = torch.tensor(list(b"def f(x):\n    return x * 2  # caf\xc3\xa9\n" * 40), dtype=torch.uint8)


def test_rows_hold_pairs_filler_and_queries_in_order():
    rows, mask = recall_rows(TEXT, 5, 80, 3, torch.Generator().manual_seed(0))
    assert rows.shape == mask.shape == (5, 80)
    for row, m in zip(rows, mask):
        keys, values = row[0:6:2], row[1:6:2]
        assert all(int(k) in KEY_BYTES for k in keys) and all(int(v) in VALUE_BYTES for v in values)
        filler = row[6:74]
        assert int(filler.max()) < 128  # no key or value byte can appear by chance in between
        pairs = dict(zip(keys.tolist(), values.tolist()))
        answered = m.nonzero().flatten().tolist()
        assert answered == [74, 76, 78]
        for t in answered:
            assert pairs[int(row[t])] == int(row[t + 1])  # each query key is followed by its value
        assert sorted(row[74::2].tolist()) == sorted(keys.tolist())


def test_accuracy_scores_only_answers():
    rows, mask = recall_rows(TEXT, 4, 40, 2, torch.Generator().manual_seed(1))
    perfect = torch.nn.functional.one_hot(torch.cat([rows[:, 1:], rows[:, :1]], 1), 256).float()
    assert recall_accuracy(perfect, rows, mask) == 1.0
    wrong = perfect.clone()
    t = int(mask[0].nonzero()[0])
    wrong[0, t] = torch.nn.functional.one_hot(torch.tensor(3), 256).float()
    assert recall_accuracy(wrong, rows, mask) == pytest.approx(7 / 8)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="num_pairs: must be in"):
        recall_rows(TEXT, 1, 80, 65, torch.Generator())
    with pytest.raises(ValueError, match="seq_len: 16 leaves no room"):
        recall_rows(TEXT, 1, 16, 4, torch.Generator())
