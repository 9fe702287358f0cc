"""An independent reference: per-example gradients of the transformer in plain NumPy.

One sequence at a time, the forward pass and the textbook backward pass
written out by hand (the attention heads, the causal mask, LayerNorm and the
embeddings' scatter included). No JAX anywhere in this file. The parameter
list has the layout of ``mbstudy.transformer.Transformer``: token embedding,
position embedding, then per block LayerNorm, q/k/v, output, LayerNorm, MLP
up, MLP down, then the final LayerNorm and the output layer.
"""

import numpy as np

EPS = 1e-5


def _ln(a, g, b):
    mu = a.mean(axis=-1, keepdims=True)
    sigma = np.sqrt(((a - mu) ** 2).mean(axis=-1, keepdims=True) + EPS)
    n = (a - mu) / sigma
    return n * g + b, (n, sigma)


def _ln_back(dz, g, cache):
    """``dL/dg = sum_t n dz``, ``dL/db = sum_t dz``, ``dL/da = (h - mean h - n mean(h n)) / sigma`` with ``h = g dz``."""
    n, sigma = cache
    h = g * dz
    da = (h - h.mean(axis=-1, keepdims=True) - n * (h * n).mean(axis=-1, keepdims=True)) / sigma
    return {"g": (n * dz).sum(axis=0), "b": dz.sum(axis=0)}, da


def _dense_back(a, dz, w):
    return {"w": a.T @ dz, "b": dz.sum(axis=0)}, dz @ w.T


def _attention(u, n_heads):
    T, d3 = u.shape
    d = d3 // 3
    dh = d // n_heads
    q, k, v = u[:, :d], u[:, d : 2 * d], u[:, 2 * d :]
    out, probs = np.zeros((T, d)), []
    for j in range(n_heads):
        c = slice(j * dh, (j + 1) * dh)
        s = q[:, c] @ k[:, c].T / np.sqrt(dh)
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        probs.append(a)
        out[:, c] = a @ v[:, c]
    return out, probs


def _attention_back(do, u, probs, n_heads):
    T, d3 = u.shape
    d = d3 // 3
    dh = d // n_heads
    q, k, v = u[:, :d], u[:, d : 2 * d], u[:, 2 * d :]
    du = np.zeros_like(u)
    for j, a in enumerate(probs):
        c = slice(j * dh, (j + 1) * dh)
        dv = a.T @ do[:, c]
        da = do[:, c] @ v[:, c].T
        ds = a * (da - (a * da).sum(axis=1, keepdims=True))  # softmax's Jacobian, row by row; masked: a = 0
        du[:, c] = ds @ k[:, c] / np.sqrt(dh)
        du[:, d + j * dh : d + (j + 1) * dh] = ds.T @ q[:, c] / np.sqrt(dh)
        du[:, 2 * d + j * dh : 2 * d + (j + 1) * dh] = dv
    return du


def per_example_grads(params, n_heads, x, y):
    """``params``: a list of dicts of float64 arrays (the library's layout); ``x``: (B, T) ids, ``y``: (B, T).
    Returns, per example, the list of gradient dicts (the mean-over-positions cross-entropy's)."""
    params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    n_blocks = (len(params) - 4) // 6
    out = []
    for ids, target in zip(np.asarray(x).astype(int), np.asarray(y).astype(int)):
        T = len(ids)
        # forward
        h = params[0]["w"][ids] + params[1]["w"]
        caches = []
        for blk in range(n_blocks):
            ln1, qkv, o, ln2, up, dn = params[2 + 6 * blk : 8 + 6 * blk]
            n1, c1 = _ln(h, ln1["g"], ln1["b"])
            u = n1 @ qkv["w"] + qkv["b"]
            att, probs = _attention(u, n_heads)
            h = h + att @ o["w"] + o["b"]
            n2, c2 = _ln(h, ln2["g"], ln2["b"])
            m = n2 @ up["w"] + up["b"]
            r = np.maximum(m, 0.0)
            h = h + r @ dn["w"] + dn["b"]
            caches.append((n1, c1, u, att, probs, n2, c2, m, r))
        lnf, head = params[-2], params[-1]
        nf, cf = _ln(h, lnf["g"], lnf["b"])
        logits = nf @ head["w"] + head["b"]
        # backward: dL/dlogits_t = (softmax(logits_t) - onehot(y_t)) / T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(T), target] -= 1.0
        grads = [None] * len(params)
        grads[-1], dnf = _dense_back(nf, p / T, head["w"])
        grads[-2], dh = _ln_back(dnf, lnf["g"], cf)
        for blk in reversed(range(n_blocks)):
            i = 2 + 6 * blk
            ln1, qkv, o, ln2, up, dn = params[i : i + 6]
            n1, c1, u, att, probs, n2, c2, m, r = caches[blk]
            grads[i + 5], dr = _dense_back(r, dh, dn["w"])
            grads[i + 4], dn2 = _dense_back(n2, dr * (m > 0), up["w"])
            grads[i + 3], da = _ln_back(dn2, ln2["g"], c2)
            dh = dh + da
            grads[i + 2], datt = _dense_back(att, dh, o["w"])
            grads[i + 1], dn1 = _dense_back(n1, _attention_back(datt, u, probs, n_heads), qkv["w"])
            grads[i], da = _ln_back(dn1, ln1["g"], c1)
            dh = dh + da
        grads[1] = {"w": dh.copy()}
        d_emb = np.zeros_like(params[0]["w"])
        np.add.at(d_emb, ids, dh)  # the scatter-add of the deltas at the token ids
        grads[0] = {"w": d_emb}
        out.append(grads)
    return out
