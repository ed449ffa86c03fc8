"""Batch manifests (``python -m pdfgc_core batch``): checked up front, rendered locally with one
broken job, resumed, sharded, killed and restarted, and on a local Ray cluster (same outputs as
the local run; a killed worker's job is started again)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from testenv import REPO, scaled

from pdfgc_core import cli, media
from pdfgc_core.batch import INPUT_FIELDS, batch_level_fields, manifest, read_manifest
from pdfgc_core.media.atomic import _temp_sibling

SAMPLES = REPO / "samples"
CLIP_SECONDS = 0.25  # 3 frames at 25 fps


# --------------------------------------------------------------------------- helpers


def speech(path: Path, seconds: float = CLIP_SECONDS) -> Path:
    """A short wav cut from the bundled speech, at the networks' sample rate (nothing to resample)."""
    import soundfile as sf

    from pdfgc_core.audio import SAMPLE_RATE, load_audio, resample

    wave, sr = load_audio(SAMPLES / "speech.mp3")
    wave = wave[:, : int(seconds * sr)]
    sf.write(path, resample(wave, sr, SAMPLE_RATE, "fast").T, SAMPLE_RATE)
    return path


def write_jobs(path: Path, jobs: list) -> Path:
    path.write_text("".join((j if isinstance(j, str) else json.dumps(j)) + "\n" for j in jobs))
    return path


@pytest.fixture
def job_dir(tmp_path) -> Path:
    """Inputs beside the manifest: the portrait, a short speech, a corrupt speech file."""
    d = tmp_path / "jobs"
    d.mkdir()
    (d / "anne.png").write_bytes((SAMPLES / "anne.png").read_bytes())
    speech(d / "speech.wav")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    return d


def render_jobs(n: int, broken: bool = True) -> list[dict]:
    jobs = [
        {
            "kind": "render",
            "id": f"clip{i}",
            "appearance": "anne.png",
            "audio": "speech.wav",
            "mouth_strength": 1 - i / 4,
        }
        for i in range(n)
    ]
    jobs[-1]["out"] = f"nested/clip{n - 1}.mp4"
    if broken:
        jobs.insert(1, {"kind": "render", "id": "broken", "appearance": "anne.png", "audio": "corrupt.wav"})
    return jobs


def results(out: Path, name: str = "results.jsonl") -> list[dict]:
    p = out / name
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def hidden_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.is_file()]


def mp4_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*.mp4") if not p.name.startswith(".")}


def check_valid(out: Path, recs: list[dict]) -> None:
    """Every done job's mp4 is complete: its frame count is the one recorded, with sound."""
    for r in recs:
        if r["status"] == "done":
            info = media.probe(out / r["out"])
            assert info.num_frames == r["frames"] > 0 and info.has_audio, r


@pytest.fixture
def patched_models(monkeypatch, synthetic_models):
    """In-process runs use the session's synthetic models (no checkpoint search, no reload)."""
    loads = []

    def get_models(checkpoint, allow_synthetic):
        loads.append(checkpoint)
        return synthetic_models

    monkeypatch.setattr(cli, "get_models", get_models)
    return loads


def batch(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["batch", *map(str, argv)])
    return rc, capsys.readouterr().err


# --------------------------------------------------------------------------- the manifest


def test_every_bad_line_is_reported_before_anything_renders(job_dir, tmp_path, capsys, monkeypatch):
    def never(*a, **kw):
        raise AssertionError("the networks were loaded for a manifest with bad lines")

    monkeypatch.setattr(cli, "get_models", never)
    good = {"kind": "render", "appearance": "anne.png", "audio": "speech.wav"}
    lines = [
        good,  # 1
        "",  # blank: skipped, not counted
        "{not json",  # 3
        {**good, "pose_strength": "strong", "fit": "stretch"},  # 4: two option errors, both named
        {**good, "audio": "missing.wav"},  # 5
        {**good, "checkpoint": "x.safetensors", "frames_dir": "pngs", "colour": 1},  # 6
        {"kind": "dub", "audio": "speech.wav"},  # 7: dub needs a video
        {**good, "no_blink": "yes"},  # 8
        {**good, "out": "../escape.mp4"},  # 9
        {**good, "id": "a b"},  # 10
        {"kind": "paint"},  # 11
        {**good, "seconds": -1},  # 12
        dict(good),  # 13: the same job as line 1 (same id and output)
    ]
    jobs = write_jobs(job_dir / "jobs.jsonl", lines)
    rc, err = batch(capsys, jobs, "--out", tmp_path / "out")
    assert rc == 2 and "11 bad line(s); nothing was rendered" in err, err
    for n, text in [
        (3, "not valid JSON"),
        (4, "pose_strength: 'strong' is not a number"),
        (4, "fit: invalid choice: 'stretch'"),
        (5, f"audio: {job_dir / 'missing.wav'} does not exist"),
        (6, "checkpoint: set for the whole batch; give --checkpoint"),
        (6, "frames_dir: not available in batches"),
        (6, "unknown field(s) colour; render jobs take"),
        (7, "missing field(s): video"),
        (8, "no_blink: 'yes' is not true or false"),
        (9, "out: '../escape.mp4' must stay inside the output folder"),
        (10, 'id: "a b" is not a name'),
        (11, "kind: give one of 'render', 'dub'"),
        (12, "seconds: -1 is out of range"),
        (13, "is also line 1's"),
    ]:
        assert re.search(rf"\n  line {n}: [^\n]*{re.escape(text)}", err), (n, text, err)
    assert not (tmp_path / "out").exists()


def test_manifest_fields_are_the_commands_options():
    """Field names, batch-wide options and input files come from the command parsers, not a list
    restated here: every input field is an option of a job kind, and the batch-wide ones are the
    batch command's engine and signing options."""
    options = {k: manifest._option_table(cli.job_parser(k)) for k in cli.JOB_KINDS}
    assert set(INPUT_FIELDS) <= set(options["render"]) | set(options["dub"])
    assert set(batch_level_fields()) == {
        "checkpoint",
        "synthetic",
        "device",
        "precision",
        "no_c2pa",
        "c2pa_cert",
        "c2pa_key",
    }


def test_paths_ids_and_outputs(job_dir, tmp_path):
    out = tmp_path / "out"
    sub = job_dir / "sub"
    sub.mkdir()
    (sub / "s.wav").write_bytes((job_dir / "speech.wav").read_bytes())
    lines = [
        {"kind": "render", "appearance": "anne.png", "audio": "sub/s.wav", "pose_strength": 0.5, "no_gaze": True},
        {"kind": "render", "appearance": str(job_dir / "anne.png"), "audio": "speech.wav", "out": "a/b.mp4"},
    ]
    m = read_manifest(write_jobs(job_dir / "jobs.jsonl", lines), out)
    assert not m.problems
    a, b = m.jobs
    assert a.args.audio == str(sub / "s.wav") and a.args.appearance == str(job_dir / "anne.png")
    assert a.args.pose_strength == 0.5 and a.args.no_gaze and not a.args.no_blink and a.args.fit == "loop"
    assert a.id.startswith("render-") and a.out == out / f"{a.id}.mp4" and a.args.out == str(a.out)
    assert b.out == out / "a" / "b.mp4" and (a.line, b.line) == (1, 2)
    again = read_manifest(write_jobs(job_dir / "again.jsonl", [lines[0]]), out)
    assert again.jobs[0].id == a.id  # the default id is the job's content: stable across runs and edits elsewhere
    lines[0]["pose_strength"] = 0.25
    assert read_manifest(write_jobs(job_dir / "edited.jsonl", [lines[0]]), out).jobs[0].id != a.id


# --------------------------------------------------------------------------- local runs


def test_local_batch_shards_failures_and_rerun(job_dir, tmp_path, capsys, patched_models):
    """Two clips and a broken job in two shards: together they render every good job once, the
    broken one is recorded as failed without stopping the others, and a run without a shard then
    renders nothing again."""
    out = tmp_path / "out"
    jobs = write_jobs(job_dir / "jobs.jsonl", render_jobs(2))  # clip0, broken, clip1
    want = {"clip0.mp4", "nested/clip1.mp4"}

    rc0, err0 = batch(capsys, jobs, "--out", out, "--shard", "0/2", "--no-c2pa")
    assert rc0 == 0, err0  # jobs 0 and 2 of the manifest
    r0 = results(out, "results.shard-0-of-2.jsonl")
    assert [(r["id"], r["status"]) for r in r0] == [("clip0", "done"), ("clip1", "done")]
    assert mp4_files(out) == want and not hidden_files(out)
    assert re.search(r"batch: 1/2 jobs \(1 done, 0 failed\), [\d.]+ jobs/min, ETA \d+ s", err0), err0
    check_valid(out, r0)
    assert all(r["seconds"] > 0 and r["worker"] and r["attempt"] == 1 for r in r0)

    rc1, err1 = batch(capsys, jobs, "--out", out, "--shard", "1/2", "--no-c2pa")
    assert rc1 == 1, err1  # job 1: the broken one
    r1 = results(out, "results.shard-1-of-2.jsonl")
    assert [(r["id"], r["line"], r["status"], r["frames"]) for r in r1] == [("broken", 2, "failed", None)]
    assert "corrupt.wav" in r1[0]["error"] and "job broken (line 2) failed: " in err1
    assert mp4_files(out) == want

    before = {p: (out / p).stat().st_mtime_ns for p in want}
    rc, err = batch(capsys, jobs, "--out", out, "--no-c2pa")
    assert rc == 1 and "2 already there, 1 to render" in err, err
    assert [(r["id"], r["status"]) for r in results(out)] == [
        ("clip0", "skipped"),
        ("clip1", "skipped"),
        ("broken", "failed"),
    ]
    assert {p: (out / p).stat().st_mtime_ns for p in want} == before  # not written again
    assert len(patched_models) == 3  # the networks were loaded once per run


def test_leftovers_of_a_killed_run_are_removed_only_for_its_jobs(job_dir, tmp_path):
    from pdfgc_core.batch.runner import clean_leftovers

    out = tmp_path / "out"
    m = read_manifest(write_jobs(job_dir / "jobs.jsonl", render_jobs(3, broken=False)), out)
    mine, other = m.jobs[0], m.jobs[1]
    (out / "nested").mkdir(parents=True)
    stale = [_temp_sibling(mine.out, "video"), _temp_sibling(mine.out, "audio").with_suffix(".wav")]
    stale.append(_temp_sibling(m.jobs[2].out, "mux"))
    busy = _temp_sibling(other.out, "video")  # another shard's job, being written right now
    for p in [*stale, busy]:
        p.write_bytes(b"x")
    (out / ".clip0.notes").write_bytes(b"kept")  # not a temporary file name
    assert clean_leftovers([mine, m.jobs[2]]) == 3
    assert not any(p.exists() for p in stale) and busy.exists() and (out / ".clip0.notes").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_killed_run_restarts_and_completes(job_dir, tmp_path, synthetic_checkpoint, sig):
    """A real ``batch`` process stopped while it writes its second clip (SIGKILL: nothing cleans
    up; SIGINT: Ctrl-C) and started again: every clip is there once, complete, and no temporary
    file is left."""
    out = tmp_path / "out"
    jobs = write_jobs(job_dir / "jobs.jsonl", render_jobs(3, broken=False))
    cmd = [sys.executable, "-m", "pdfgc_core", "batch", str(jobs), "--out", str(out)]
    cmd += ["--checkpoint", str(synthetic_checkpoint), "--synthetic", "--no-c2pa", "--device", "cpu"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal, even when pytest itself runs in the background (`pytest &` in a
        # shell without job control ignores SIGINT, and so would the child's Python)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + scaled(300)
    try:
        while not (results(out) and hidden_files(out)):  # the first clip is done, the second is being written
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the batch did not reach its second clip"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        rc = proc.wait(timeout=scaled(60))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    first = results(out)
    assert [r["status"] for r in first] == ["done"] and first[0]["id"] == "clip0"
    if sig == "SIGINT":
        assert rc == 130 and "run the same command again to go on" in err, err
        assert not hidden_files(out)  # Ctrl-C: the writer removed its own temporary files
    else:
        assert rc == -signal.SIGKILL and hidden_files(out)  # nobody cleaned up
    assert mp4_files(out) == {"clip0.mp4"}

    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=scaled(600))
    assert r.returncode == 0, r.stderr[-3000:]
    recs = results(out)
    assert [(x["id"], x["status"]) for x in recs] == [
        ("clip0", "done"),
        ("clip0", "skipped"),
        ("clip1", "done"),
        ("clip2", "done"),
    ]
    assert mp4_files(out) == {"clip0.mp4", "clip1.mp4", "nested/clip2.mp4"} and not hidden_files(out)
    check_valid(out, recs)


# --------------------------------------------------------------------------- Ray


def test_ray_is_optional(job_dir, tmp_path, capsys, monkeypatch):
    """Nothing imports Ray unless --ray is given; without Ray installed --ray says how to get it."""
    code = "import sys, pdfgc_core.cli, pdfgc_core.batch.ray_runner; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    jobs = write_jobs(job_dir / "jobs.jsonl", render_jobs(1, broken=False))
    rc, err = batch(capsys, jobs, "--out", tmp_path / "out", "--ray", "local")
    assert rc == 2 and "pip install 'pd-fgc[ray]'" in err, err
    rc, err = batch(capsys, jobs, "--out", tmp_path / "out", "--workers", "2")
    assert rc == 2 and "--workers is for Ray runs" in err, err


def test_worker_plan_follows_the_cluster():
    from pdfgc_core.batch.ray_runner import plan_workers
    from pdfgc_core.errors import PDFGCError

    assert plan_workers({"CPU": 16}, 100, None, None, None) == (16, 1.0, 0.0)  # one per CPU
    assert plan_workers({"CPU": 16}, 100, None, 4, None) == (4, 4.0, 0.0)
    assert plan_workers({"CPU": 64, "GPU": 8}, 100, None, None, None) == (8, 1.0, 1.0)  # one per GPU
    assert plan_workers({"CPU": 64, "GPU": 8}, 100, None, 2, 0.5) == (16, 2.0, 0.5)
    assert plan_workers({"CPU": 64, "GPU": 8}, 3, None, None, None) == (3, 1.0, 1.0)  # never more than jobs
    assert plan_workers({"CPU": 64, "GPU": 8}, 100, 5, None, None) == (5, 1.0, 1.0)
    with pytest.raises(PDFGCError, match="not enough for one worker"):
        plan_workers({"CPU": 2}, 10, None, 4, None)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'pd-fgc[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def dub_job(job_dir: Path) -> dict:
    from dub_media import face_clip, write_video

    frames, _ = face_clip(n=3, second=None, no_face=None)
    write_video(job_dir / "face.mp4", frames, 25)
    return {"kind": "dub", "id": "dubbed", "video": "face.mp4", "audio": "speech.wav", "smooth": 0}


def ray_worker_pids() -> list[int]:
    """Ray worker processes running a job now (Ray titles them ``ray::BatchWorker.run``)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::BatchWorker.run"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_ray_gives_the_local_outputs_and_survives_a_lost_worker(
    job_dir, tmp_path, capsys, synthetic_checkpoint, ray_cluster
):
    """The same manifest (renders, a dub, a broken job) locally and on a 2-CPU Ray cluster with
    two workers: byte-identical mp4 files (same torch threads: 1), and the same as the ``render``
    command's. Then a worker process is killed while it writes a clip: the job runs again on a
    fresh worker and every clip is complete."""
    import torch

    jobs = write_jobs(job_dir / "jobs.jsonl", [*render_jobs(3), dub_job(job_dir)])
    engine = ["--checkpoint", synthetic_checkpoint, "--synthetic", "--no-c2pa"]
    common = [*engine, "--worker-cpus", "1"]
    single = tmp_path / "single.mp4"
    threads = torch.get_num_threads()
    try:
        rc, err = batch(capsys, jobs, "--out", tmp_path / "local", *common)
        assert rc == 1, err
        argv = ["render", "--appearance", job_dir / "anne.png", "--audio", job_dir / "speech.wav"]
        assert cli.main([*map(str, argv + ["--mouth-strength", "0.75", "--out", single, *engine])]) == 0
    finally:
        torch.set_num_threads(threads)
    assert single.read_bytes() == (tmp_path / "local" / "clip1.mp4").read_bytes()  # the manifest line is the command
    rc, err = batch(capsys, jobs, "--out", tmp_path / "ray", "--ray", "local", *common)
    assert rc == 1 and "starting 2 Ray worker(s) (1 CPU, 0 GPU each)" in err, err
    local, on_ray = results(tmp_path / "local"), results(tmp_path / "ray")
    assert sorted((r["id"], r["status"]) for r in on_ray) == sorted((r["id"], r["status"]) for r in local)
    assert {r["status"] for r in local if r["id"] != "broken"} == {"done"}
    assert len({r["worker"] for r in on_ray}) == 2  # both workers took jobs
    names = mp4_files(tmp_path / "local")
    assert names == mp4_files(tmp_path / "ray") == {"clip0.mp4", "clip1.mp4", "nested/clip2.mp4", "dubbed.mp4"}
    for n in names:
        assert (tmp_path / "local" / n).read_bytes() == (tmp_path / "ray" / n).read_bytes(), n

    out = tmp_path / "lost"
    killed = []

    def kill_a_busy_worker():
        deadline = time.monotonic() + scaled(300)
        while time.monotonic() < deadline and not killed:
            pids = ray_worker_pids()
            if pids and hidden_files(out):  # a worker is writing a clip
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        rc, err = batch(capsys, jobs, "--out", out, "--ray", "local", *common)
    finally:
        killer.join()
    assert killed and rc == 1, err
    recs = results(out)
    assert sorted((r["id"], r["status"]) for r in recs) == sorted((r["id"], r["status"]) for r in local)
    assert max(r["attempt"] for r in recs) == 2 and "its Ray worker was lost" in err
    assert mp4_files(out) == names and not hidden_files(out)
    for n in names:
        assert (out / n).read_bytes() == (tmp_path / "local" / n).read_bytes(), n
