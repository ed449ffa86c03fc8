"""Batch manifests: JSON Lines, one job an object, checked completely before anything renders.

A line is ``{"kind": "render" | "dub", "id": ..., "out": ..., <options>}``:

* ``kind``: the command the job runs (:data:`pdfgc_core.cli.JOB_KINDS`).
* options: the command's own options by their long names with ``_`` for ``-``
  (``pose_strength`` for ``--pose-strength``), checked by the command's own parser
  (:func:`pdfgc_core.cli.job_parser`), so names, ranges and choices are those of the command line.
  A flag takes ``true`` / ``false``; ``null`` means the default. Input files (:data:`INPUT_FIELDS`)
  are relative to the manifest's folder unless absolute, and must exist.
* ``id`` (optional): a name made of letters, digits and ``._-``, unique in the manifest. Default:
  the kind and a hash of the job's options, so editing a job gives it a new id and output.
* ``out`` (optional): the mp4, relative to the batch's output folder (subfolders allowed, no
  ``..``). Default: ``ID.mp4``.

The options that choose the networks and the signing identity (:func:`batch_level_fields`:
``checkpoint``, ``device``, ...) are the batch's, given once on its command line; per-frame PNG
folders (``frames_dir``) are not written by batches.

Blank lines are skipped. Every problem of every line is collected (:class:`Manifest.problems`,
with line numbers); :class:`ManifestError` reports them all at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .. import cli
from ..errors import InputError

INPUT_FIELDS = ("appearance", "audio", "pose", "eye", "expression", "pose_map", "video")
"""Job options that name input files or folders: resolved against the manifest's folder and
checked to exist before the batch starts."""
NOT_IN_BATCHES = ("frames_dir",)
"""Job options a manifest may not set: PNG folders are not written atomically, so a batch could
not tell a finished one from a half-written one."""
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_LINE_BYTES = 1 << 20
"""Longest manifest line accepted (1 MiB)."""
MAX_PROBLEMS_SHOWN = 50
"""Problems listed in a :class:`ManifestError` message (all are kept in ``problems``)."""


class ManifestError(InputError):
    """The manifest has bad lines: ``problems`` is [(line number, message)], all of them."""

    def __init__(self, path, problems: list[tuple[int, str]]):
        self.path, self.problems = Path(path), problems
        shown = "\n".join(f"  line {n}: {msg}" for n, msg in problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        lines = len({n for n, _ in problems})
        super().__init__(
            f"{path}: {lines} bad line(s); nothing was rendered. Fix them (or pass --skip-invalid "
            f"to run the other lines):\n{shown}{tail}"
        )


@dataclass
class Job:
    """One valid manifest line. ``index``: its position among the manifest's jobs (0-based, bad
    lines included, so shards stay put when a line is fixed); ``line``: its line number (1-based);
    ``out``: absolute path of its mp4; ``args``: the parsed command options (inputs absolute,
    ``out`` set), as :func:`pdfgc_core.cli.render_job` / :func:`~pdfgc_core.cli.dub_job` take them."""

    index: int
    line: int
    id: str
    kind: str
    out: Path
    args: argparse.Namespace
    rel_out: str = ""


@dataclass
class Manifest:
    """A read manifest: its valid ``jobs``, the ``problems`` of the bad lines [(line, message)]
    and ``invalid`` [(index, line, id or None, message)] for the results file."""

    path: Path
    out_dir: Path
    jobs: list[Job] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    invalid: list[tuple[int, int, str | None, str]] = field(default_factory=list)

    def check(self) -> None:
        """Raise :class:`ManifestError` listing every bad line, if there is one."""
        if self.problems:
            raise ManifestError(self.path, self.problems)


def _option_table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """dest -> the action of each long option (help excluded)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def batch_level_fields() -> tuple[str, ...]:
    """Job options set once for the whole batch (on its command line): those the ``batch``
    command itself takes, ``out`` excepted (the batch's folder there, the job's mp4 here)."""
    batch = _option_table(_batch_parser())
    jobs = set().union(*(_option_table(cli.job_parser(k)) for k in cli.JOB_KINDS))
    return tuple(sorted((set(batch) & jobs) - {"out"}))


def _batch_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(add_help=False)
    cli.add_batch_args(ap)
    return ap


def _argv(fields: dict, table: dict[str, argparse.Action], base: Path) -> tuple[list[str], list[str]]:
    """(argv for the job parser, problems) from a line's option fields."""
    argv, problems = [], []
    for name, value in fields.items():
        action = table[name]
        flag = max(action.option_strings, key=len)
        if value is None:
            continue
        if action.nargs == 0:  # a flag (store_true)
            if not isinstance(value, bool):
                problems.append(f"{name}: {value!r} is not true or false (it is the flag {flag})")
            elif value:
                argv.append(flag)
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(f"{name}: give a string or a number, not {json.dumps(value)}")
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if name in INPUT_FIELDS:
            p = Path(text).expanduser()
            text = str(p if p.is_absolute() else base / p)
            if not Path(text).exists():
                problems.append(f"{name}: {text} does not exist")
        argv.append(f"{flag}={text}")
    return argv, problems


def _out_path(value, job_id: str) -> tuple[str | None, str | None]:
    """(relative output path, problem)."""
    if value is None:
        return f"{job_id}.mp4", None
    if not isinstance(value, str) or not value.strip():
        return None, f"out: give a relative path such as 'clips/{job_id}.mp4', not {json.dumps(value)}"
    rel = PurePosixPath(value.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or rel.name.startswith("."):
        return None, f"out: {value!r} must stay inside the output folder (relative, no '..', not hidden)"
    if rel.suffix.lower() != ".mp4":
        return None, f"out: {value!r} must end in .mp4"
    return str(rel), None


def _default_id(kind: str, fields: dict) -> str:
    digest = hashlib.sha256(json.dumps([kind, fields], sort_keys=True).encode()).hexdigest()
    return f"{kind}-{digest[:12]}"


def read_manifest(path: str | Path, out_dir: str | Path) -> Manifest:
    """Parse and check every line of the manifest at ``path`` for a batch writing into
    ``out_dir``. Nothing is rendered; nothing is raised for bad lines (see :meth:`Manifest.check`).
    InputError if the manifest itself cannot be read."""
    path, out_dir = Path(path), Path(out_dir).absolute()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the batch manifest {path}: {e.strerror or e}") from None
    base = path.absolute().parent
    tables = {k: _option_table(cli.job_parser(k)) for k in cli.JOB_KINDS}
    batch_only = set(batch_level_fields())
    m = Manifest(path, out_dir)
    ids: dict[str, int] = {}
    outs: dict[str, int] = {}
    index = -1
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        index += 1
        job, job_id, problems = _check_line(line, tables, batch_only, base, out_dir)
        for seen, key, what in ((ids, job_id, "id"), (outs, job.rel_out if job else None, "out")):
            if key in seen:
                problems.append(f"{what} {key!r} is also line {seen[key]}'s; each job needs its own")
            elif key is not None:
                seen[key] = number
        m.problems += [(number, p) for p in problems]
        if problems:
            m.invalid.append((index, number, job_id, "; ".join(problems)))
        else:
            job.index, job.line = index, number
            m.jobs.append(job)
    if index < 0:
        m.problems.append((0, "the manifest has no jobs (one JSON object a line)"))
    return m


def _check_line(line: bytes, tables, batch_only, base: Path, out_dir: Path) -> tuple[Job | None, str | None, list[str]]:
    """(the job or None, its id if known, problems) of one manifest line."""
    if len(line) > MAX_LINE_BYTES:
        return None, None, [f"longer than {MAX_LINE_BYTES} bytes"]
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        return None, None, [f"not valid JSON ({e})"]
    if not isinstance(obj, dict):
        return None, None, [f"a job is a JSON object ({{...}}), not {type(obj).__name__}"]
    kind = obj.pop("kind", None)
    if kind not in tables:
        return None, None, [f"kind: give one of {', '.join(map(repr, tables))} (got {json.dumps(kind)})"]
    job_id, out = obj.pop("id", None), obj.pop("out", None)
    problems = []
    if job_id is not None and not (isinstance(job_id, str) and ID_PATTERN.match(job_id)):
        problems.append(f"id: {json.dumps(job_id)} is not a name of letters, digits and ._- (at most 200)")
        job_id = None
    table = tables[kind]
    unknown = sorted(k for k in obj if k not in table)
    refused = sorted(k for k in obj if k in batch_only or k in NOT_IN_BATCHES)
    if unknown:
        fields = ", ".join(sorted(k for k in table if k not in batch_only and k not in NOT_IN_BATCHES and k != "out"))
        problems.append(f"unknown field(s) {', '.join(unknown)}; {kind} jobs take kind, id, out, {fields}")
    for k in refused:
        if k in NOT_IN_BATCHES:
            problems.append(f"{k}: not available in batches (only the mp4 is written)")
        else:
            problems.append(f"{k}: set for the whole batch; give --{k.replace('_', '-')} to the batch command")
    fields = {k: v for k, v in obj.items() if k in table and k not in refused}
    job_id = job_id or _default_id(kind, fields)
    rel, bad = _out_path(out, job_id)
    if bad:
        problems.append(bad)
    argv, bad_fields = _argv(fields, table, base)
    problems += bad_fields
    try:  # the command's own checks, also when other fields were refused: all problems at once
        args = cli.job_parser(kind).parse_args([*argv, f"--out={out_dir / (rel or 'x.mp4')}"])
    except cli.JobOptionError as e:
        problems += _each_option_problem(kind, argv) or [_field_names(str(e))]
    if problems:
        return None, job_id, problems
    return Job(-1, -1, job_id, kind, out_dir / rel, args, rel), job_id, []


def _each_option_problem(kind: str, argv: list[str]) -> list[str]:
    """The parser's complaint about each option on its own (argparse stops at the first)."""
    checker = cli.job_parser(kind)
    for action in checker._actions:
        action.required = False
    found = []
    for token in argv:
        try:
            checker.parse_args([token])
        except cli.JobOptionError as e:
            found.append(_field_names(str(e)))
    return found


def _field_names(message: str) -> str:
    """argparse's message with options named as manifest fields (``--pose-strength`` -> ``pose_strength``)."""
    message = message.replace("the following arguments are required: ", "missing field(s): ")
    message = re.sub(r"^argument (--[a-z0-9-]+): ", r"\1: ", message)
    return re.sub(r"--([a-z0-9][a-z0-9-]*)", lambda mt: mt.group(1).replace("-", "_"), message)
