"""Response selection: NLL against a direct computation, edit similarity, Spearman, the selection rule."""

import pytest
import torch

from linearlab.analysis.response_selection import (
    alignment_score,
    edit_similarity,
    own_responses,
    response_nll,
    select_response_method,
    self_aligned_nll,
    spearman,
)
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM
from linearlab.tasks.addition_styles import STRATEGIES, parse_answer, response


def _model():
    return MixerLM(
        ModelConfig(mixer="softmax", d_model=32, n_layers=1, mixer_kwargs={"num_heads": 2}, vocab_size=30)
    ).eval()


def test_response_nll_scores_only_the_response_tokens():
    model = _model()
    prompt, resp = [1, 2, 3], [4, 5]
    logp = torch.log_softmax(model(torch.tensor([[1, 2, 3, 4]])).logits.double(), -1)[0]
    expected = -(logp[2, 4] + logp[3, 5]) / 2
    assert float(response_nll(model, [prompt], [resp])[0]) == pytest.approx(float(expected), rel=1e-9)
    with pytest.raises(ValueError, match="prompts, responses: expected equally many"):
        response_nll(model, [prompt], [])


def test_edit_similarity_and_spearman():
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity([], []) == 1.0 and edit_similarity([1], []) == 0.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr


def test_a_strategy_copying_the_targets_own_outputs_is_selected():
    model = _model()
    prompts = [[1, 2], [3, 4], [5, 6]]
    g = torch.Generator().manual_seed(0)
    # the target's greedy answers, versus random token strings of the same length
    own = [model.generate(torch.tensor([p]), max_new_tokens=4)[0, 2:].tolist() for p in prompts]
    rand = [torch.randint(0, 30, (4,), generator=g).tolist() for _ in prompts]
    scores = select_response_method(model, prompts, {"own": own, "random": rand}, samples=2, max_new_tokens=4,
                                    temperature=0.0)  # fmt: skip
    assert scores["best"] == "own" and scores["strategies"]["own"]["alignment"] == 1.0
    assert scores["strategies"]["own"]["nll"] < scores["strategies"]["random"]["nll"]
    a = alignment_score(model, prompts, own, samples=3, max_new_tokens=4, seed=1)
    assert a.shape == (3,) and ((0 <= a) & (a <= 1)).all()


def test_every_style_is_parsed_back_to_the_sum():
    for name in STRATEGIES:
        for a, b in [(0, 0), (7, 35), (99, 98)]:
            assert parse_answer(response(name, a, b)) == a + b, name
    assert parse_answer("no digits;") is None
    with pytest.raises(ValueError, match="strategy: unknown 'cot'"):
        response("cot", 1, 2)


def test_self_aligned_nll_scores_the_response_after_the_targets_own_answers():
    model = _model()
    demos = [([7, 8], [9, 10, 11])]
    # one demonstration: the context is demo prompt + demo response + prompt, scored on the response only
    got = self_aligned_nll(model, [[1, 2, 3]], [[4, 5]], demos, shots=3)
    want = response_nll(model, [[7, 8, 9, 10, 11, 1, 2, 3]], [[4, 5]])
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-12)
    assert float(got[0]) != pytest.approx(float(response_nll(model, [[1, 2, 3]], [[4, 5]])[0]), rel=1e-6)
    # a demonstration of the same prompt is never shown (it would give the answer away)
    demos = [([1, 2, 3], [4, 5]), ([7, 8], [9])]
    got = self_aligned_nll(model, [[1, 2, 3]], [[4, 5]], demos, shots=2)
    assert float(got[0]) == pytest.approx(
        float(response_nll(model, [[7, 8, 9, 1, 2, 3]], [[4, 5]])[0]), rel=1e-12
    )
    with pytest.raises(ValueError, match="demos: expected at least one"):
        self_aligned_nll(model, [[1]], [[2]], [])
    with pytest.raises(ValueError, match="shots: must be >= 1, got 0"):
        self_aligned_nll(model, [[1]], [[2]], demos, shots=0)


def test_own_responses_are_greedy_and_filtered_by_accept():
    model = _model()
    prompts = [[1, 2], [3, 4], [5, 6]]
    greedy = [model.generate(torch.tensor([p]), max_new_tokens=3)[0, 2:].tolist() for p in prompts]
    kept = own_responses(model, prompts, max_new_tokens=3, accept=lambda i, r: i != 1)
    assert kept == [(prompts[0], greedy[0]), (prompts[2], greedy[2])]
    assert len(own_responses(model, prompts, max_new_tokens=3)) == 3


def test_selection_with_demonstrations_ranks_by_self_aligned_perplexity():
    model = _model()
    prompts = [[1, 2], [3, 4], [5, 6]]
    g = torch.Generator().manual_seed(0)
    own = [model.generate(torch.tensor([p]), max_new_tokens=4)[0, 2:].tolist() for p in prompts]
    rand = [torch.randint(0, 30, (4,), generator=g).tolist() for _ in prompts]
    demos = own_responses(model, [[7, 8], [9, 10]], max_new_tokens=4)
    scores = select_response_method(model, prompts, {"random": rand, "own": own}, samples=2, max_new_tokens=4,
                                    temperature=0.0, demos=demos, shots=2)  # fmt: skip
    table = scores["strategies"]
    assert table["own"]["self_aligned_nll"] < table["random"]["self_aligned_nll"]
    assert scores["best"] == scores["best_by"]["self_aligned"] == "own"
    assert set(scores["best_by"]) == {"alignment", "perplexity", "self_aligned"}
