"""Draw a benchmark's wall times as horizontal bars for the docs (matplotlib, on first use)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

COLOURS = {"aiomr": "#1f77b4", "practical limit": "#2ca02c", "baselines": "#9a9a9a"}
"""The colour of each kind of contender, in the legend's order."""


def wall_bars(
    path: Path,
    bars: Sequence[tuple[str, Sequence[float]]],
    kinds: Sequence[str],
    *,
    baseline: tuple[str, Sequence[float]],
    speedup: Callable[[int], float | None],
    title: str,
) -> None:
    """Draw each ``(label, wall times)`` as its median, whiskers from fastest to slowest run.

    ``kinds`` colours the bars (`COLOURS`); the ``baseline``'s median is a dashed line, and
    each bar says its ``speedup(index)`` over it, unless that is None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.patches import Patch

    walls = [statistics.median(runs) for _, runs in bars]
    low = [w - min(runs) for (_, runs), w in zip(bars, walls, strict=True)]
    high = [max(runs) - w for (_, runs), w in zip(bars, walls, strict=True)]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(bars) + 1.6), dpi=110)
    positions = list(range(len(bars)))[::-1]
    colours = [COLOURS[kind] for kind in kinds]
    ax.barh(positions, walls, color=colours, xerr=[low, high], capsize=3, ecolor="#444444")
    ax.set_yticks(positions, [label for label, _ in bars])
    ax.tick_params(axis="y", labelsize=9)
    name, runs = baseline
    line = statistics.median(runs) if runs else math.nan
    top = max(w + x for w, x in zip(walls, high, strict=True))
    for i, (y, wall, extra) in enumerate(zip(positions, walls, high, strict=True)):
        text = f"{wall:.1f} s"
        if not math.isnan(line) and (ratio := speedup(i)) is not None:
            text += f"  (speed-up {ratio:.2f}x)"
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}
        ax.text(wall + extra + top * 0.01, y, text, va="center", fontsize=8.5, bbox=box)
    handles: list[Artist] = [Patch(color=c, label=kind) for kind, c in COLOURS.items()]
    if not math.isnan(line):
        style = {"color": "#d62728", "linestyle": "--", "linewidth": 1}
        handles.append(ax.axvline(line, label=name, **style))
    legend = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.1), "fontsize": 8.5}
    ax.legend(handles=handles, ncol=len(handles), frameon=False, **legend)
    ax.set_xlim(0, top * 1.32)
    ax.set_xlabel("wall time, seconds (median; whiskers: fastest to slowest run) — lower is better")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
