"""Evaluation reports: metrics by section, per-frame series, plots and notes, written as JSON,
Markdown and HTML (the PNG plots beside them, embedded by relative path)."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MediaError
from ..media.atomic import atomic_write

FORMAT = "pdfgc-evaluation"
FORMAT_VERSION = 1


def jsonable(x):
    """Numbers, arrays, tuples and dicts -> plain JSON values; NaN and infinities -> None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flat(v, key + ".")
        else:
            out.append((key, v))
    return out


def _show(v) -> str:
    v = jsonable(v)
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


@dataclass
class Report:
    """What an evaluation found. ``sections``: ``{section: {metric: value}}`` (nested dicts allowed);
    ``series``: per-frame arrays ``{section: {name: [N]}}``; ``plots``: ``{name: uint8 RGB [H,W,3]}``;
    ``tables``: ``{name: Markdown table}``; ``notes``: what was skipped and why, caveats."""

    title: str
    sections: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    plots: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def add(self, section: str, metrics: dict) -> dict:
        """Adds a section; array values (per-frame curves) move to :attr:`series`. Returns the scalars."""
        scalars, arrays = {}, {}
        for k, v in metrics.items():
            (arrays if isinstance(v, np.ndarray) and v.ndim >= 1 else scalars)[k] = v
        self.sections.setdefault(section, {}).update(scalars)
        if arrays:
            self.series.setdefault(section, {}).update(arrays)
        return scalars

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict:
        return jsonable(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "title": self.title,
                "metrics": self.sections,
                "tables": self.tables,
                "notes": self.notes,
                "plots": [f"{k}.png" for k in self.plots],
                "series": self.series,
            }
        )

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for n in self.notes:
            lines.append(f"- {n}")
        if self.notes:
            lines.append("")
        for sec, metrics in self.sections.items():
            lines += [f"## {sec}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_show(v)} |" for k, v in _flat(metrics)]
            lines.append("")
        for name, table in self.tables.items():
            lines += [f"## {name}", "", table.rstrip(), ""]
        for name in self.plots:
            lines += [f"![{name}]({name}.png)", ""]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}"
            "table{border-collapse:collapse;margin:0 0 1em}td,th{border:1px solid #ccc;padding:3px 8px}"
            "img{max-width:100%;display:block;margin:1em 0}</style></head><body>",
            f"<h1>{e(self.title)}</h1>",
        ]
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>")
        for sec, metrics in self.sections.items():
            rows = "".join(f"<tr><td>{e(k)}</td><td>{e(_show(v))}</td></tr>" for k, v in _flat(metrics))
            parts.append(f"<h2>{e(sec)}</h2><table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
        for name, table in self.tables.items():
            parts.append(f"<h2>{e(name)}</h2>{markdown_table_to_html(table)}")
        for name in self.plots:
            parts.append(f"<img src='{e(name)}.png' alt='{e(name)}'>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def summary(self) -> str:
        """One line per section with its scalar metrics (for logs and the ComfyUI text output)."""
        out = []
        for sec, metrics in self.sections.items():
            vals = ", ".join(f"{k} {_show(v)}" for k, v in _flat(metrics) if not isinstance(v, (list, tuple)))
            out.append(f"{sec}: {vals}")
        return "\n".join(out + [f"note: {n}" for n in self.notes])

    def write(self, folder) -> dict[str, Path]:
        """Writes ``report.json``, ``report.md``, ``report.html`` and one PNG per plot into ``folder``
        (created if missing), each file atomically. Returns ``{kind: path}``."""
        import cv2

        d = Path(folder)
        if d.exists() and not d.is_dir():
            raise MediaError(f"report folder {d} is a file; give a folder path")
        written = {}
        for name, img in self.plots.items():
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.dtype != np.uint8:
                raise InputError(f"plot {name!r} is not a uint8 RGB image")
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
            if not ok:
                raise MediaError(f"could not encode plot {name!r} as PNG")
            written[name] = _write_bytes(d / f"{name}.png", buf.tobytes())
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        written["json"] = _write_bytes(d / "report.json", text.encode())
        written["markdown"] = _write_bytes(d / "report.md", self.markdown().encode())
        written["html"] = _write_bytes(d / "report.html", self.html().encode())
        return written


def _write_bytes(path: Path, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; numbers shown with 4 significant digits, NaN as n/a."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_show(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table_to_html(table: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in table.strip().splitlines()]
    rows = [r for r in rows if not all(set(c.strip()) <= set("-:") for c in r)]
    if not rows:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"
