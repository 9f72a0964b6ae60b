"""Plots for asset metadata: rendered to PNG, embedded as Markdown so the Dagster UI shows the image."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first


def _markdown(figure, save_to: Path | None) -> dg.MetadataValue:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    png = buffer.getvalue()
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_bytes(png)
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(png).decode()})")


def histogram(values: Sequence[float], title: str, xlabel: str, save_to: Path | None = None) -> dg.MetadataValue:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.hist(list(values), bins=min(30, max(5, len(values) // 2)), color="#4f6bed")
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set(title=title, xlabel=xlabel, ylabel="count")
    return _markdown(figure, save_to)


def curve(values: Sequence[float], title: str, ylabel: str, save_to: Path | None = None) -> dg.MetadataValue:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.plot(list(values), color="#4f6bed")
    axis.set(title=title, xlabel="step", ylabel=ylabel)
    return _markdown(figure, save_to)


def table_md(rows: Sequence[dict]) -> dg.MetadataValue:
    """A small Markdown table (the first row's keys are the columns)."""
    if not rows:
        return dg.MetadataValue.md("_none_")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
         save_to: Path | None = None) -> dg.MetadataValue:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar(list(labels), list(values), color="#4f6bed")
    axis.set(title=title, ylabel=ylabel)
    axis.tick_params(axis="x", labelrotation=30)
    return _markdown(figure, save_to)
