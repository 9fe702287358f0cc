"""Data sets that are generated or bundled offline; nothing is downloaded.

- ``"mnist1d"``: MNIST-1D (Greydanus 2020), made procedurally by
  ``mnist1d.data.make_dataset(get_dataset_args())``: 4000 train / 1000 test,
  40 features, 10 classes. (``get_dataset()`` would try to download first.)
  The package's canonical seed is 42; ``seed`` is added to it, so ``seed=0``
  gives the published data set.
- ``"digits"``: scikit-learn's bundled 8x8 handwritten digits (1797 images,
  64 features, 10 classes), split 80/20 by a permutation drawn from ``seed``,
  then standardised with the training split's mean and standard deviation.
- ``"teacher"``: seed 000's shape for MSE regression: inputs N(0, 1) of size
  128, 1000 train + 500 test, targets = a fixed random tanh teacher MLP
  128-64-10 (weights drawn from ``seed``), outputs scaled to unit variance.
- ``"teacher_5x3"``: the same recipe in seed 001's shape: 5 inputs, a
  16-unit teacher, 3 outputs.
- ``"text"``: CPython's documentation as characters, windows of ``context``
  tokens and their next tokens, for a language model (:mod:`mbstudy.text`,
  which registers it; options ``context`` and ``stride``).

A validation split (:func:`with_validation`, what ``TrainConfig.val_fraction``
asks for) is carved from the TRAINING set by a permutation drawn from a fixed
seed (the data set's own seed and :data:`VALIDATION_SEED`); the test set is
never touched, so it stays for the final generalisation numbers.

Inputs are float32, labels int32 (regression targets float32); the arrays
are read-only. NumPy's global RNG is left as it was found.

Adding a data set is one :func:`register_dataset` call: its name, task and
sizes (so a configuration can be checked without loading it) and a loader
``loader(seed) -> Dataset`` that generates or reads it offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mbstudy.losses import TASKS, loss_for_task


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split (and, from :func:`with_validation`, a validation split) and what a run needs to know.

    ``digest`` is the sha256 of the arrays (dtype, shape and bytes), for
    provenance: two runs with the same digest saw the same numbers.
    ``x_val, y_val`` are None unless a validation split was carved (or the
    loader made its own, as the text's contiguous block).
    ``default_noise_batch`` and ``default_eval_train``: how many training
    examples (the first ones) the noise statistics and the evaluation's
    training loss read when a configuration leaves ``noise_batch`` and
    ``eval_train`` at 0; 0 here means all of them. A data set too large for
    that at every evaluation (the text's 288k windows) sets them, and puts its
    training examples in a random order so that the first ones are a sample.
    """

    name: str
    seed: int
    task: str  # "classification" or "regression"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_inputs: int
    n_outputs: int
    digest: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    default_noise_batch: int = 0
    default_eval_train: int = 0

    @property
    def loss_name(self) -> str:
        """The loss that fits the task (cross-entropy or MSE): :func:`mbstudy.losses.loss_for_task`."""
        return loss_for_task(self.task)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    def __repr__(self) -> str:
        val = "" if self.x_val is None else f", val={self.x_val.shape}"
        return (
            f"Dataset({self.name!r}, seed={self.seed}, task={self.task!r}, "
            f"train={self.x_train.shape}{val}, test={self.x_test.shape}, digest={self.digest[:12]})"
        )


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def from_arrays(name, seed, task, x_tr, y_tr, x_te, y_te, n_outputs) -> Dataset:
    arrays = [np.ascontiguousarray(a) for a in (x_tr, y_tr, x_te, y_te)]
    for a in arrays:
        a.setflags(write=False)
    return Dataset(
        name=name, seed=seed, task=task,
        x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3],
        n_inputs=int(arrays[0].shape[1]), n_outputs=int(n_outputs), digest=_digest(*arrays),
    )


MNIST1D_TEST = 1000  # the test set's size at every training-set size


def _mnist1d(seed: int, n_train: int | None = None) -> Dataset:
    """MNIST-1D; ``n_train`` (a multiple of 10; None: the package's 4000) generates ``n_train + 1000`` examples
    with the same recipe and seed and keeps the last 1000 as the test set, as the package's own split does."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(args.seed) + seed
    if n_train is not None:
        args.num_samples = n_train + MNIST1D_TEST
    state = np.random.get_state()  # make_dataset reseeds NumPy's global RNG
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    x, y = d["x"].astype(np.float32), d["y"].astype(np.int32)
    x_te, y_te = d["x_test"].astype(np.float32), d["y_test"].astype(np.int32)
    if n_train is not None:  # the package splits at int(0.8 n), which is not n_train in general: split here
        x, y = np.concatenate([x, x_te]), np.concatenate([y, y_te])
        x, y, x_te, y_te = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    return from_arrays("mnist1d", seed, "classification", x, y, x_te, y_te, 10)


def _mnist1d_size(n: int) -> str | None:
    if n % 10 or not 10 <= n <= 1_000_000:
        return (f"expected a multiple of 10 (MNIST-1D makes the same number of every digit) from 10 to 1000000; "
                f"received {n!r}")
    return None


def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(0.8 * len(x)))
    tr, te = perm[:n_train], perm[n_train:]
    mu = x[tr].mean(axis=0)
    sd = x[tr].std(axis=0)
    sd[sd == 0] = 1.0  # constant border pixels
    x = (x - mu) / sd
    return from_arrays(
        "digits", seed, "classification",
        x[tr].astype(np.float32), y[tr].astype(np.int32),
        x[te].astype(np.float32), y[te].astype(np.int32), 10,
    )


def _teacher(seed: int, sizes=(128, 64, 10), name="teacher", n_train: int = 1000, n_test: int = 500) -> Dataset:
    n_in, n_hid, n_out = sizes
    rng = np.random.default_rng([seed, n_in, n_hid, n_out])
    w1 = rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_hid))
    b1 = rng.normal(0, 0.1, n_hid)
    w2 = rng.normal(0, 1 / np.sqrt(n_hid), (n_hid, n_out))
    x = rng.normal(0, 1, (n_train + n_test, n_in))
    y = np.tanh(x @ w1 + b1) @ w2
    y = (y - y[:n_train].mean(axis=0)) / y[:n_train].std(axis=0)
    return from_arrays(
        name, seed, "regression",
        x[:n_train].astype(np.float32), y[:n_train].astype(np.float32),
        x[n_train:].astype(np.float32), y[n_train:].astype(np.float32), n_out,
    )


VALIDATION_SEED = 2018  # the validation split's permutation: fixed, so every run of a data set holds out the same examples


def n_validation(n_train: int, fraction: float) -> int:
    """Examples held out for validation from a training set of ``n_train``: ``round(fraction * n_train)``.

    >>> n_validation(4000, 0.2), n_validation(1438, 0.2), n_validation(1000, 0.0)
    (800, 288, 0)
    """
    return int(round(fraction * n_train))


def with_validation(data: Dataset, fraction: float) -> Dataset:
    """``data`` with ``fraction`` of its training set held out as a validation set.

    The held-out examples are drawn by a permutation from ``(data.seed, VALIDATION_SEED)``:
    the same for every run of the data set, whatever the run's own seed. The rest
    stay the training set in their original order; the test set is unchanged.
    ``fraction = 0`` returns ``data`` itself.

    >>> d = with_validation(load_dataset("teacher"), 0.2)
    >>> d.n_train, d.n_val, d.x_test.shape[0]
    (800, 200, 500)
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ValueError(f"fraction: expected 0 <= fraction < 1; received {fraction!r}")
    if data.x_val is not None:
        raise ValueError(f"data: {data.name!r} already has a validation split of {data.n_val}; carve it once")
    n_val = n_validation(data.n_train, fraction)
    if n_val == 0:
        return data
    order = np.random.default_rng([data.seed, VALIDATION_SEED]).permutation(data.n_train)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    arrays = [np.ascontiguousarray(a) for a in (data.x_train[train], data.y_train[train], data.x_test,
                                                   data.y_test, data.x_train[val], data.y_train[val])]
    for a in arrays:
        a.setflags(write=False)
    return dataclasses.replace(data, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3],
                               x_val=arrays[4], y_val=arrays[5], digest=_digest(*arrays))


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A registered data set: what a configuration needs to know before loading it, and its loader.

    ``n_train`` is the training-set size (the largest batch), ``task`` picks the
    loss of ``loss="auto"``, ``loader(seed)`` returns the :class:`Dataset`.
    A data set that can be generated at other training-set sizes has ``resize``:
    ``resize(seed, n_train)`` makes it, and ``check_size(n)`` returns None or why
    ``n`` is not a size it can make. A data set with keyword options (the text's
    context length) lists them with their defaults in ``options``; the loader is
    then called as ``loader(seed, **options)``, ``n_train`` is the size at the
    defaults and ``sized(**options)`` the size at any options. ``validation``:
    the loader returns its own validation split (the text's contiguous block),
    so a configuration does not carve one (``val_fraction`` stays 0).
    """

    name: str
    task: str  # one of mbstudy.losses.TASKS
    n_train: int
    loader: Callable[..., Dataset]
    description: str = ""
    resize: Callable[[int, int], Dataset] | None = None
    check_size: Callable[[int], str | None] = lambda n: None
    options: tuple[tuple[str, Any], ...] = ()
    sized: Callable[..., int] | None = None
    validation: bool = False  # the loader makes its own validation split (then val_fraction must be 0)

    def with_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The loader's keyword options: the defaults of :attr:`options` updated with ``given``; an unknown one is an error."""
        known = dict(self.options)
        unknown = sorted(set(given) - set(known))
        if unknown:
            have = f"its options are {sorted(known)}" if known else "it takes no options"
            raise ValueError(f"load_dataset: {self.name!r} has no option(s) {unknown}; {have}")
        return {**known, **given}

    def n_train_at(self, **given: Any) -> int:
        """The training-set size at these options (:attr:`n_train` at the defaults), without loading the data."""
        options = self.with_options(given)
        return self.n_train if self.sized is None else int(self.sized(**options))


DATASETS: dict[str, DataSource] = {}


def register_dataset(source: DataSource) -> DataSource:
    """Add a data set to :data:`DATASETS` (by its name); returns it."""
    if source.name in DATASETS:
        raise ValueError(f"DataSource {source.name!r}: that name is taken; choose another")
    if source.task not in TASKS:
        raise ValueError(f"DataSource {source.name!r}: task must be one of {TASKS}; received {source.task!r}")
    DATASETS[source.name] = source
    return source


register_dataset(DataSource("mnist1d", "classification", 4000, _mnist1d, "MNIST-1D (Greydanus 2020), generated",
                            resize=_mnist1d, check_size=_mnist1d_size))
register_dataset(DataSource("digits", "classification", 1438, _digits, "scikit-learn's 8x8 digits, bundled"))
register_dataset(DataSource("teacher", "regression", 1000, _teacher, "seed 000: 128-64-10 tanh teacher"))
register_dataset(DataSource("teacher_5x3", "regression", 1000, lambda seed: _teacher(seed, (5, 16, 3), "teacher_5x3"),
                            "seed 001: 5-16-3 tanh teacher"))


def load_dataset(name: str, *, seed: int = 0, n_train: int | None = None, **options: Any) -> Dataset:
    """Load or generate a data set by name: one of :data:`DATASETS`.

    ``n_train`` asks for another training-set size, from a data set that can be
    generated at any size (``DataSource.resize``: MNIST-1D, with a multiple of
    10 and the same 1000-example test recipe); None or the registered size gives
    the registered data set itself, bit for bit. ``options`` are the data set's
    own (``DataSource.options``: the text's ``context`` and ``stride``).

    >>> from mbstudy import load_dataset
    >>> d = load_dataset("teacher")
    >>> d.task, d.x_train.shape, d.y_train.shape, d.loss_name
    ('regression', (1000, 128), (1000, 10), 'mse')
    >>> load_dataset("teacher").digest == d.digest
    True
    """
    if name not in DATASETS:
        raise ValueError(f"name: unknown data set {name!r}; available: {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int; received {seed!r}")
    source = DATASETS[name]
    opts = source.with_options(options)
    if n_train is not None and n_train != source.n_train:
        if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)):
            raise ValueError(f"n_train: expected an int or None; received {n_train!r}")
        if source.resize is None:
            raise ValueError(f"n_train: {name!r} has a fixed training set of {source.n_train}; received {n_train!r} "
                             f"(data sets that can be generated at any size: "
                             f"{', '.join(k for k, v in DATASETS.items() if v.resize)})")
        bad = source.check_size(int(n_train))
        if bad:
            raise ValueError(f"n_train: {bad}")
        data = source.resize(int(seed), int(n_train))
        if data.n_train != n_train:
            raise RuntimeError(f"data set {name!r}: asked for {n_train} training examples, its generator made {data.n_train}")
        return data
    data = source.loader(int(seed), **opts) if source.options else source.loader(int(seed))
    want = source.n_train_at(**opts)
    if data.n_train != want or data.task != source.task:
        raise RuntimeError(f"data set {name!r}: its loader gave {data.n_train} {data.task} training examples but it is "
                           f"registered with {want} {source.task}; fix its DataSource entry")
    return data
