import numpy as np
import pytest
import torch

from linearlab.tasks.mqar import IGNORE_INDEX, MQARConfig, multiquery_ar, recall_accuracy
from linearlab.tasks.text import ByteCorpus, eval_windows, sample_windows, stdlib_files


def test_mqar_structure_without_filler():
    cfg = MQARConfig(vocab_size=128, seq_len=64, num_kv_pairs=8, num_examples=50, random_non_queries=False)
    x, y = multiquery_ar(cfg, seed=3)
    assert x.shape == y.shape == (50, 64) and x.dtype == torch.int64
    V, N = 128, 8
    for row_x, row_y in zip(x, y):
        keys, values = row_x[0 : 2 * N : 2], row_x[1 : 2 * N : 2]
        assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
        assert len(set(keys.tolist())) == N and len(set(values.tolist())) == N
        q = (row_y != IGNORE_INDEX).nonzero().flatten()
        assert len(q) == N and (q >= 2 * N).all()
        # at each query position the input is a key and the label is that key's value
        lookup = dict(zip(keys.tolist(), values.tolist()))
        for pos in q.tolist():
            assert row_y[pos].item() == lookup[row_x[pos].item()]
        # every key is queried exactly once; the query region is otherwise empty (token 0)
        assert sorted(row_x[q].tolist()) == sorted(keys.tolist())
        rest = torch.ones(64, dtype=torch.bool)
        rest[: 2 * N] = False
        rest[q] = False
        assert (row_x[rest] == 0).all()


def test_mqar_is_seeded_and_fills_non_queries():
    cfg = MQARConfig(vocab_size=256, seq_len=64, num_kv_pairs=4, num_examples=20)
    a, la = multiquery_ar(cfg, seed=1)
    b, lb = multiquery_ar(cfg, seed=1)
    c, _ = multiquery_ar(cfg, seed=2)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert (a == 0).float().mean() < 0.05  # filler replaced the zeros
    assert a.min() >= 0 and a.max() < 256


def test_mqar_gaps_follow_the_power_law():
    cfg = MQARConfig(vocab_size=512, seq_len=256, num_kv_pairs=4, num_examples=400, random_non_queries=False)
    _, y = multiquery_ar(cfg, seed=0)
    gaps = [((p.item() - 8) // 2) for row in y for p in (row != IGNORE_INDEX).nonzero().flatten()]
    space = (256 - 8) // 2
    # p(g) ∝ (g+1)^(a-1) with a=0.01 puts about half the mass on the first ~sqrt(space) gaps
    probs = (np.arange(1, space + 1) ** -0.99) / (np.arange(1, space + 1) ** -0.99).sum()
    expected_small = probs[:10].sum()
    observed_small = np.mean(np.array(gaps) < 10)
    assert observed_small > 0.3 and abs(observed_small - expected_small) < 0.15


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seq_len=63), "seq_len: must be even"),
        (dict(vocab_size=32, seq_len=64), "vocab_size: must exceed"),
        (dict(num_kv_pairs=17, seq_len=64), "num_kv_pairs"),
        (dict(num_examples=0), "num_examples"),
    ],
)
def test_mqar_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        multiquery_ar(MQARConfig(**kwargs), seed=0)


def test_recall_accuracy_only_counts_queries():
    labels = torch.tensor([[IGNORE_INDEX, 3, IGNORE_INDEX, 1]])
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 3] = 1  # right
    logits[0, 3, 2] = 1  # wrong
    logits[0, 0, 4] = 1  # not a query: ignored
    assert recall_accuracy(logits, labels).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no query positions"):
        recall_accuracy(logits, torch.full((1, 4), IGNORE_INDEX))


def test_stdlib_corpus_is_fixed_and_split():
    files = stdlib_files()
    assert len(files) > 100 and files == sorted(files)
    corpus = ByteCorpus.from_files(max_bytes=300_000)
    assert corpus.train.numel() + corpus.val.numel() == 300_000
    assert 0 < corpus.val.numel() < corpus.train.numel()
    again = ByteCorpus.from_files(max_bytes=300_000)
    assert torch.equal(corpus.train, again.train)


@pytest.mark.parametrize("hashed_to_validation", [True, False])
def test_one_file_is_split_by_bytes_whichever_side_its_name_hashes_to(
    tmp_path, monkeypatch, hashed_to_validation
):
    import linearlab.tasks.text as text

    monkeypatch.setattr(text, "_is_validation", lambda name, fraction: hashed_to_validation)
    f = tmp_path / "one.txt"
    f.write_bytes(bytes(range(200)))
    corpus = ByteCorpus.from_files([f], val_fraction=0.25, max_bytes=None)
    assert corpus.train.tolist() == list(range(150)) and corpus.val.tolist() == list(range(150, 200))


def test_byte_corpus_from_user_files_and_windows(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(bytes(range(256)) * 4)
    corpus = ByteCorpus.from_files([f], val_fraction=0.25, max_bytes=None)
    assert corpus.train.numel() + corpus.val.numel() == 1024
    x, y = sample_windows(corpus.train, 3, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    w = eval_windows(corpus.train, 16)
    assert w.shape[1] == 17 and torch.equal(w[1, 0], w[0, 16])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        ByteCorpus.from_files([tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="too short"):
        sample_windows(corpus.val[:5], 2, 16, torch.Generator())
