"""``layers/mixer_state.py``: the one check of an incoming mixer state, and the position entry."""

from __future__ import annotations

import pytest
import torch

from linearlab.layers.mixer_state import check_state, describe, get_position, position_tensor, shape

EXPECTED = {
    "recurrent": shape("B H K V", 2, 4, 8, 8),
    "k": shape("B P H D", 2, None, 4, 8),
    "v": shape("B P H D", 2, None, 4, 8),
    "pos": shape(""),
}


def good() -> dict[str, torch.Tensor]:
    return {
        "recurrent": torch.zeros(2, 4, 8, 8),
        "k": torch.zeros(2, 3, 4, 8),
        "v": torch.zeros(2, 3, 4, 8),
        "pos": position_tensor(3, torch.device("cpu")),
    }


WANT = r"expected \{'recurrent': \[B=2, H=4, K=8, V=8\], 'k': \[B=2, P, H=4, D=8\], 'v': \[B=2, P, H=4, D=8\], 'pos': \[\]\}"


def test_describe():
    assert describe(EXPECTED) == (
        "{'recurrent': [B=2, H=4, K=8, V=8], 'k': [B=2, P, H=4, D=8], 'v': [B=2, P, H=4, D=8], 'pos': []}"
    )


def test_good_states_pass():
    check_state(None, EXPECTED)
    check_state(good(), EXPECTED)
    check_state({**good(), "k": torch.zeros(2, 0, 4, 8), "v": torch.zeros(2, 0, 4, 8)}, EXPECTED)


@pytest.mark.parametrize(
    "state, message",
    [
        ([], r"state: expected None or a dict \{.*\}, got list"),
        ({**good(), "S": good()["recurrent"]}, r"state: unexpected key\(s\) \['S'\]; " + WANT),
        (
            {
                "S": torch.zeros(2, 4, 8, 8),
                "k": torch.zeros(2, 3, 4, 8),
                "v": torch.zeros(2, 3, 4, 8),
                "pos": 0,
            },
            r"state: missing key\(s\) \['recurrent'\]; unexpected key\(s\) \['S'\]; " + WANT,
        ),
        ({**good(), "pos": 3}, r"state\['pos'\]: expected a torch.Tensor \[\], got int; " + WANT),
        (
            {**good(), "recurrent": torch.zeros(2, 4, 8, 9)},
            r"state\['recurrent'\]: expected shape \[B=2, H=4, K=8, V=8\], got \[2, 4, 8, 9\]; " + WANT,
        ),
        (
            {**good(), "recurrent": torch.zeros(2, 4, 8)},
            r"state\['recurrent'\]: expected shape .* got \[2, 4, 8\]",
        ),
        (
            {**good(), "recurrent": torch.zeros(3, 4, 8, 8)},
            r"state\['recurrent'\]: batch size must match x's B = 2, got shape \[3, 4, 8, 8\]; " + WANT,
        ),
        (
            {**good(), "v": torch.zeros(2, 2, 4, 8)},
            r"state\['v'\]: expected shape \[B=2, P, H=4, D=8\], got \[2, 2, 4, 8\]",
        ),
        ({**good(), "pos": torch.zeros(1)}, r"state\['pos'\]: expected shape \[\], got \[1\]"),
    ],
    ids=[
        "not_dict",
        "extra_key",
        "renamed_key",
        "not_tensor",
        "wrong_shape",
        "wrong_rank",
        "batch",
        "P",
        "pos",
    ],
)
def test_wrong_states_name_the_expected_keys_and_shapes(state, message):
    with pytest.raises(ValueError, match=message):
        check_state(state, EXPECTED)


def test_position():
    assert get_position(None) == 0
    pos = position_tensor(7, torch.device("cpu"))
    assert pos.dim() == 0 and pos.dtype == torch.long and get_position({"pos": pos}) == 7


def test_shape_needs_a_name_per_size():
    with pytest.raises(ValueError, match=r"names: 2 dim names \['B', 'H'\] for 3 sizes"):
        shape("B H", 1, 2, 3)
