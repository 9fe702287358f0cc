"""The PyTorch peers: torch.func's per-example gradients and an eager training loop (``make setup-bench``).

Each returns None when torch is not installed.
"""

from __future__ import annotations

import numpy as np

from experiments.bench.timing import timeit
from mbstudy.train import batch_indices


def _torch_mlp(sizes):
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def torch_per_example(sizes, x, y, budget):
    try:
        import torch
        from torch.func import functional_call, grad, vmap
    except ImportError:
        return None
    model = _torch_mlp(sizes)
    params = {k: v.detach() for k, v in model.named_parameters()}
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()

    def loss_one(p, xi, yi):
        out = functional_call(model, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    psg = vmap(grad(loss_one), in_dims=(None, 0, 0))
    return timeit(lambda: psg(params, xt, yt), budget=budget)


def torch_step_time(B: int, data, budget: float, n_steps: int = 200) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    model = _torch_mlp((data.n_inputs, 100, 100, data.n_outputs))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(np.array(data.x_train)), torch.from_numpy(np.array(data.y_train)).long()
    idx = torch.from_numpy(batch_indices(0, 0, n_steps, data.n_train, B).astype(np.int64))
    batches = [(xt[i], yt[i]) for i in idx]
    lossf = torch.nn.CrossEntropyLoss()

    def run():
        for xb, yb in batches:
            opt.zero_grad()
            lossf(model(xb), yb).backward()
            opt.step()

    return timeit(run, budget=budget, min_reps=2) / n_steps
