"""``make bench``: what per-example gradients and training steps cost, measured in one process.

Every timing: warm-up calls first (compilation excluded), then repeated calls
until a time budget is spent, each waited for (``block_until_ready``); the
median is reported. The per-example methods are timed round-robin (each
once per round), so the ratios compare like with like on a shared, noisy
machine. Per-call times include JAX's dispatch from Python (tens of µs),
which dominates the smallest problems.

1. Per-example gradients (Q3) on MLPs 128-64-10, 40-100-100-10 and
   784-512-512-10, B in {1, 8, 32, 128, 512}, cross-entropy: the batch-mean
   gradient; ``per_sample_grads`` (vmap, the B x P tensor returned, so it
   exists); ``per_sample_grads_fast``; ``per_sample_grad_norms``; a Python loop
   of B single-example gradients (seed 004's method); the memory-write floor
   (writing B x P float32 numbers); the outer products alone, from given
   layer inputs and deltas; torch.func's ``vmap(grad)`` as a peer.
   Peak memory of each compiled program from XLA's memory analysis.
2. XLA's fusion: ``mean(vmap(grad))`` under one jit against the batch gradient.
3. Training-step throughput (MNIST-1D MLP, SGD + momentum 0.9): mbstudy's
   compiled ``lax.scan`` loop, the leanest possible scan (gradient and update
   only: mbstudy's overhead is the difference), a Python loop over a jitted
   step, and a PyTorch eager loop, all on the same batches. Also a
   permutation of 4000 indices in XLA against NumPy.
4. Step time at B = 2^k - 1, 2^k, 2^k + 1 (Q6).
5. MLflow logging cost per run as a fraction of its training time.
6. The transformer (issue 24, 22k parameters) on windows of the text data
   set: the recipes of 1 at B in {1, 8, 32, 128} (rows ``per_example_lm``),
   and its training step, SGD + momentum and Adam, against the leanest scan
   and against the MLP step's FLOP rate at the same B (rows ``train_lm``).
   ``--only transformer`` runs this part alone (about 2 minutes), written
   beside the others' files and not logged to MLflow.

Results go to ``results/bench-<device>.json`` and ``.md``, to the MLflow
experiment ``benchmarks`` (one run per row, machine details as tags), from
which ``make figures`` draws the benchmark's figures. The implementations
timed are the library's own (``mbstudy.grads``, ``mbstudy.step``), not copies.

The package: ``timing.py`` (how a call is timed, the machine),
``per_example.py`` (1, 2), ``training.py`` (3, 4), ``torch_peer.py`` (the
PyTorch peers), ``mlflow_cost.py`` (5), ``output.py`` (the tables, the
targets, the MLflow runs) and ``cli.py`` (the command, ``__main__.py``).
The calls into mbstudy's internals are in ``per_example.py`` (``G._...``)
and at the top of ``training.py`` (``Program``, ``traced_hyper``, ``run_chunk``, ``LOSSES``).

Usage: ``python -m experiments.bench [--full] [--only transformer]``. Quick mode: about 5 minutes (5.5 measured on 2
shared cores, without the PyTorch peers); ``--full``: longer.
"""

