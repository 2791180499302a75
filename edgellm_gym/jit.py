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
"""

from __future__ import annotations

import numba

__all__ = ["njit", "inline"]


def njit(fn):
    """Compile `fn` in nopython mode with the options above."""
    return numba.njit(cache=True, error_model="numpy", nogil=True)(fn)


def inline(fn):
    """A helper inlined (as numba IR) into the `njit` kernels that call it, and compiled there with
    their options: no call, no reference counting of the views it returns (~10-30 ns each)."""
    return numba.njit(inline="always")(fn)
