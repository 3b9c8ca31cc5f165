"""Independent references for the engines' tests: the book's example, random cases,
and an extended-precision central difference that shares no code with the engines."""

import numpy as np

# gradient_simplenet.py, with W as the book prints it (rounded to 8 digits, which is
# why 1e-6 is as close as the printed numbers can be reproduced).
BOOK_W = np.array([[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]])
BOOK_X = np.array([[0.6, 0.9]])
BOOK_LABELS = np.array([2])
BOOK_LOSS = 0.92806853663411326
BOOK_DW = np.array([[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]])

# Logits of +-1e3: true classes with probability exactly 0 (samples 0 and 2), a
# saturated correct one (sample 4) and two near-ties that carry the gradient.
EXTREME_W = np.array([[1000.0, -1000.0, 999.5], [0.0, 1000.0, 0.0]])
EXTREME_X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.3, 0.7]])
EXTREME_LABELS = np.array([1, 0, 2, 2, 1])

EXTENDED = np.finfo(np.longdouble).eps < 1e-18  # 80-bit x87 or better


def random_case(seed, n_inputs, n_classes, batch, logit_scale=1.0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_inputs, n_classes)) * logit_scale
    x = rng.standard_normal((batch, n_inputs))
    labels = rng.integers(0, n_classes, batch)
    return W, x, labels


def extended_central_difference(W, x, labels, h):
    """Exact-step central differences of the book's loss, in np.longdouble.

    Deliberately the plain loop (no shared code with the engines), in ~19 digits,
    so that it resolves the float64 engines' rounding noise of order 1e-16 / h.
    """
    W, x, h = W.astype(np.longdouble), x.astype(np.longdouble), np.longdouble(h)
    rows = np.arange(len(labels))

    def loss(w):
        z = x @ w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        y_t = e[rows, labels] / e.sum(axis=1)
        return -np.sum(np.log(y_t + np.longdouble(1e-7))) / len(labels)

    grad = np.zeros(W.shape, dtype=np.longdouble)
    for idx in np.ndindex(W.shape):
        plus, minus = W.copy(), W.copy()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (loss(plus) - loss(minus)) / (2 * h)
    return grad


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.longdouble) - b)))
