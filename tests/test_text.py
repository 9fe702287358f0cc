"""The text data set (issue 24): CPython's documentation, pinned by digest, cut into windows of next tokens."""

import lzma

import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy import text
from mbstudy._checks import check_batch
from mbstudy.losses import LOSSES

# the Dataset's digest (its six arrays) at the default options: a change of the corpus, the split or the windows moves it
DIGEST = "4d77bf3be0d5e8d0431b6d5df090058e004bd6cbb21f2ccb1cee9377ea95ae53"


class _SequenceModel:
    """What the batch checks read of a model whose one example's outputs are ``(T, vocab)``."""

    input_shape, output_shape, n_outputs = (32,), (32, 128), 128


@pytest.fixture(scope="module")
def data():
    return mb.load_dataset("text")


def test_corpus_is_pinned_real_english_and_large_enough():
    tokens = text.corpus_tokens()
    assert len(tokens) == text.CORPUS_CHARS >= 400_000
    assert not tokens.flags.writeable and tokens.max() < text.VOCAB
    words = text.decode(tokens[:200_000]).split()
    assert sum(w in {"the", "a", "of", "and", "to", "is"} for w in words) > 0.1 * len(words)  # English prose
    assert text.CORPUS.with_name("python_docs.LICENSE").read_text().count("documentation are licensed under the PSF License Agreement") == 1


def test_a_different_corpus_fails_to_load(tmp_path, monkeypatch):
    bad = tmp_path / "python_docs.txt.xz"
    bad.write_bytes(lzma.compress(b"not the documentation"))
    monkeypatch.setattr(text, "CORPUS", bad)
    text.corpus_tokens.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"expected the text of sha256 9e834f13.*found"):
            text.corpus_tokens()
    finally:
        text.corpus_tokens.cache_clear()


def test_windows_and_splits(data):
    assert data.digest == DIGEST and mb.load_dataset("text").digest == DIGEST
    assert data.task == "next_token" and data.loss_name == "token_cross_entropy" and data.n_outputs == 128
    n_train, n_val, n_test = text.split_sizes()
    assert (n_train, n_val, n_test) == (1_155_078, 64_171, 64_172)
    tokens = text.corpus_tokens()
    # training windows start at multiples of the stride, in the data seed's order; y is x shifted by one token
    T, s = text.CONTEXT, text.STRIDE
    order = text.window_order(0, data.n_train)
    for i in (0, 1, 12_345, data.n_train - 1):
        t = order[i] * s
        np.testing.assert_array_equal(data.x_train[i], tokens[t : t + T])
        np.testing.assert_array_equal(data.y_train[i], tokens[t + 1 : t + T + 1])
    assert sorted(order[:3]) != [0, 1, 2] and (data.default_noise_batch, data.default_eval_train) == (512, 2048)
    assert data.n_train == mb.DATASETS["text"].n_train == text.n_windows(n_train, T, s)
    assert (data.n_train - 1) * s + T + 1 <= n_train  # the last training window stays inside its block
    # validation and test: consecutive windows of their own blocks
    np.testing.assert_array_equal(data.x_val.reshape(-1), tokens[n_train : n_train + data.x_val.size])
    np.testing.assert_array_equal(data.x_test.reshape(-1), tokens[n_train + n_val : n_train + n_val + data.x_test.size])
    np.testing.assert_array_equal(data.y_test[:, -1], tokens[n_train + n_val + T :: T][: data.n_val])
    assert data.x_train.dtype == data.x_val.dtype == np.float32 and data.y_train.dtype == np.int32
    assert not any(a.flags.writeable for a in (data.x_train, data.y_train, data.x_val, data.y_test))


def test_options_change_the_windows_not_the_text():
    d = mb.load_dataset("text", context=8, stride=8)
    assert d.x_train.shape == (mb.DATASETS["text"].n_train_at(context=8, stride=8), 8)
    assert d.digest != DIGEST
    first = np.argsort(text.window_order(0, d.n_train))[:3]  # the rows of windows 0, 1, 2
    np.testing.assert_array_equal(d.x_train[first].reshape(-1), text.corpus_tokens()[:24])
    other = mb.load_dataset("text", seed=1, context=8, stride=8)
    assert other.digest != d.digest and np.array_equal(np.sort(other.x_train, axis=0), np.sort(d.x_train, axis=0))
    with pytest.raises(ValueError, match=r"'text' has no option\(s\) \['ctx'\]; its options are \['context', 'stride'\]"):
        mb.load_dataset("text", ctx=8)
    with pytest.raises(ValueError, match=r"'teacher' has no option\(s\) \['context'\]; it takes no options"):
        mb.load_dataset("teacher", context=8)
    with pytest.raises(ValueError, match=r"stride must be an int >= 1; received 0"):
        mb.load_dataset("text", stride=0)


def test_next_token_loss_and_target_checks(data):
    logits = jnp.zeros((2, 5, 128)).at[:, :, 7].set(1.0)
    y = jnp.full((2, 5), 7, jnp.int32).at[1, 0].set(3)
    per_example = LOSSES["token_cross_entropy"](logits, y)
    z = np.log(127 + np.e)
    np.testing.assert_allclose(per_example, [z - 1, (4 * (z - 1) + z) / 5], rtol=1e-6)
    np.testing.assert_allclose(LOSSES["token_cross_entropy"].metrics["acc"](logits, y), [1.0, 0.8])
    net = _SequenceModel()
    x, y = check_batch(net, "token_cross_entropy", data.x_train[:4], data.y_train[:4])
    assert y.shape == (4, 32)
    with pytest.raises(TypeError, match=r"'token_cross_entropy' expects integer labels of shape \(B, 32\) = \(4, 32\); "
                                        r"received shape \(4,\)"):
        check_batch(net, "token_cross_entropy", data.x_train[:4], data.y_train[:4, 0])
