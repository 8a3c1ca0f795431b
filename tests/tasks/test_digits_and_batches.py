"""The bundled digits split and the shuffled in-memory batches."""

import pytest
import torch

from linearlab.tasks.digits import digits_split
from linearlab.tasks.tensor_batches import ShuffledBatches


def test_digits_split_is_stratified_seeded_and_shaped():
    xtr, ytr, xte, yte = digits_split(0.2, seed=3)
    assert xtr.shape == (len(ytr), 64) and len(ytr) + len(yte) == 1797
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) == 1.0
    # every class keeps its share of the test set (stratified), within one example
    share = torch.bincount(yte, minlength=10) / torch.bincount(torch.cat([ytr, yte]), minlength=10)
    assert float((share - 0.2).abs().max()) < 0.01
    again = digits_split(0.2, seed=3, images=True)
    assert again[0].shape == (len(ytr), 1, 8, 8) and torch.equal(again[0].flatten(1), xtr)
    assert not torch.equal(digits_split(0.2, seed=4)[1], ytr)
    with pytest.raises(ValueError, match="test_fraction: expected a value in"):
        digits_split(1.5)


def test_shuffled_batches_cover_each_epoch_once_and_are_a_function_of_the_step():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    b = ShuffledBatches(x, y, 4, seed=1)
    epoch0 = torch.cat([b(s)[1] for s in range(3)])  # 4 + 4 + 2: the last batch is short
    assert sorted(epoch0.tolist()) == list(range(10)) and len(b(2)[1]) == 2
    assert not torch.equal(torch.cat([b(s)[1] for s in range(3, 6)]), epoch0)  # reshuffled
    assert torch.equal(b(4)[1], ShuffledBatches(x, y, 4, seed=1)(4)[1])  # no hidden state
    assert torch.equal(b(4)[0][:, 0].long(), b(4)[1])  # inputs and targets stay paired
    with pytest.raises(ValueError, match="batch_size: expected 1..10"):
        ShuffledBatches(x, y, 11, seed=0)
    with pytest.raises(ValueError, match="x, y: expected as many inputs as targets"):
        ShuffledBatches(x, y[:3], 2, seed=0)
