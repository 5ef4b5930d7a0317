"""Tests for taalm.viz: terminal/HTML/PNG token-weight pictures and learning-curve plots.

PYTHONPATH=src python -m pytest -q tests/test_viz.py
"""

from __future__ import annotations

import itertools
import math
import re
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from taalm import viz
from taalm.errors import TaalmError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKENS = ["The", " capital", " of", " France", " is", " Paris", ".", "\n", "Next"]
WEIGHTS = [0.0, 0.2, 0.05, 0.9, 0.1, 1.0, 0.3, 0.5, 0.75]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------------------------------------------ colour scale
def test_colour_scale_runs_white_to_dark_red_and_clips():
    assert viz.weight_rgb(0.0) == (1.0, 1.0, 1.0)
    assert viz.weight_rgb(1.0) == pytest.approx((0x87 / 255, 0.0, 0.0))
    assert viz.weight_rgb(-3.0) == viz.weight_rgb(0.0)
    assert viz.weight_rgb(7.0) == viz.weight_rgb(1.0)
    greens = [viz.weight_rgb(i / 20)[1] for i in range(21)]
    assert all(a >= b for a, b in itertools.pairwise(greens))  # darker as the weight grows


def test_import_does_not_load_matplotlib():
    code = "import sys, taalm.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------------ terminal
def test_terminal_plain_table():
    out = viz.format_weights_terminal([" a", "b\n", ""], [0.12345, 1, 0.5], color=False)
    assert out.splitlines() == ["·a\t0.123", "b⏎\t1.000", "\t0.500"]
    assert "\x1b" not in out


def test_terminal_colour_uses_ansi_256_backgrounds():
    out = viz.format_weights_terminal(TOKENS, WEIGHTS)
    backgrounds = [int(b) for b in re.findall(r"\x1b\[48;5;(\d+)m", out)]
    assert len(backgrounds) == len(TOKENS)
    assert backgrounds[0] == 231 and backgrounds[5] == 88  # weight 0 -> white, weight 1 -> dark red
    assert "·capital" in out and "⏎" in out
    assert out.count("\n") == 1  # the newline token also breaks the line
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert plain == "The·capital·of·France·is·Paris.⏎\nNext"


@pytest.mark.parametrize("color", [True, False])
def test_terminal_length_mismatch(color):
    with pytest.raises(ValueError, match="2 tokens but 1 weights"):
        viz.format_weights_terminal(["a", "b"], [0.5], color=color)


# ------------------------------------------------------------------------------------------------------ HTML
class _Collector(HTMLParser):
    VOID = frozenset({"meta", "br", "hr", "img", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.spans: list[dict[str, str | None]] = []
        self.span_text: list[str] = []
        self.tags: list[str] = []
        self.errors: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.scripts += tag == "script"
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "span" and dict(attrs).get("class") == "t":
            self.spans.append(dict(attrs))
            self.span_text.append("")

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "span" and self.spans:
            self.span_text[-1] += data


def parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    c.close()
    return c


def test_html_structure_spans_and_hover_weights():
    docs = [("doc <1>", TOKENS, WEIGHTS), ("second", ["x", "y"], [0.25, 0.5])]
    page = viz.weights_html(docs, "Token weights")
    assert page.startswith("<!DOCTYPE html>")
    c = parse(page)
    assert not c.errors and not c.stack
    assert {"html", "head", "body", "style", "title"} <= set(c.tags)
    assert c.tags.count("section") == 2
    assert len(c.spans) == len(TOKENS) + 2
    assert [s["title"] for s in c.spans[:3]] == ["weight=0.000", "weight=0.200", "weight=0.050"]
    assert [float(s["data-w"]) for s in c.spans] == WEIGHTS + [0.25, 0.5]
    assert "background:#ffffff" in c.spans[0]["style"] and "background:#870000" in c.spans[5]["style"]
    assert c.span_text[1] == " capital" and c.span_text[7] == "⏎\n"  # whitespace kept verbatim
    assert "white-space: pre-wrap" in page and "linear-gradient" in page  # colour-bar legend
    assert "mean 0.422 · min 0.000 · max 1.000" in page  # sum(WEIGHTS) / 9 = 3.8 / 9
    assert "doc &lt;1&gt;" in page
    assert "http" not in page and "<link" not in page  # standalone


def test_html_escapes_tokens():
    page = viz.weights_html([("d", ["<script>", "alert('x')", "</script>", "&amp;"], [0.1, 0.2, 0.3, 0.4])], "t")
    c = parse(page)
    assert c.scripts == 0
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert c.span_text == ["<script>", "alert('x')", "</script>", "&amp;"]


def test_html_survives_odd_text_and_rejects_bad_weights(tmp_path):
    path = tmp_path / "w.html"
    viz.write_weights_html(path, [("d", ["\ud800", "\x00", "", "東京 🙂"], [0.1, 0.2, 0.3, 0.4])], "odd")
    text = path.read_text(encoding="utf-8")
    assert "\x00" not in text and len(parse(text).spans) == 4
    with pytest.raises(ValueError, match="1 tokens but 2 weights"):
        viz.weights_html([("d", ["a"], [0.1, 0.2])], "t")
    with pytest.raises(ValueError, match="not a finite number"):
        viz.write_weights_html(tmp_path / "bad.html", [("d", ["a"], [math.inf])], "t")
    assert not (tmp_path / "bad.html").exists()


# ------------------------------------------------------------------------------------------------------ PNG heatmap
def test_png_heatmap_written_and_depends_on_weights(tmp_path):
    zeros, ones = tmp_path / "zeros.png", tmp_path / "ones.png"
    viz.write_weights_png(zeros, [("doc", TOKENS, [0.0] * len(TOKENS))])
    viz.write_weights_png(ones, [("doc", TOKENS, [1.0] * len(TOKENS))])
    assert zeros.read_bytes()[:8] == PNG_MAGIC and zeros.stat().st_size > 5_000
    assert png_size(zeros) == png_size(ones)  # same layout ...
    assert zeros.read_bytes() != ones.read_bytes()  # ... different colours
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ones.png", "zeros.png"]  # no temporaries left


def test_png_handles_odd_tokens_many_docs_and_truncation(tmp_path):
    odd = ["", " ", "\n", "\t", "$x^2$", "東京", "🙂", "e\u0301", "\ud800", "\x00", "a" * 500, "\\"]
    docs = [
        ("odd $name$", odd, [i / len(odd) for i in range(len(odd))]),
        ("empty", [], []),
        ("long", ["tok"] * 50, [0.5] * 50),
    ]
    path = tmp_path / "odd.png"
    viz.write_weights_png(path, docs, max_tokens_per_doc=10)
    width, height = png_size(path)
    assert width > 500 and height > 200
    short = tmp_path / "short.png"
    viz.write_weights_png(short, docs[2:], max_tokens_per_doc=10)
    longer = tmp_path / "longer.png"
    viz.write_weights_png(longer, docs[2:], max_tokens_per_doc=50)
    assert png_size(longer)[1] > png_size(short)[1]  # more tokens shown -> more rows


def test_png_bad_weights_leave_no_file(tmp_path):
    path = tmp_path / "out" / "w.png"
    with pytest.raises(ValueError, match="weight 1 is nan"):
        viz.write_weights_png(path, [("doc", ["a", "b"], [0.5, float("nan")])])
    with pytest.raises(ValueError, match="2 tokens but 3 weights"):
        viz.write_weights_png(path, [("doc", ["a", "b"], [0.5, 0.1, 0.2])])
    with pytest.raises(ValueError, match="no documents"):
        viz.write_weights_png(path, [])
    assert not path.exists()
    assert not path.parent.exists() or not any(path.parent.iterdir())


def test_png_render_failure_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "w.png"
    path.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(viz, "_draw_doc", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        viz.write_weights_png(path, [("doc", ["a"], [0.5])])
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["w.png"]


# ------------------------------------------------------------------------------------------------------ curves
def _records():
    out = []
    for epoch in range(4):
        out.append(
            {
                "epoch": epoch,
                "probe": "to_learn",
                "accuracy": 0.1 + 0.2 * epoch,
                "perplexity": 55.0 / (1 + epoch),
                "train_loss": None if epoch == 0 else 3.2 - 0.5 * epoch,
            }
        )
        out.append(
            {
                "epoch": epoch,
                "probe": "not_to_forget",
                "accuracy": 0.6 - 0.05 * epoch,
                "perplexity": 20.0 + epoch,
                "train_loss": None,
            }
        )
    return out


def test_learning_curves_png(tmp_path):
    path = tmp_path / "lc.png"
    viz.plot_learning_curves(_records(), path, title="demo")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    no_loss = tmp_path / "no_loss.png"
    viz.plot_learning_curves([{**r, "train_loss": None} for r in _records()], no_loss)
    assert png_size(no_loss)[0] < png_size(path)[0]  # the train-loss panel appears only when logged


def test_learning_curves_bad_records(tmp_path):
    with pytest.raises(TaalmError, match="record 1: missing field 'probe'"):
        viz.plot_learning_curves([{"epoch": 0, "probe": "a", "accuracy": 0.1}, {"epoch": 1}], tmp_path / "x.png")
    with pytest.raises(TaalmError, match="no record"):
        viz.plot_learning_curves([{"epoch": 0, "probe": "a", "accuracy": None}], tmp_path / "x.png")
    assert not any(tmp_path.iterdir())


def test_method_curves_png(tmp_path):
    curves = {
        "FT": [(0.1, 0.6), (0.3, 0.5), (0.5, 0.4)],
        "TAALM": [(0.1, 0.6), (0.4, 0.58), (0.6, 0.57)],
        "RHO-1": [(0.1, 0.6), (0.35, 0.5)],
    }
    path = tmp_path / "mc.png"
    viz.plot_method_curves(curves, path, title="LAMA-ckl")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    other = tmp_path / "mc2.png"
    viz.plot_method_curves({**curves, "TAALM": [(0.1, 0.6), (0.9, 0.9), (0.95, 0.95)]}, other, title="LAMA-ckl")
    assert other.read_bytes() != path.read_bytes()
    with pytest.raises(ValueError, match="no curves"):
        viz.plot_method_curves({}, tmp_path / "none.png")
    with pytest.raises(ValueError, match="FT"):
        viz.plot_method_curves({"FT": [(0.1,)]}, tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mc.png", "mc2.png"]


def test_method_curves_draw_the_band_of_each_method(tmp_path):
    curves = {"FT": [(0.1, 0.6), (0.3, 0.5), (0.5, 0.4)], "TAALM": [(0.1, 0.6), (0.4, 0.58), (0.6, 0.57)]}
    band = ([(0.05, 0.55), (0.2, 0.45), (0.4, 0.3)], [(0.15, 0.65), (0.4, 0.55), (0.6, 0.5)])
    plain, banded = tmp_path / "plain.png", tmp_path / "banded.png"
    viz.plot_method_curves(curves, plain)
    viz.plot_method_curves(curves, banded, bands={"FT": band})
    assert banded.read_bytes()[:8] == PNG_MAGIC and banded.read_bytes() != plain.read_bytes()
    with pytest.raises(ValueError, match="FT: the band"):
        viz.plot_method_curves(curves, tmp_path / "short.png", bands={"FT": (band[0][:2], band[1][:2])})
    with pytest.raises(ValueError, match="without a curve"):
        viz.plot_method_curves(curves, tmp_path / "other.png", bands={"RHO-1": band})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["banded.png", "plain.png"]


def _twiki_summary(band: bool) -> dict:
    periods = ("0901-1001", "1001-1101")
    scores = lambda c, u: {"changed": {"nll": c}, "unchanged": {"nll": u}}
    method = {p: {"after": scores(2.0 + i, 3.0 - i)} for i, p in enumerate(periods)}
    if band:
        method["ci95"] = {"periods_changed": [[1.8, 2.7], [2.2, 3.3]], "periods_unchanged": [[2.9, 1.8], [3.1, 2.2]]}
    return {"base": {p: scores(4.0, 2.5) for p in periods}, "methods": {"finetune": method}}


def test_period_curves_draw_the_band_where_the_summary_has_one(tmp_path):
    plain, banded = tmp_path / "plain.png", tmp_path / "banded.png"
    viz.plot_period_curves(_twiki_summary(False), plain)
    viz.plot_period_curves(_twiki_summary(True), banded)
    assert banded.read_bytes()[:8] == PNG_MAGIC and banded.read_bytes() != plain.read_bytes()
    bad = _twiki_summary(True)
    bad["methods"]["finetune"]["ci95"]["periods_changed"] = [[1.8], [2.2]]
    with pytest.raises(ValueError, match="finetune: the changed band"):
        viz.plot_period_curves(bad, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_kind_gains_png_draws_each_interval_and_needs_a_run(tmp_path):
    runs = {"floor": {"worst kind": (-0.03, (-0.1, 0.0)), "lama": (0.0, (-0.1, 0.1))},
            "T3": {"worst kind": (0.02, (-0.1, 0.08)), "lama": (0.02, None)}}
    with_ci, without = tmp_path / "with.png", tmp_path / "without.png"
    viz.plot_kind_gains(runs, with_ci, chosen="T3")
    viz.plot_kind_gains({run: {g: (v, None) for g, (v, _) in points.items()} for run, points in runs.items()},
                        without, chosen="T3")
    assert with_ci.read_bytes()[:8] == PNG_MAGIC and png_size(with_ci) == png_size(without)
    assert with_ci.read_bytes() != without.read_bytes()  # the error bars are drawn
    viz.plot_kind_gains({"only": {"fictional": (0.1, None)}}, tmp_path / "one.png")  # a run without every group
    viz.plot_kind_gains({"biased": {"worst kind": (0.1, (-0.2, 0.05))}}, tmp_path / "outside.png")  # value above it
    with pytest.raises(ValueError, match="no runs"):
        viz.plot_kind_gains({}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
