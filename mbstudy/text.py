"""The text data set: CPython's documentation as characters, for next-token prediction (``load_dataset("text")``).

The corpus is ``mbstudy/corpus/python_docs.txt.xz``: the tutorial, the FAQ,
the language reference and the HOWTOs of the Python 3.11 documentation
(1,283,421 characters of ASCII text, 51 pages), converted from the HTML of
Debian's ``python3.11-doc`` 3.11.2-6+deb12u8 by ``tools/make_text_corpus.py``;
the documentation's licence (the PSF licence agreement) is
``mbstudy/corpus/python_docs.LICENSE``. The text is pinned by its sha256
(:data:`CORPUS_SHA256`): a different file fails to load. Nothing is downloaded.

Tokens are characters, which in this ASCII text are bytes: ids 0..127
(:data:`VOCAB`). The token stream is cut into three contiguous blocks, 90% /
5% / 5%: training, validation and test, so that no window of one overlaps
another's. An example is a window of ``context`` tokens ``x = s[t : t + T]``
with its next tokens ``y = s[t + 1 : t + T + 1]`` (both ``(T,)``; ``x`` as
float32, as every input of the library is, ``y`` int32). The training set is
every window starting at a multiple of ``stride`` in the training block, in an
order drawn from ``seed`` (:func:`window_order`); the training loop
(:func:`mbstudy.step.batch_indices`) shuffles them again each epoch, so a step
draws B random windows without replacement, and the first few windows are a
random sample of the block: the evaluation reads the first
:data:`NOISE_BATCH` for the noise statistics and the first :data:`EVAL_TRAIN`
for the training loss, unless a configuration asks for other numbers. The
validation and test sets are their blocks cut into consecutive windows
(stride ``context``), so each of their tokens is predicted once.

>>> from mbstudy import load_dataset
>>> d = load_dataset("text")
>>> d.task, d.x_train.shape, d.x_val.shape, d.x_test.shape, d.n_outputs
('next_token', (288762, 32), (2005, 32), (2005, 32), 128)
>>> bool((d.x_train[0, 1:] == d.y_train[0, :-1]).all()), decode(d.x_test[0])
(True, 'tire thread is essentially dead.')
>>> load_dataset("text", context=64, stride=64).x_train.shape
(18048, 64)
"""

from __future__ import annotations

import functools
import hashlib
import lzma
from pathlib import Path

import numpy as np

from mbstudy.data import DataSource, Dataset, _digest, register_dataset

CORPUS = Path(__file__).with_name("corpus") / "python_docs.txt.xz"
CORPUS_SHA256 = "9e834f13b13f4dc0645fa7e46bc5ef5f531ce28d284a3f207a92bbbb0b633873"  # of the decompressed text
CORPUS_CHARS = 1_283_421
ORIGIN = ("CPython 3.11 documentation (tutorial, FAQ, language reference, HOWTOs) as ASCII text, from Debian's "
          "python3.11-doc 3.11.2-6+deb12u8; PSF licence")
VOCAB = 128
SPLITS = (0.90, 0.05, 0.05)  # training, validation, test: contiguous blocks in this order
CONTEXT = 32
STRIDE = 4
NOISE_BATCH = 512  # windows for the noise statistics at every evaluation (TrainConfig.noise_batch = 0)
EVAL_TRAIN = 2048  # windows for the evaluation's training loss (TrainConfig.eval_train = 0)
ORDER = 0x7E47  # keeps the windows' order apart from other uses of a seed


def split_sizes(n: int = CORPUS_CHARS) -> tuple[int, int, int]:
    """Tokens in the training, validation and test blocks of a stream of ``n``: ``floor(0.9 n)``, ``floor(0.05 n)``, the rest."""
    n_train, n_val = int(n * SPLITS[0]), int(n * SPLITS[1])
    return n_train, n_val, n - n_train - n_val


def n_windows(n_tokens: int, context: int, stride: int) -> int:
    """Windows of ``context`` tokens and their next tokens (``context + 1`` in all) starting at multiples of ``stride``."""
    return max(0, (n_tokens - context - 1) // stride + 1)


@functools.cache
def corpus_tokens() -> np.ndarray:
    """The whole corpus as token ids, ``uint8`` (read-only), after checking its sha256 against :data:`CORPUS_SHA256`."""
    raw = lzma.decompress(CORPUS.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:
        raise RuntimeError(f"{CORPUS}: expected the text of sha256 {CORPUS_SHA256}; found {digest}. "
                           "Restore the file from the repository (tools/make_text_corpus.py writes it)")
    tokens = np.frombuffer(raw, np.uint8)
    if tokens.max() >= VOCAB:
        raise RuntimeError(f"{CORPUS}: expected ASCII text (byte values < {VOCAB}); found {int(tokens.max())}")
    return tokens


def decode(tokens) -> str:
    """Token ids (any integer or float array) back to text."""
    return bytes(np.asarray(tokens).astype(np.uint8).tolist()).decode("ascii")


def windows(tokens: np.ndarray, context: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``x = tokens[t : t + context]`` (float32) and ``y = tokens[t + 1 : t + context + 1]`` (int32) for
    ``t = 0, stride, 2 stride, ...``: shape ``(n_windows, context)`` each."""
    n = n_windows(len(tokens), context, stride)
    view = np.lib.stride_tricks.sliding_window_view(tokens, context + 1)[: (n - 1) * stride + 1 : stride]
    return view[:, :-1].astype(np.float32), view[:, 1:].astype(np.int32)


def window_order(seed: int, n: int) -> np.ndarray:
    """The order of the ``n`` training windows for data seed ``seed``: row i of ``x_train`` is window ``order[i]``."""
    return np.random.default_rng([seed, ORDER]).permutation(n)


def _check(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"load_dataset('text'): {name} must be an int >= {low}; received {value!r}")


def load_text(seed: int = 0, context: int = CONTEXT, stride: int = STRIDE) -> Dataset:
    """The text data set (see the module docstring). ``seed`` draws the order of the training windows (the text,
    the windows and the validation and test sets are the same for every seed)."""
    _check("context", context, 1)
    _check("stride", stride, 1)
    n_train, n_val, _ = split_sizes()
    if n_windows(n_val, context, context) < 2:
        raise ValueError(f"load_dataset('text'): context {context} leaves fewer than 2 validation windows in the "
                         f"{n_val} validation tokens; choose context <= {n_val // 2 - 1}")
    tokens = corpus_tokens()
    blocks = tokens[:n_train], tokens[n_train : n_train + n_val], tokens[n_train + n_val :]
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (windows(b, context, s) for b, s in zip(blocks, (stride, context, context)))
    order = window_order(seed, len(x_tr))
    arrays = [np.ascontiguousarray(a) for a in (x_tr[order], y_tr[order], x_te, y_te, x_va, y_va)]
    for a in arrays:
        a.setflags(write=False)
    return Dataset(name="text", seed=seed, task="next_token", x_train=arrays[0], y_train=arrays[1], x_test=arrays[2],
                   y_test=arrays[3], n_inputs=context, n_outputs=VOCAB, digest=_digest(*arrays), x_val=arrays[4],
                   y_val=arrays[5], default_noise_batch=NOISE_BATCH, default_eval_train=EVAL_TRAIN)


register_dataset(DataSource(
    "text", "next_token", n_windows(split_sizes()[0], CONTEXT, STRIDE), load_text, ORIGIN,
    options=(("context", CONTEXT), ("stride", STRIDE)),
    sized=lambda context, stride: n_windows(split_sizes()[0], context, stride), validation=True,
))
