"""Rendering helpers: an RGB timeline (Gantt) and bar charts via matplotlib.

matplotlib is imported lazily, inside the functions, so that an env that is
never rendered never pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["figure_to_rgb", "timeline_rgb", "bars_rgb"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("rgb_array rendering needs matplotlib: pip install matplotlib") from e
    return plt


def figure_to_rgb(fig) -> np.ndarray:
    """Draw a matplotlib figure and return its pixels as an (H, W, 3) uint8 array."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    _pyplot().close(fig)
    return rgb


def timeline_rgb(
    rows: Sequence[str],
    segments: Sequence[tuple[int, float, float, int]],
    now_s: float,
    title: str = "",
    size_px: tuple[int, int] = (640, 320),
) -> np.ndarray:
    """A Gantt chart: `segments` are (row index, start s, end s, colour key)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(size_px[0] / 80, size_px[1] / 80), dpi=80)
    cmap = plt.get_cmap("tab20")
    for row, start, end, key in segments:
        ax.barh(row, max(end - start, 1e-9), left=start, color=cmap(key % 20), edgecolor="black", linewidth=0.3)
    ax.axvline(now_s, color="red", linewidth=1)
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_rgb(fig)


def bars_rgb(
    labels: Sequence[str],
    used: Sequence[float],
    capacity: Sequence[float],
    title: str = "",
    unit: str = "",
    size_px: tuple[int, int] = (640, 320),
) -> np.ndarray:
    """Horizontal bars of `used` against `capacity` per label (memory, load, ...)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(size_px[0] / 80, size_px[1] / 80), dpi=80)
    y = np.arange(len(labels))
    ax.barh(y, capacity, color="lightgrey", edgecolor="black", linewidth=0.3)
    ax.barh(y, used, color="tab:blue")
    ax.set_yticks(y, labels=list(labels))
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_rgb(fig)
