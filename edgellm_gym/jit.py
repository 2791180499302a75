"""The one place for compiled step kernels' options: `njit` is numba's, with our settings.

- `cache=True`: compiled code is written beside the module (`__pycache__`), so a new process
  (a SubprocVecEnv worker, a test worker) loads it instead of compiling again.
- `error_model="numpy"`: float division by zero gives inf/nan as numpy does, not an exception.
- no `fastmath`: every float operation is done as written, in order (IEEE, no reassociation, no
  fused multiply-add), so a kernel gives the bits of the numpy code it replaces.

Debugging: `NUMBA_DISABLE_JIT=1` runs every kernel as plain Python (slow, same results).

Cost: memory. Importing numba and loading the first compiled kernel (LLVM's runtime) add about
135 MB of resident memory to a process (measured: 39 MB with numpy and gymnasium, 115 MB after
`import numba`, 174 MB after a DeviceScheduling step), once per process, so per SubprocVecEnv
worker. A first use with an empty cache also compiles (about a second per kernel).

Shared helpers for the kernels: `pairwise_sum` / `pairwise_head_sum`, numpy's summation order.
numba's cache checks only the calling kernel's own file: after editing a helper here, clear the
kernels' caches (`__pycache__/*.nbi`, `*.nbc`).
"""

from __future__ import annotations

import numba

__all__ = ["njit", "inline", "pairwise_sum", "pairwise_head_sum"]


def njit(fn):
    """Compile `fn` in nopython mode with the options above."""
    return numba.njit(cache=True, error_model="numpy", nogil=True)(fn)


def inline(fn):
    """A helper inlined (as numba IR) into the `njit` kernels that call it, and compiled there with
    their options: no call, no reference counting of the views it returns (~10-30 ns each)."""
    return numba.njit(inline="always")(fn)


@njit
def _head(x, i, j):
    """x[j], or 0 from index i on."""
    return x[j] if j < i else 0.0


@njit
def _block_head_sum(x, i, lo, n):
    """numpy's pairwise sum of a block of n <= 128 entries x[lo:lo + n] (8 accumulators), reading
    the entries at index >= i as 0."""
    if n < 8:
        res = 0.0
        for j in range(lo, lo + n):
            res += _head(x, i, j)
        return res
    r0, r1, r2, r3, r4, r5, r6, r7 = (_head(x, i, lo), _head(x, i, lo + 1), _head(x, i, lo + 2), _head(x, i, lo + 3),
                                      _head(x, i, lo + 4), _head(x, i, lo + 5), _head(x, i, lo + 6),
                                      _head(x, i, lo + 7))
    j = 8
    while j < n - n % 8:
        b = lo + j
        r0 += _head(x, i, b)
        r1 += _head(x, i, b + 1)
        r2 += _head(x, i, b + 2)
        r3 += _head(x, i, b + 3)
        r4 += _head(x, i, b + 4)
        r5 += _head(x, i, b + 5)
        r6 += _head(x, i, b + 6)
        r7 += _head(x, i, b + 7)
        j += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while j < n:
        res += _head(x, i, lo + j)
        j += 1
    return res


@njit
def pairwise_head_sum(x, i, n):
    """numpy's pairwise sum (as `np.add.reduce` sums a contiguous float64 row) of x[:n], n <= 256,
    reading the entries at index >= i as 0. numpy splits n > 128 entries in two, the first part
    a multiple of 8, and sums the parts the same way (here unrolled: recursion and numba's cache
    do not mix)."""
    if n <= 128:
        return _block_head_sum(x, i, 0, n)
    if n > 256:
        raise ValueError("pairwise_head_sum: more than 256 entries")
    n2 = n // 2 - (n // 2) % 8  # <= 128
    rest = n - n2  # <= 135
    if rest <= 128:
        return _block_head_sum(x, i, 0, n2) + _block_head_sum(x, i, n2, rest)
    r2 = rest // 2 - (rest // 2) % 8
    return _block_head_sum(x, i, 0, n2) + (_block_head_sum(x, i, n2, r2) + _block_head_sum(x, i, n2 + r2, rest - r2))


@njit
def pairwise_sum(x):
    """`np.sum(x)` of a 1-D float64 array of at most 256 entries, bit for bit (`pairwise_head_sum`)."""
    n = x.shape[0]
    return pairwise_head_sum(x, n, n)
