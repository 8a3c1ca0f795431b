"""In-context regression prompts: seeded streams, targets, covariance and the resumable batch source."""

import json

import pytest
import torch

from linearlab.tasks.icl import ICLTask, PromptStream


def test_same_seed_same_stream_and_shapes():
    a, b = ICLTask(4, 7, seed=3), ICLTask(4, 7, seed=3)
    ba, bb = a.sample(5), b.sample(5)
    assert ba.x.shape == (5, 7, 4) and ba.y.shape == (5, 7) and ba.w.shape == (5, 4)
    assert torch.equal(ba.x, bb.x) and torch.equal(ba.y, bb.y)
    assert not torch.equal(a.sample(5).x, ba.x)  # the stream moves on
    assert next(ICLTask(4, 7, seed=3).batches(5)).x.equal(ba.x)


def test_linear_targets_and_noise_level():
    task = ICLTask(3, 50, noise_std=0.5, seed=0)
    b = task.sample(400)
    resid = b.y - (b.x @ b.w.unsqueeze(-1)).squeeze(-1)
    assert abs(float(resid.std()) - 0.5) < 0.02
    clean = ICLTask(3, 5, seed=1).sample(8)
    torch.testing.assert_close(clean.y, (clean.x @ clean.w.unsqueeze(-1)).squeeze(-1))


def test_covariance_is_respected():
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    x = ICLTask(2, 100, covariance=cov, seed=0).sample(200).x.reshape(-1, 2).double()
    torch.testing.assert_close(x.T @ x / len(x), cov.double(), atol=0.05, rtol=0)


def test_sparse_and_relu_targets():
    b = ICLTask(6, 4, target="sparse_linear", sparsity=2, seed=0).sample(50)
    assert ((b.w != 0).sum(-1) == 2).all()
    r = ICLTask(3, 9, target="relu2", hidden=7, seed=0).sample(4)
    assert r.w is None and r.y.shape == (4, 9) and torch.isfinite(r.y).all()
    # a ReLU net is not linear: least squares leaves a clear residual on many points
    r = ICLTask(3, 200, target="relu2", seed=0).sample(1)
    w = torch.linalg.lstsq(r.x[0], r.y[0].unsqueeze(-1)).solution
    assert float(((r.x[0] @ w).squeeze(-1) - r.y[0]).pow(2).mean()) > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d": 0, "n_points": 3}, "d: expected an integer >= 1, got 0"),
        ({"d": 2, "n_points": 0}, "n_points: expected an integer >= 1, got 0"),
        ({"d": 2, "n_points": 3, "noise_std": -1.0}, "noise_std: expected a finite value >= 0, got -1.0"),
        ({"d": 2, "n_points": 3, "target": "cubic"}, "target: expected one of"),
        ({"d": 2, "n_points": 3, "w_std": 0.0}, "w_std: expected a finite value > 0"),
        ({"d": 2, "n_points": 3, "sparsity": 3}, "sparsity: expected an integer in [1, d=2], got 3"),
        ({"d": 2, "n_points": 3, "hidden": 0}, "hidden: expected an integer >= 1"),
        (
            {"d": 2, "n_points": 3, "covariance": torch.eye(3)},
            "covariance: expected a [2, 2] tensor, got (3, 3)",
        ),
        ({"d": 2, "n_points": 3, "covariance": torch.tensor([[1.0, 0.2], [0.0, 1.0]])}, "symmetric"),
        ({"d": 2, "n_points": 3, "covariance": -torch.eye(2)}, "positive-definite"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        ICLTask(**kwargs)
    assert message in str(err.value)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        ICLTask(2, 3).sample(0)
    with pytest.raises(ValueError, match="n_points: expected an integer >= 1, got -1"):
        ICLTask(2, 3).sample(2, n_points=-1)


def test_prompt_stream_resumes_exactly_from_its_json_state():
    """A stream restored from a JSON round trip of its state continues with the very batches the
    uninterrupted stream draws next (what a resumed training sees)."""
    whole = PromptStream(ICLTask(3, 5, noise_std=0.1, seed=7), batch_size=4)
    batches = [whole(step) for step in range(6)]
    first = PromptStream(ICLTask(3, 5, noise_std=0.1, seed=7), batch_size=4)
    for step in range(3):
        first(step)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = PromptStream(ICLTask(3, 5, noise_std=0.1, seed=123), batch_size=4)  # another seed: overwritten
    resumed.load_state_dict(state)
    for step in range(3, 6):
        x, y = resumed(step)
        assert torch.equal(x, batches[step][0]) and torch.equal(y, batches[step][1])
        assert x.shape == (4, 5, 3) and y.shape == (4, 5)


def test_bad_stream_state_and_batch_size():
    with pytest.raises(ValueError, match="state: expected"):
        ICLTask(2, 3).load_state_dict({"generator": "AAAA"})
    with pytest.raises(ValueError, match="state: expected"):
        ICLTask(2, 3).load_state_dict({})
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        PromptStream(ICLTask(2, 3), 0)
