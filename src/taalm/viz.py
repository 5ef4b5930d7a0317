"""Pictures of token weights (terminal, HTML, PNG) and of learning curves (PNG).

    python -c "from taalm.viz import write_weights_html; write_weights_html('w.html', [('doc', ['Hi', ' there'], [0.1, 0.9])], 'demo')"

Every picture uses one colour scale: weight 0 is white, weight 1 is dark red, with the stops of the xterm-256 red
ramp so the terminal, the HTML page and the PNG show the same colours. Weights outside [0, 1] are clipped for the
colour only; the printed/hover value is the real one. NaN or infinite weights are a ValueError (a bug upstream).

matplotlib is imported inside the functions (``import taalm.viz`` stays cheap) and used through ``Figure`` with the
Agg canvas, never pyplot, so no global figure state is touched. Every file is rendered to memory first and then
written atomically: a failed render leaves no file behind.
"""

from __future__ import annotations

import html
import io
import math
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taalm.errors import TaalmError
from taalm.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# xterm-256 indices of the white -> dark-red ramp and their RGB values; the scale is piecewise linear between them.
_ANSI_RAMP = (231, 224, 217, 210, 203, 196, 160, 124, 88)
_RAMP_HEX = ("ffffff", "ffd7d7", "ffafaf", "ff8787", "ff5f5f", "ff0000", "d70000", "af0000", "870000")
_RAMP_RGB = tuple(tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)) for h in _RAMP_HEX)


# ---------------------------------------------------------------------------------------------------------- colours
def weight_rgb(w: float) -> tuple[float, float, float]:
    """RGB in [0, 1] for a weight on the white (0) -> dark red (1) scale; outside [0, 1] is clipped."""
    pos = min(max(float(w), 0.0), 1.0) * (len(_RAMP_RGB) - 1)
    i = min(int(pos), len(_RAMP_RGB) - 2)
    f = pos - i
    a, b = _RAMP_RGB[i], _RAMP_RGB[i + 1]
    return (a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2]))


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _dark(rgb: tuple[float, float, float]) -> bool:
    """True when white text reads better than black on this background (sRGB relative luminance)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] < 0.18


# ---------------------------------------------------------------------------------------------------------- checks
def _check(tokens: Sequence[str], weights: Sequence[float], name: str = "document") -> list[float]:
    """Return the weights as floats; ValueError on a length mismatch or a non-finite weight."""
    if len(tokens) != len(weights):
        raise ValueError(f"{name}: {len(tokens)} tokens but {len(weights)} weights")
    out = [float(w) for w in weights]
    for i, w in enumerate(out):
        if not math.isfinite(w):
            raise ValueError(f"{name}: weight {i} is {w}, not a finite number")
    return out


def _stats(weights: list[float]) -> str:
    if not weights:
        return "0 tokens"
    mean = sum(weights) / len(weights)
    return f"{len(weights)} tokens · mean {mean:.3f} · min {min(weights):.3f} · max {max(weights):.3f}"


def _clean(text: str) -> str:
    """Replace lone surrogates (from a broken byte-level decode) by U+FFFD so the text can be encoded as UTF-8."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def visible(token: str) -> str:
    """The token with whitespace and control characters made visible: ' '->'·', tab->'→', newline->'⏎'."""
    out = []
    for c in _clean(token):
        if c == " ":
            out.append("·")
        elif c == "\t":
            out.append("→")
        elif c == "\n":
            out.append("⏎")
        elif unicodedata.category(c).startswith("C"):
            out.append("�")
        else:
            out.append(c)
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------- terminal
def format_weights_terminal(tokens: list[str], weights: list[float], color: bool = True) -> str:
    """Tokens with their weights for a terminal.

    With ``color``, each token (whitespace made visible) sits on an ANSI-256 background from white (0) to dark red
    (1) and a newline token also breaks the line; without, a plain ``token<TAB>weight`` table with 3 decimals.
    """
    ws = _check(tokens, weights)
    if not color:
        return "".join(f"{visible(t)}\t{w:.3f}\n" for t, w in zip(tokens, ws, strict=True))
    parts = []
    for t, w in zip(tokens, ws, strict=True):
        level = round(min(max(w, 0.0), 1.0) * (len(_ANSI_RAMP) - 1))
        fg = 231 if _dark(_RAMP_RGB[level]) else 16
        parts.append(f"\x1b[48;5;{_ANSI_RAMP[level]}m\x1b[38;5;{fg}m{visible(t)}\x1b[0m")
        if "\n" in t:
            parts.append("\n")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; background: #fff; }
.legend { display: flex; align-items: center; gap: .5em; margin-bottom: 1.5em; font-size: .9em; }
.legend .bar { width: 20em; height: 1em; border: 1px solid #999; }
.doc { margin-bottom: 2em; }
.doc h2 { font-size: 1.1em; margin-bottom: .2em; }
.stats { color: #555; font-size: .9em; margin-top: 0; }
.tokens { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.8; border: 1px solid #ddd;
          padding: .7em; word-break: break-word; }
.t { border-radius: 2px; }
"""


def _span(token: str, w: float) -> str:
    rgb = weight_rgb(w)
    fg = "#fff" if _dark(rgb) else "#000"
    clean = "".join("\ufffd" if unicodedata.category(c) == "Cc" and c not in "\n\t\r" else c for c in _clean(token))
    text = html.escape(clean).replace("\n", "⏎\n")  # keep the line break, but show it
    return f'<span class="t" style="background:{_hex(rgb)};color:{fg}" title="weight={w:.3f}" data-w="{w:.6g}">{text}</span>'


def weights_html(docs: list[tuple[str, list[str], list[float]]], title: str) -> str:
    """A standalone HTML page (inline CSS, no external resources) showing each document's tokens coloured by weight.

    Each token is one ``<span>`` with its weight in ``title`` (hover) and ``data-w``; a colour bar sits on top and
    each document shows its mean/min/max weight.
    """
    gradient = ", ".join(f"#{h} {100 * i / (len(_RAMP_HEX) - 1):.1f}%" for i, h in enumerate(_RAMP_HEX))
    bar = f'<div class="bar" style="background: linear-gradient(to right, {gradient})"></div>'
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{html.escape(_clean(title))}</title><style>{_CSS}</style></head>',
        "<body>",
        f"<h1>{html.escape(_clean(title))}</h1>",
        f'<div class="legend"><span>weight 0</span>{bar}<span>1</span></div>',
    ]
    for name, tokens, weights in docs:
        ws = _check(tokens, weights, name)
        spans = "".join(_span(t, w) for t, w in zip(tokens, ws, strict=True))  # no separators: pre-wrap shows them
        out += [
            '<section class="doc">',
            f"<h2>{html.escape(_clean(name))}</h2>",
            f'<p class="stats">{_stats(ws)}</p>',
            f'<div class="tokens">{spans}</div>',
            "</section>",
        ]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_weights_html(path: str | Path, docs: list[tuple[str, list[str], list[float]]], title: str) -> None:
    """Write :func:`weights_html` atomically."""
    atomic_write_text(path, weights_html(docs, title))


# ---------------------------------------------------------------------------------------------------------- PNG
_FS = 9.0  # token font size, points
_CELL_W = 0.602 * _FS  # advance of one DejaVu Sans Mono character, points
_LINE_H = 1.75 * _FS  # row height, points
_COLS = 110  # character cells per row
_GAP = 0.35  # cells between neighbouring tokens


def _cells(text: str) -> int:
    """Display width in monospace cells: wide East-Asian characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _layout(tokens: Sequence[str]) -> tuple[list[tuple[float, int, float, str, int]], int]:
    """Wrap tokens into rows: ``[(x, row, width, text, index)]`` in cell units, and the number of rows."""
    boxes, x, row = [], 0.0, 0
    for i, token in enumerate(tokens):
        text = visible(token)
        if _cells(text) > _COLS - 1:  # a huge token gets one row, cut to fit
            while _cells(text) > _COLS - 2:
                text = text[: -max(1, (_cells(text) - _COLS) // 2)]
            text += "…"
        width = max(float(_cells(text)), 0.5)  # an empty token still gets a sliver of colour
        if x > 0 and x + width > _COLS:
            x, row = 0.0, row + 1
        boxes.append((x, row, width, text, i))
        x += width + _GAP
        if "\n" in token:
            x, row = 0.0, row + 1
    return boxes, (row + (1 if x > 0 else 0)) if boxes else 1


def _draw_doc(ax: Any, header: str, tokens: Sequence[str], ws: Sequence[float], rows: int) -> None:
    """One document panel: a coloured box per token (wrapped like text) under a one-line header."""
    from matplotlib.patches import Rectangle

    boxes, _ = _layout(tokens)
    ax.set_xlim(0, _COLS)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    ax.set_title(header, loc="left", fontsize=10, parse_math=False)
    if not boxes:
        ax.text(0, 0.5, "(no tokens)", va="center", fontsize=_FS, color="#777")
    for x, row, width, text, i in boxes:
        rgb = weight_rgb(ws[i])
        ax.add_patch(Rectangle((x, row + 0.08), width, 0.84, facecolor=rgb, edgecolor="0.8", linewidth=0.3))
        if text:
            ax.text(
                x + width / 2,
                row + 0.5,
                text,
                ha="center",
                va="center_baseline",
                fontsize=_FS,
                family=["DejaVu Sans Mono", "DejaVu Sans"],
                color="white" if _dark(rgb) else "black",
                parse_math=False,
            )


def _png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing")  # odd unicode renders as a box
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def write_weights_png(
    path: str | Path, docs: list[tuple[str, list[str], list[float]]], max_tokens_per_doc: int = 400
) -> None:
    """A PNG heatmap of token weights: one panel per document (wrapped rows of coloured boxes) and a colour bar.

    Documents longer than ``max_tokens_per_doc`` show their first tokens; the statistics cover all of them.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure

    if not docs:
        raise ValueError("write_weights_png: no documents")
    if max_tokens_per_doc < 1:
        raise ValueError(f"max_tokens_per_doc must be >= 1, got {max_tokens_per_doc}")
    panels = []
    for name, tokens, weights in docs:
        ws = _check(tokens, weights, name)
        toks = list(tokens)[:max_tokens_per_doc]
        panels.append((name, toks, ws, len(tokens), _layout(toks)[1]))

    pad, cbar_h, head_h, line_h = 0.3, 0.15, 0.35, _LINE_H / 72
    width = _COLS * _CELL_W / 72 + 2 * pad
    height = pad + cbar_h + 0.3 + sum(head_h + rows * line_h for *_, rows in panels) + pad
    fig = Figure(figsize=(width, height))
    frac_w = (width - 2 * pad) / width
    top = height - pad
    cax = fig.add_axes((pad / width + frac_w * 0.6, (top - cbar_h) / height, frac_w * 0.4, cbar_h / height))
    cmap = LinearSegmentedColormap.from_list("taalm_weights", _RAMP_RGB)
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), cax=cax, orientation="horizontal").set_label(
        "token weight", fontsize=8
    )
    cax.tick_params(labelsize=7)
    top -= cbar_h + 0.3
    for name, toks, ws, n_total, rows in panels:
        h = rows * line_h
        ax = fig.add_axes((pad / width, (top - head_h - h) / height, frac_w, h / height))
        shown = f" (first {len(toks)} shown)" if len(toks) < n_total else ""
        _draw_doc(ax, f"{_clean(name)} — {_stats(ws)}{shown}", toks, ws, rows)
        top -= head_h + h
    atomic_write_bytes(path, _png_bytes(fig))


# ---------------------------------------------------------------------------------------------------------- curves
def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _series(records: list[dict[str, Any]], key: str) -> dict[str, list[tuple[float, float]]]:
    """``{probe: [(epoch, value), ...]}`` sorted by epoch, skipping records whose value is None."""
    out: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(records):
        for field in ("epoch", "probe"):
            if field not in r:
                raise TaalmError(f"learning-curve record {i}: missing field {field!r}")
        if r.get(key) is not None:
            out.setdefault(str(r["probe"]), []).append((float(r["epoch"]), float(r[key])))
    return {p: sorted(v) for p, v in out.items()}


def plot_learning_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Accuracy and perplexity (log y) against epoch, one line per probe set; a train-loss panel if any is logged.

    ``records`` are metrics lines ``{"epoch", "probe", "accuracy", "perplexity", "train_loss"}``; None values skip.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    acc, ppl = _series(records, "accuracy"), _series(records, "perplexity")
    loss = sorted(dict(p for s in _series(records, "train_loss").values() for p in s).items())  # one per epoch
    if not acc and not ppl:
        raise TaalmError("plot_learning_curves: no record has an accuracy or a perplexity")
    probes = list(dict.fromkeys([*acc, *ppl]))
    colors = dict(zip(probes, _palette(len(probes)), strict=True))
    n = 3 if loss else 2
    fig = Figure(figsize=(4.6 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, series, ylabel in ((axes[0], acc, "accuracy"), (axes[1], ppl, "perplexity")):
        for probe, pts in series.items():
            ax.plot(*zip(*pts, strict=True), marker="o", ms=4, color=colors[probe], label=probe)
        ax.set_ylabel(ylabel)
    if any(v > 0 for pts in ppl.values() for _, v in pts):
        axes[1].set_yscale("log")
    if loss:
        axes[2].plot(*zip(*loss, strict=True), marker="o", ms=4, color="0.3")
        axes[2].set_ylabel("train loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    atomic_write_bytes(path, _png_bytes(fig))


Band = tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]  # (lower, upper) curves shaped like the mean's


def _check_band(name: str, band: Band, points: int, width: int) -> None:
    if len(band) != 2 or any(len(side) != points or any(len(p) != width for p in side) for side in band):
        raise ValueError(f"{name}: the band must be (lower, upper), each {points} points of {width} values like the "
                         "curve")


def plot_method_curves(
    curves: dict[str, list[tuple[float, float]]],
    path: str | Path,
    title: str = "",
    labels: tuple[str, str] = ("To-Learn accuracy", "Not-To-Forget accuracy"),
    bands: dict[str, Band] | None = None,
) -> None:
    """Two panels like the TAALM paper's LAMA-ckl figures: To-Learn (left) and Not-To-Forget (right) accuracy.

    ``curves[method][epoch] = (to_learn_acc, nf_acc)``, epoch 0 being before training (over several seeds: their
    mean); one line with markers per method, the same colour and marker in both panels. ``bands[method] = (lower,
    upper)``, each shaped like the method's curve, shades its 95% interval per epoch.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not curves:
        raise ValueError("plot_method_curves: no curves")
    bands = bands or {}
    for method, pts in curves.items():
        if any(len(p) != 2 for p in pts):
            raise ValueError(f"plot_method_curves: {method}: every point must be (to_learn_acc, nf_acc)")
        if method in bands:
            _check_band(f"plot_method_curves: {method}", bands[method], len(pts), 2)
    if set(bands) - set(curves):
        raise ValueError(f"plot_method_curves: bands without a curve: {sorted(set(bands) - set(curves))}")
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for k, (method, pts) in enumerate(curves.items()):
        color, marker = _palette(len(curves))[k], _MARKERS[k % len(_MARKERS)]
        for side, ax in enumerate(axes):
            ax.plot(range(len(pts)), [p[side] for p in pts], marker=marker, ms=5, color=color, label=method)
            if method in bands:
                lower, upper = bands[method]
                ax.fill_between(range(len(pts)), [p[side] for p in lower], [p[side] for p in upper], color=color,
                                alpha=0.15, lw=0)
    for ax, label in zip(axes, labels, strict=True):
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    atomic_write_bytes(path, _png_bytes(fig))


def plot_meta_curve(history: list[dict[str, Any]], path: str | Path, selected: int | None = None,
                    title: str = "") -> None:
    """Meta-training at a glance: the outer loss per φ update (left), the validation gain of φ over uniform weights
    (accuracy and label NLL, middle; the selected φ marked), and how concentrated φ's weights are (right: mean raw
    weight and effective fraction of tokens, on the meta-batches and on the held-out documents)."""
    from matplotlib.figure import Figure

    updates = [r for r in history if "outer_loss" in r]
    validated = [r for r in history if "gain_accuracy" in r]
    if not updates and not validated:
        raise ValueError("plot_meta_curve: empty history")
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    loss_ax, gain_ax, weight_ax = fig.subplots(1, 3)
    if updates:
        x = [r["update"] for r in updates]
        loss_ax.plot(x, [r["outer_loss"] for r in updates], color="0.6", lw=1, label="per update")
        window = max(1, len(updates) // 10)
        losses = [r["outer_loss"] for r in updates]
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(losses))]
        loss_ax.plot(x, smooth, color="k", lw=1.5, label=f"mean of {window}")
        weight_ax.plot(x, [r["mean_weight"] for r in updates], color="tab:red", lw=1, label="mean weight (batches)")
        weight_ax.plot(x, [r["effective_fraction"] for r in updates], color="tab:blue", lw=1,
                       label="effective fraction (batches)")
    if validated:
        x = [r["update"] for r in validated]
        gain_ax.plot(x, [r["gain_accuracy"] for r in validated], marker="o", ms=4, color="tab:green",
                     label="accuracy gain")
        gain_ax.plot(x, [r["gain_nll"] for r in validated], marker="s", ms=4, color="tab:purple",
                     label="NLL gain (uniform − φ)")
        gain_ax.axhline(0, color="0.5", lw=0.8)
        if selected is not None:
            gain_ax.axvline(selected, color="tab:orange", ls="--", lw=1, label=f"selected (update {selected})")
        weight_ax.plot(x, [r["val_w_mean"] for r in validated], "o", ms=4, color="tab:red",
                       label="mean weight (held out)")
        weight_ax.plot(x, [r["val_w_effective_fraction"] for r in validated], "o", ms=4, color="tab:blue",
                       label="effective fraction (held out)")
    for ax, ylabel in ((loss_ax, "outer loss (task NLL after the step)"), (gain_ax, "validation gain"),
                       (weight_ax, "φ's weights")):
        ax.set_xlabel("φ update")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    atomic_write_bytes(path, _png_bytes(fig))


def plot_period_curves(summary: dict[str, Any], path: str | Path, title: str = "") -> None:
    """TemporalWiki: changed (left) and unchanged (right) object NLL after each period, one line per method (over
    several seeds: their mean), the base model dashed. ``summary`` is the benchmark's summary (``base`` and
    ``methods[name][period]["after"]``); a method's ``ci95["periods_changed"]`` / ``["periods_unchanged"]`` (lower,
    upper lists over the periods), where present, shade its 95% interval."""
    from matplotlib.figure import Figure

    periods = list(summary["base"])
    methods = summary["methods"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for side, (ax, kind) in enumerate(zip(axes, ("changed", "unchanged"), strict=True)):
        ax.plot(periods, [summary["base"][p][kind]["nll"] for p in periods], ls="--", color="0.3", label="base")
        for k, (name, result) in enumerate(methods.items()):
            color = _palette(len(methods))[k]
            ax.plot(periods, [result[p]["after"][kind]["nll"] for p in periods], marker=_MARKERS[k % len(_MARKERS)],
                    ms=5, color=color, label=name)
            band = (result.get("ci95") or {}).get(f"periods_{kind}")
            if band is not None:
                lower, upper = band
                if len(lower) != len(periods) or len(upper) != len(periods):
                    raise ValueError(f"plot_period_curves: {name}: the {kind} band has {len(lower)} and "
                                     f"{len(upper)} points for {len(periods)} periods")
                ax.fill_between(range(len(periods)), lower, upper, color=color, alpha=0.15, lw=0)
        ax.set_title(f"{kind.upper()} (to {'learn' if side == 0 else 'keep'})")
        ax.set_xlabel("after learning period")
        ax.set_ylabel("object NLL (lower is better)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    atomic_write_bytes(path, _png_bytes(fig))


def plot_tradeoff(summary: dict[str, Any], path: str | Path, title: str = "") -> None:
    """TemporalWiki: learning against forgetting, one point per method: the change of changed-object NLL (x) and of
    unchanged-object NLL (y) against the base model, averaged over the periods. Left and down is better."""
    from matplotlib.figure import Figure

    periods = list(summary["base"])
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    methods = summary["methods"]
    for k, (name, result) in enumerate(methods.items()):
        delta = [sum(result[p]["after"][kind]["nll"] - summary["base"][p][kind]["nll"] for p in periods) / len(periods)
                 for kind in ("changed", "unchanged")]
        ax.scatter(*delta, marker=_MARKERS[k % len(_MARKERS)], s=50, color=_palette(len(methods))[k], label=name)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_xlabel("Δ changed NLL vs base (learning: lower is better)")
    ax.set_ylabel("Δ unchanged NLL vs base (forgetting: lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    atomic_write_bytes(path, _png_bytes(fig))


Gain = tuple[float, Sequence[float] | None]  # a value and its 95 % interval (None: not known)


def plot_kind_gains(runs: dict[str, dict[str, Gain]], path: str | Path, chosen: str = "",
                    ylabel: str = "gain over uniform weights") -> None:
    """φ candidates side by side: ``runs[run][group] = (gain, ci95 or None)``, one group of markers per key (the worst
    kind, then each kind), one marker per run with its interval as an error bar, 0 (uniform weights) as a line; the
    ``chosen`` run is drawn filled and named so in the legend."""
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("plot_kind_gains: no runs")
    groups = list(dict.fromkeys(g for points in runs.values() for g in points))
    width = 0.8 / len(runs)
    fig = Figure(figsize=(max(5.0, 1.5 + len(groups) * (0.6 + 0.35 * len(runs))), 4), layout="constrained")
    ax = fig.subplots()
    for k, (run, points) in enumerate(runs.items()):
        color, marker = _palette(len(runs))[k], _MARKERS[k % len(_MARKERS)]
        label = f"{run} (chosen)" if run == chosen else run
        for i, group in enumerate(groups):
            if group not in points:
                continue
            value, ci = points[group]
            x = i - 0.4 + width * (k + 0.5)
            if ci is not None:  # a worst kind's percentile interval can miss its value (the min of means is biased)
                ax.errorbar(x, value, yerr=[[max(value - ci[0], 0)], [max(ci[1] - value, 0)]], color=color,
                            capsize=3, lw=1)
            ax.plot(x, value, marker=marker, ms=7, color=color, mfc=color if run == chosen else "white",
                    label=label if group == next(iter(points)) else None)  # one legend entry per run
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write_bytes(path, _png_bytes(fig))
