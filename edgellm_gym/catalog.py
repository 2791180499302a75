"""Built-in catalog of models, devices and links (public spec-sheet values).

Every number carries its source in a comment. Memory sizes are in bytes (GiB =
2**30, as the vendors' "GB" of device memory means), rates in SI units (FLOP/s,
bytes/s, bit/s), powers in watts. Idle powers marked "estimate" are ours, not
the vendor's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ModelSpec",
    "DeviceSpec",
    "LinkSpec",
    "MODELS",
    "DEVICES",
    "LINKS",
    "get_model",
    "get_device",
    "get_link",
]

GIB = 2**30


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, described by its config.json values.

    `mlp_matrices` is 3 for gated (SwiGLU) MLPs, 2 for plain ones (OPT, Phi-2,
    BLOOM). `word_embed_dim` differs from `hidden` only for OPT-350M, whose
    embeddings are projected. `accuracy` is an optional benchmark score in [0, 1]
    (MMLU for the Qwen2.5 family), used by the tiered-service env.
    """

    name: str
    n_layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    mlp_matrices: int
    tied_embeddings: bool
    published_params: float  # total parameters the model card states
    word_embed_dim: int = 0  # 0 means equal to hidden
    accuracy: float = float("nan")
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("n_layers", "hidden", "heads", "kv_heads", "ffn", "vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model {self.name!r}: {name} must be > 0, got {getattr(self, name)}")
        if self.mlp_matrices not in (2, 3):
            raise ValueError(f"model {self.name!r}: mlp_matrices must be 2 or 3, got {self.mlp_matrices}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"model {self.name!r}: heads must divide hidden and kv_heads divide heads")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class DeviceSpec:
    """An inference device: compute, memory, and power draw.

    `compute_efficiency` is the fraction of peak FLOP/s reached on dense LLM
    kernels (our estimate: 0.5 for GPUs, lower for CPUs), used by the roofline.
    `power_tx_w` is the extra draw while transmitting (radio or NIC; estimate).
    """

    name: str
    peak_flops: float  # FLOP/s, fp16 dense unless noted
    mem_bytes: float
    mem_bw_Bps: float  # bytes/s
    power_idle_w: float
    power_busy_w: float
    power_tx_w: float = 2.0
    compute_efficiency: float = 0.5
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("peak_flops", "mem_bytes", "mem_bw_Bps", "power_busy_w"):
            if not getattr(self, name) > 0:
                raise ValueError(f"device {self.name!r}: {name} must be > 0, got {getattr(self, name)}")
        for name in ("power_idle_w", "power_tx_w"):
            if getattr(self, name) < 0:
                raise ValueError(f"device {self.name!r}: {name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.compute_efficiency <= 1:
            raise ValueError(
                f"device {self.name!r}: compute_efficiency must be in (0, 1], got {self.compute_efficiency}"
            )


@dataclass(frozen=True)
class LinkSpec:
    """A network link: bandwidth (bit/s) and one-way latency (s)."""

    name: str
    bw_bps: float
    latency_s: float
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.bw_bps > 0:
            raise ValueError(f"link {self.name!r}: bw_bps must be > 0, got {self.bw_bps}")
        if self.latency_s < 0:
            raise ValueError(f"link {self.name!r}: latency_s must be >= 0, got {self.latency_s}")


def _m(name, L, h, H, K, f, V, mlp, tied, params, **kw) -> ModelSpec:
    return ModelSpec(name, L, h, H, K, f, V, mlp, tied, params, **kw)


# Values from each model's Hugging Face config.json; totals from its model card.
MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        _m("opt-125m", 12, 768, 12, 12, 3072, 50272, 2, True, 125e6, source="facebook/opt-125m config.json"),
        # OPT-350M projects 512-d word embeddings to 1024; HF counts 331M parameters.
        _m("opt-350m", 24, 1024, 16, 16, 4096, 50272, 2, True, 331e6, word_embed_dim=512,
           source="facebook/opt-350m config.json"),
        _m("opt-1.3b", 24, 2048, 32, 32, 8192, 50272, 2, True, 1.3e9, source="facebook/opt-1.3b config.json"),
        _m("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 3, False, 6.74e9,
           source="meta-llama/Llama-2-7b-hf config.json"),
        _m("llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 3, False, 8.03e9,
           source="meta-llama/Meta-Llama-3-8B config.json"),
        _m("mistral-7b", 32, 4096, 32, 8, 14336, 32000, 3, False, 7.24e9,
           source="mistralai/Mistral-7B-v0.1 config.json"),
        _m("phi-2", 32, 2560, 32, 32, 10240, 51200, 2, False, 2.78e9, source="microsoft/phi-2 config.json"),
        _m("tinyllama-1.1b", 22, 2048, 32, 4, 5632, 32000, 3, False, 1.1e9,
           source="TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json"),
        _m("qwen2-0.5b", 24, 896, 14, 2, 4864, 151936, 3, True, 0.49e9, source="Qwen/Qwen2-0.5B config.json"),
        _m("smollm2-135m", 30, 576, 9, 3, 1536, 49152, 3, True, 135e6,
           source="HuggingFaceTB/SmolLM2-135M config.json"),
        _m("bloom-176b", 70, 14336, 112, 112, 57344, 250880, 2, True, 176e9, source="bigscience/bloom config.json"),
        # Qwen2.5 base models; accuracy = MMLU (5-shot) from the Qwen2.5 release
        # blog's base-model table (qwenlm.github.io/blog/qwen2.5-llm).
        _m("qwen2.5-0.5b", 24, 896, 14, 2, 4864, 151936, 3, True, 0.49e9, accuracy=0.475,
           source="Qwen/Qwen2.5-0.5B config.json"),
        _m("qwen2.5-1.5b", 28, 1536, 12, 2, 8960, 151936, 3, True, 1.54e9, accuracy=0.609,
           source="Qwen/Qwen2.5-1.5B config.json"),
        _m("qwen2.5-3b", 36, 2048, 16, 2, 11008, 151936, 3, True, 3.09e9, accuracy=0.656,
           source="Qwen/Qwen2.5-3B config.json"),
        _m("qwen2.5-7b", 28, 3584, 28, 4, 18944, 152064, 3, False, 7.61e9, accuracy=0.742,
           source="Qwen/Qwen2.5-7B config.json"),
        _m("qwen2.5-14b", 48, 5120, 40, 8, 13824, 152064, 3, False, 14.7e9, accuracy=0.797,
           source="Qwen/Qwen2.5-14B config.json"),
        _m("qwen2.5-32b", 64, 5120, 40, 8, 27648, 152064, 3, False, 32.5e9, accuracy=0.833,
           source="Qwen/Qwen2.5-32B config.json"),
        _m("qwen2.5-72b", 80, 8192, 64, 8, 29568, 152064, 3, False, 72.7e9, accuracy=0.861,
           source="Qwen/Qwen2.5-72B config.json"),
    ]
}

DEVICES: dict[str, DeviceSpec] = {
    d.name: d
    for d in [
        # Cortex-A76 x4 CPU; 17 GB/s LPDDR4X peak, 11.4 GB/s measured (STREAM); idle power estimate.
        DeviceSpec("rpi5", 0.15e12, 8 * GIB, 11.4e9, 3.0, 10.0, 1.0, 0.5, "Raspberry Pi 5 product brief"),
        DeviceSpec("orin-nano-8gb", 10e12, 8 * GIB, 68e9, 5.0, 15.0, 1.5, 0.5,
                   "NVIDIA Jetson Orin Nano 8GB data sheet (idle estimate)"),
        DeviceSpec("orin-nx-16gb", 12.5e12, 16 * GIB, 102.4e9, 5.0, 25.0, 1.5, 0.5,
                   "NVIDIA Jetson Orin NX 16GB data sheet (idle estimate)"),
        DeviceSpec("agx-orin-64gb", 42e12, 64 * GIB, 204.8e9, 10.0, 60.0, 2.0, 0.5,
                   "NVIDIA Jetson AGX Orin 64GB data sheet (idle estimate)"),
        DeviceSpec("t4", 65e12, 16 * GIB, 320e9, 10.0, 70.0, 5.0, 0.5, "NVIDIA T4 data sheet (idle estimate)"),
        DeviceSpec("rtx4090", 165e12, 24 * GIB, 1008e9, 20.0, 450.0, 5.0, 0.5,
                   "NVIDIA Ada whitepaper, dense fp16 tensor (idle estimate)"),
        DeviceSpec("a100-80gb", 312e12, 80 * GIB, 2039e9, 60.0, 400.0, 10.0, 0.5,
                   "NVIDIA A100 80GB SXM data sheet (idle estimate)"),
        DeviceSpec("h100-sxm", 989e12, 80 * GIB, 3350e9, 70.0, 700.0, 10.0, 0.5,
                   "NVIDIA H100 SXM data sheet (idle estimate)"),
        # 20 cores x 2.5 GHz x 64 FLOP/cycle (2 AVX-512 FMA units, fp32); 6 x DDR4-2933.
        # Memory is a typical server configuration (estimate); 150 W TDP, idle estimate.
        DeviceSpec("xeon-gold-6248", 3.2e12, 192 * GIB, 140.8e9, 60.0, 150.0, 10.0, 0.3,
                   "Intel Xeon Gold 6248 ARK (memory and idle estimates)"),
    ]
}

LINKS: dict[str, LinkSpec] = {
    l.name: l
    for l in [
        LinkSpec("lan-1g", 1e9, 0.3e-3, "1 Gb/s Ethernet, ~0.3 ms"),
        LinkSpec("wifi", 300e6, 5e-3, "Wi-Fi 5/6, 100-600 Mb/s, 2-10 ms"),
        LinkSpec("5g-uplink", 17e6, 47e-3, "5G uplink median ~15-20 Mb/s, ~47 ms"),
        LinkSpec("wan-cloud", 100e6, 25e-3, "WAN to cloud, 20-80 ms RTT (one way ~25 ms)"),
    ]
}


def _lookup(table: dict, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)}") from None


def get_model(name: str) -> ModelSpec:
    """The catalog model `name`; ValueError listing the known names otherwise."""
    return _lookup(MODELS, "model", name)


def get_device(name: str) -> DeviceSpec:
    """The catalog device `name`; ValueError listing the known names otherwise."""
    return _lookup(DEVICES, "device", name)


def get_link(name: str) -> LinkSpec:
    """The catalog link `name`; ValueError listing the known names otherwise."""
    return _lookup(LINKS, "link", name)
