"""Pure cost model: FLOP, bytes, roofline time, transfer time and energy.

Decoder-only transformer (DESIGN section 3). Every function is pure and takes
plain numbers or numpy arrays (token counts broadcast), so the environments
can precompute a whole episode at reset. Units: FLOP, bytes, seconds, joules.
The functions are elementwise: a "device" may also be any object with the
fields they read (peak_flops, compute_efficiency, mem_bw_Bps) as (k, 1) arrays,
and one call then equals k per-device calls bit for bit (tested). The same holds
for a "model" whose integer fields are (k, 1) int64 arrays (TieredService costs
all its deployed (node, variant) pairs in one call): keep the functions free of
branches on model fields (tests/test_tiered_service_costs.py fails first if not).

Decode step k (k = 1 .. G-1) of a request with S prompt and G output tokens
attends to S + k tokens; prefill produces the first output token.
"""

from __future__ import annotations

import numpy as np

from .catalog import DeviceSpec, LinkSpec, ModelSpec

__all__ = [
    "layer_params",
    "total_params",
    "layer_weight_bytes",
    "embedding_bytes",
    "lm_head_bytes",
    "kv_bytes_per_token_layer",
    "activation_bytes",
    "layer_flop_decode",
    "layer_flop_prefill",
    "lm_head_flop",
    "roofline_time_s",
    "prefill_time_s",
    "decode_time_s",
    "layers_time_s",
    "lm_head_time_s",
    "request_time_s",
    "request_and_prefill_time_s",
    "transfer_time_s",
    "link_transfer_time_s",
    "energy_j",
]

FP16_BITS = 16


def layer_params(m: ModelSpec) -> int:
    """Weights of one transformer layer: attention 2h^2 + 2hKd, MLP (2 or 3) h f."""
    h, kvd = m.hidden, m.kv_heads * m.head_dim
    return 2 * h * h + 2 * h * kvd + m.mlp_matrices * h * m.ffn


def total_params(m: ModelSpec) -> int:
    """All weights: layers, word embeddings, and the LM head when it is not tied."""
    embed = m.vocab * (m.word_embed_dim or m.hidden)
    head = 0 if m.tied_embeddings else m.vocab * m.hidden
    return m.n_layers * layer_params(m) + embed + head


def layer_weight_bytes(m: ModelSpec, bits: float = FP16_BITS) -> float:
    """Bytes of one layer's weights at `bits` per weight."""
    return layer_params(m) * bits / 8


def embedding_bytes(m: ModelSpec, bits: float = FP16_BITS) -> float:
    """Bytes of the word embeddings (held by the first device)."""
    return m.vocab * (m.word_embed_dim or m.hidden) * bits / 8


def lm_head_bytes(m: ModelSpec, bits: float = FP16_BITS) -> float:
    """Bytes of the LM head (held by the last device; shares the embeddings if tied)."""
    return m.vocab * m.hidden * bits / 8


def kv_bytes_per_token_layer(m: ModelSpec) -> int:
    """KV cache bytes per token per layer: K and V, kv_heads x head_dim each, fp16."""
    return 2 * m.kv_heads * m.head_dim * 2


def activation_bytes(m: ModelSpec, tokens=1):
    """Hidden state sent between layers (fp16): h x tokens x 2 bytes."""
    return m.hidden * np.asarray(tokens) * 2


def layer_flop_decode(m: ModelSpec, context_tokens):
    """FLOP of one layer for one decode token at context c: 2 params + 4 h c."""
    return 2 * layer_params(m) + 4 * m.hidden * np.asarray(context_tokens, dtype=float)


def layer_flop_prefill(m: ModelSpec, prompt_tokens):
    """FLOP of one layer for a prefill of S tokens: 2 params S + 2 h S^2."""
    s = np.asarray(prompt_tokens, dtype=float)
    return 2 * layer_params(m) * s + 2 * m.hidden * s * s


def lm_head_flop(m: ModelSpec, tokens=1):
    """FLOP of the LM head: 2 V h per token."""
    return 2 * m.vocab * m.hidden * np.asarray(tokens, dtype=float)


def roofline_time_s(flop, bytes_moved, device: DeviceSpec):
    """max(FLOP / (peak x efficiency), bytes / memory bandwidth)."""
    return np.maximum(
        np.asarray(flop, dtype=float) / (device.peak_flops * device.compute_efficiency),
        np.asarray(bytes_moved, dtype=float) / device.mem_bw_Bps,
    )


def prefill_time_s(m: ModelSpec, device: DeviceSpec, n_layers, prompt_tokens, bits: float = FP16_BITS):
    """Prefill of `n_layers` layers: compute-bound; reads weights once, writes the KV cache."""
    s = np.asarray(prompt_tokens, dtype=float)
    flop = n_layers * layer_flop_prefill(m, s)
    moved = n_layers * (layer_weight_bytes(m, bits) + kv_bytes_per_token_layer(m) * s)
    return roofline_time_s(flop, moved, device)


def _sum_positive_linear(a, s, c0, n):
    """Sum over integers c in [c0, c0 + n) of max(a + s c, 0), exact, elementwise."""
    if np.ndim(a) == 0 and np.ndim(s) == 0:  # one line for all (one device): branch on its slope
        return _sum_positive_line(float(a), float(s), c0, n)
    a, s, c0, n = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, s, c0, n)))
    out = np.zeros(a.shape)
    last = c0 + n - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        root = -a / s  # where a + s c crosses zero
    # rising: positive for c > root; falling: positive for c < root; flat: all or none
    lo = np.where(s > 0, np.maximum(c0, np.floor(root) + 1), c0)
    hi = np.where(s < 0, np.minimum(last, np.ceil(root) - 1), last)
    flat = s == 0
    lo = np.where(flat, c0, lo)
    hi = np.where(flat, np.where(a > 0, last, c0 - 1), hi)
    k = np.clip(hi - lo + 1, 0, None)
    out = k * a + s * (k * lo + k * (k - 1) / 2)
    return np.where(k > 0, out, 0.0)


def _sum_positive_line(a: float, s: float, c0, n):
    """`_sum_positive_linear` for scalar `a` and `s`: the same float operations, bit for bit,
    without broadcasting them over the arrays."""
    c0, n = np.broadcast_arrays(np.asarray(c0, dtype=float), np.asarray(n, dtype=float))
    last = c0 + n - 1
    if s > 0:
        lo, hi = np.maximum(c0, np.floor(-a / s) + 1), last
    elif s < 0:
        lo, hi = c0, np.minimum(last, np.ceil(-a / s) - 1)
    else:
        lo, hi = c0, (last if a > 0 else c0 - 1)
    k = np.clip(hi - lo + 1, 0, None)
    out = k * a + s * (k * lo + k * (k - 1) / 2)
    return np.where(k > 0, out, 0.0)


def decode_time_s(m: ModelSpec, device: DeviceSpec, n_layers, prompt_tokens, output_tokens,
                  bits: float = FP16_BITS):
    """All G-1 decode steps of `n_layers` layers, each at its own context, summed exactly.

    Per step at context c: compute a1 + b1 c, memory a2 + b2 c (weights + KV read);
    the roofline is the larger, so the sum is sum(memory) + sum(max(compute - memory, 0)).
    """
    f = device.peak_flops * device.compute_efficiency
    a1 = n_layers * 2 * layer_params(m) / f
    b1 = n_layers * 4 * m.hidden / f
    a2 = n_layers * layer_weight_bytes(m, bits) / device.mem_bw_Bps
    b2 = n_layers * kv_bytes_per_token_layer(m) / device.mem_bw_Bps
    s = np.asarray(prompt_tokens, dtype=float)
    steps = np.maximum(np.asarray(output_tokens, dtype=float) - 1, 0)
    c0 = s + 1
    memory = steps * a2 + b2 * (steps * c0 + steps * (steps - 1) / 2)
    return memory + _sum_positive_linear(a1 - a2, b1 - b2, c0, steps)


def layers_time_s(m: ModelSpec, device: DeviceSpec, n_layers, prompt_tokens, output_tokens,
                  bits: float = FP16_BITS):
    """Prefill plus all decode steps of `n_layers` layers for one request."""
    return prefill_time_s(m, device, n_layers, prompt_tokens, bits) + decode_time_s(
        m, device, n_layers, prompt_tokens, output_tokens, bits
    )


def lm_head_time_s(m: ModelSpec, device: DeviceSpec, output_tokens, bits: float = FP16_BITS):
    """LM head for every generated token (one per prefill, one per decode step)."""
    g = np.asarray(output_tokens, dtype=float)
    return g * roofline_time_s(lm_head_flop(m), lm_head_bytes(m, bits), device)


def request_time_s(m: ModelSpec, device: DeviceSpec, prompt_tokens, output_tokens, bits: float = FP16_BITS):
    """Whole model on one device: all layers plus the LM head, prefill and decode."""
    return layers_time_s(m, device, m.n_layers, prompt_tokens, output_tokens, bits) + lm_head_time_s(
        m, device, output_tokens, bits
    )


def request_and_prefill_time_s(m: ModelSpec, device: DeviceSpec, prompt_tokens, output_tokens,
                               bits: float = FP16_BITS):
    """(`request_time_s`, the prefill of all layers in it), the prefill computed once: the same
    arrays, bit for bit, as `request_time_s` and `prefill_time_s(m, device, m.n_layers, ...)`."""
    prefill = prefill_time_s(m, device, m.n_layers, prompt_tokens, bits)
    layers = prefill + decode_time_s(m, device, m.n_layers, prompt_tokens, output_tokens, bits)
    return layers + lm_head_time_s(m, device, output_tokens, bits), prefill


def transfer_time_s(n_bytes, bw_bps: float, latency_s: float):
    """Latency + bytes x 8 / bandwidth."""
    return latency_s + np.asarray(n_bytes, dtype=float) * 8.0 / bw_bps


def link_transfer_time_s(n_bytes, link: LinkSpec):
    """`transfer_time_s` over a catalog link."""
    return transfer_time_s(n_bytes, link.bw_bps, link.latency_s)


def energy_j(device: DeviceSpec, busy_s=0.0, idle_s=0.0, tx_s=0.0):
    """P_busy x busy + P_idle x idle + P_tx x transmit (durations must be >= 0)."""
    return device.power_busy_w * busy_s + device.power_idle_w * idle_s + device.power_tx_w * tx_s
