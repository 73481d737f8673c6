"""The study report as one self-contained HTML page: counts, the champion beside the baseline,
the best trials, the architectures, and the pictures inline."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any


def _base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No completed trial yet.</p>"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(value: Any) -> str:
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.4g}"
        return html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _baseline_section(champion: Mapping[str, Any] | None) -> str:
    """The study's baseline beside the champion on the same test images: accuracy, macro
    F1, each class's F1, and the two confusion matrices side by side."""
    if not champion or not champion.get("baseline") or champion.get("confusion") is None:
        return ""
    from runners.data import CLASS_NAMES
    from runners.metrics import scores_from_confusion

    base = champion["baseline"]
    sides = {
        f"baseline: trial {base['trial']} ({base['label']})": base["confusion"],
        f"champion: trial {champion.get('trial')}": champion["confusion"],
    }
    scores = {side: scores_from_confusion(matrix) for side, matrix in sides.items()}
    rows = [
        {"": "test accuracy", **{side: s["accuracy"] for side, s in scores.items()}},
        {"": "macro F1", **{side: s["macro_f1"] for side, s in scores.items()}},
        *({"": f"F1 {name}", **{side: s["f1"][i] for side, s in scores.items()}}
          for i, name in enumerate(CLASS_NAMES)),
    ]  # fmt: skip
    matrices = "".join(
        f'<figure class="confusion"><figcaption>{html.escape(side)}</figcaption>'
        f"{_confusion_table(matrix, CLASS_NAMES)}</figure>"
        for side, matrix in sides.items()
    )
    return (
        '<h2 id="baseline">Baseline vs tuned</h2><p>The study\'s first configuration (the '
        "published one, or the recipe it was started from) and the champion, judged on the "
        f"same test images.</p>{_table(rows)}{matrices}"
    )


def _confusion_table(matrix: list[list[int]], class_names: tuple[str, ...]) -> str:
    """A confusion matrix as an HTML table, each cell shaded by its share of the true class."""
    head = "".join(f"<th>{html.escape(n[:5])}</th>" for n in class_names)
    body = []
    for name, row in zip(class_names, matrix, strict=True):
        total = max(sum(row), 1)
        cells = "".join(
            f'<td style="background: rgba(31, 119, 180, {n / total:.2f})">{n}</td>' for n in row
        )
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def render_html(report: Any, *, best_n: int) -> str:
    """A :class:`~search.insight.report.StudyReport` as one self-contained HTML page."""
    name = html.escape(report.study_name)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in report.counts.items()) or "none"
    if report.champion:
        c = report.champion
        champion = (
            f"<p>Champion: <b>{html.escape(str(c.get('model_name', '')))}</b> version "
            f"{html.escape(str(c.get('version', '')))} from trial "
            f"{html.escape(str(c.get('trial', '')))}: test accuracy "
            f"<b>{float(c['test_accuracy']):.4f}</b>, macro F1 "
            f"{float(c.get('test_macro_f1', 'nan')):.4f} on the held-out test set.</p>"
        )
    else:
        champion = "<p>No champion registered from this study yet.</p>"
    champion += _baseline_section(report.champion)
    pictures = "".join(
        f'<figure id="{key}"><img alt="{key}" src="data:image/png;base64,{_base64(png)}">'
        f"<figcaption>{key.replace('_', ' ')}</figcaption></figure>"
        for key, png in report.pngs.items()
    )
    skipped = "".join(
        f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in report.skipped.items()
    )
    saved = (
        f"{report.epochs_saved} epochs saved by pruning "
        f"({report.epochs_trained} trained; at most {report.max_epochs} per trial)"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fmsearch study {name}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 900px; }}
</style></head><body>
<h1>Study {name}</h1>
<p id="counts">Trials: {counts}. {saved}.</p>
{champion}
{f"<h2>Architectures</h2>{_table(report.families)}" if report.families else ""}
<h2>Best {best_n} trials</h2>
{_table(report.best)}
<h2>Plots</h2>
{pictures}
{f"<h3>Not drawn</h3><ul>{skipped}</ul>" if skipped else ""}
<p><small>Written by fmsearch on {datetime.now():%Y-%m-%d %H:%M}.</small></p>
</body></html>
"""
