"""Builds example_workflows/*.json (the UI format the ComfyUI frontend saves) from the API-format
graphs below, which are the one source of truth for the shipped workflows.

    python scripts/build_workflows.py            # rewrite example_workflows/*.json and their .jpg screenshots
    python scripts/build_workflows.py --check    # exit 1 if a shipped file differs from a fresh build

The conversion runs in the real frontend (headless Chromium against a ComfyUI 0.3.75 started by
tests/comfy_harness): ``app.loadApiJson`` builds the graph, the nodes are laid out in the
columns given here, a Note with instructions is added, and ``app.graph.serialize()`` is what gets
written, so widget order, upload widgets and link records are exactly what the frontend expects.
Before writing, the result is converted back with :func:`ui_to_api` and by the frontend's own
``graphToPrompt``; both must give the source graph again.

Inputs the workflows name (images, speech, driving videos) are made by
:func:`write_workflow_inputs` from samples/, for the tests and for trying the workflows.
Importable without ComfyUI or a browser (GRAPHS, ui_to_api, write_workflow_inputs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pdfgc_core.factors import DEFAULT_FPS, OFFICIAL_GAINS  # noqa: E402

SAMPLES = REPO / "samples"
OUT_DIR = REPO / "example_workflows"

CHECKPOINT = "checkpoints.tar"  # what users have after downloading the official checkpoints
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # frontend-only, never in a prompt

# Files the workflows load from ComfyUI/input/: the pack's sample inputs (nodes/_samples.py), which
# ComfyUI gets at start-up, so every template runs as shipped.
from nodes._samples import SAMPLE_INPUTS, install_sample_inputs  # noqa: E402

INPUT_FILES = SAMPLE_INPUTS
VIDEO_FPS = int(DEFAULT_FPS)

SETUP = (
    "Checkpoints: put the official PD-FGC checkpoints.tar (or a folder with the four .pth files, or a "
    ".safetensors from `python -m pdfgc_core convert`) in ComfyUI/models/pdfgc/ and pick it in PD-FGC Load "
    "Model. Faces: pre-aligned 224x224 crops like the samples, or run your pictures and videos through "
    "PD-FGC Align Faces first."
)


def _model():
    return {
        "class_type": "PDFGC_LoadModel",
        "inputs": {"checkpoint": CHECKPOINT, "precision": "auto", "generator_impl": "fast"},
    }


def _combine(**factors):
    inputs = {
        "length": 0,
        "fit": "loop",
        "match_fps": True,
        "post_process": True,
        **{f"{kind}_gain": gain for kind, gain in OFFICIAL_GAINS.items()},
        "blink": True,
        "gaze": True,
    }
    inputs.update(factors)
    return {"class_type": "PDFGC_CombineMotion", "inputs": inputs}


def _driver(cls, video_node, model="1", fps=None):
    """A driver encoder on a video's frames (its fps wired from the video), or on pictures at ``fps``."""
    return {
        "class_type": cls,
        "inputs": {
            "model": [model, 0],
            "images": [video_node, 0],
            "crop": "official",
            "skip_first": 0,
            "fps": [video_node, 2] if fps is None else fps,
        },
    }


def _generate(appearance, motion):
    return {
        "class_type": "PDFGC_Generate",
        "inputs": {
            "model": ["1", 0],
            "appearance": [appearance, 0],
            "motion": [motion, 0],
            "batch_size": 8,
            "noise": -1,
            "watermark": True,
        },
    }


def _lips(audio):
    return {
        "class_type": "PDFGC_EncodeLips",
        "inputs": {
            "model": ["1", 0],
            "audio": [audio, 0],
            "fps": DEFAULT_FPS,
            "quality": "official",
            "max_seconds": 0.0,
        },
    }


def _save_video(video, prefix):
    return {
        "class_type": "SaveVideo",
        "inputs": {"video": [video, 0], "filename_prefix": prefix, "format": "auto", "codec": "auto"},
    }


# name -> {"graph": API-format prompt, "columns": [[node ids top to bottom], ...], "note": text}
GRAPHS: dict[str, dict] = {
    "full_control": {
        "note": (
            "PD-FGC full control: lips from speech, head pose, eyes and expression each from its own driving "
            "video. Any encoder can be removed (that factor becomes neutral) or replaced by a factor node "
            "(Strength, Mix, Hold Frame, Load Factor ...). The clip is as long as the speech; shorter driving "
            "videos loop (Combine Motion: fit).\n\n" + SETUP
        ),
        "columns": [
            ["1", "2", "3"],
            ["4", "6", "8"],
            ["5", "7", "9"],
            ["10", "11", "12", "13", "14"],
            ["15", "16"],
            ["17", "18"],
        ],
        "graph": {
            "1": _model(),
            "2": {"class_type": "LoadImage", "inputs": {"image": "pdfgc_anne.png"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": "pdfgc_speech.mp3"}},
            "4": {"class_type": "LoadVideo", "inputs": {"file": "pdfgc_pose.mp4"}, "_meta": {"title": "Pose video"}},
            "5": {"class_type": "GetVideoComponents", "inputs": {"video": ["4", 0]}},
            "6": {"class_type": "LoadVideo", "inputs": {"file": "pdfgc_eye.mp4"}, "_meta": {"title": "Eye video"}},
            "7": {"class_type": "GetVideoComponents", "inputs": {"video": ["6", 0]}},
            "8": {
                "class_type": "LoadVideo",
                "inputs": {"file": "pdfgc_expression.mp4"},
                "_meta": {"title": "Expression video"},
            },
            "9": {"class_type": "GetVideoComponents", "inputs": {"video": ["8", 0]}},
            "10": {
                "class_type": "PDFGC_EncodeAppearance",
                "inputs": {"model": ["1", 0], "image": ["2", 0], "crop": "official"},
            },
            "11": _lips("3"),
            "12": _driver("PDFGC_EncodePose", "5"),
            "13": _driver("PDFGC_EncodeEyes", "7"),
            "14": _driver("PDFGC_EncodeExpression", "9"),
            "15": _combine(mouth=["11", 0], pose=["12", 0], eye=["13", 0], expression=["14", 0]),
            "16": _generate("10", "15"),
            "17": {"class_type": "CreateVideo", "inputs": {"images": ["16", 0], "fps": ["11", 2], "audio": ["11", 3]}},
            "18": _save_video("17", "pdfgc/full_control"),
        },
    },
    "lipsync_only": {
        "note": (
            "PD-FGC lip-sync: the portrait speaks the audio; head pose, eyes and expression stay neutral "
            "(Combine Motion treats every factor that is not connected as zero).\n\n" + SETUP
        ),
        "columns": [["1", "2", "3"], ["4", "5"], ["6", "7"], ["8", "9"]],
        "graph": {
            "1": _model(),
            "2": {"class_type": "LoadImage", "inputs": {"image": "pdfgc_anne.png"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": "pdfgc_speech.mp3"}},
            "4": {
                "class_type": "PDFGC_EncodeAppearance",
                "inputs": {"model": ["1", 0], "image": ["2", 0], "crop": "official"},
            },
            "5": _lips("3"),
            "6": _combine(mouth=["5", 0]),
            "7": _generate("4", "6"),
            "8": {"class_type": "CreateVideo", "inputs": {"images": ["7", 0], "fps": ["5", 2], "audio": ["5", 3]}},
            "9": _save_video("8", "pdfgc/lipsync"),
        },
    },
    "audio_only_alive": {
        "note": (
            "PD-FGC alive from audio alone: the portrait speaks the audio, blinks naturally (Idle Blinks: random "
            "times at 17 per minute, the blink's shape from the bundled sample eye video) and moves its head "
            "gently (Head Sway: slow motion along the directions of the bundled sample pose video, livelier "
            "while the speech is loud). No driving video. Change rate, amplitude, speed or seed; connect Pose "
            "from Angles to Head Sway's base to set the head's direction.\n\n" + SETUP
        ),
        "columns": [["1", "2", "3"], ["4", "5"], ["6", "7"], ["8", "9"], ["10", "11"]],
        "graph": {
            "1": _model(),
            "2": {"class_type": "LoadImage", "inputs": {"image": "pdfgc_anne.png"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": "pdfgc_speech.mp3"}},
            "4": {
                "class_type": "PDFGC_EncodeAppearance",
                "inputs": {"model": ["1", 0], "image": ["2", 0], "crop": "official"},
            },
            "5": _lips("3"),
            "6": {
                "class_type": "PDFGC_IdleBlinks",
                "inputs": {
                    "model": ["1", 0],
                    "length": ["5", 1],
                    "fps": ["5", 2],
                    "rate": 17.0,
                    "seed": 0,
                    "duration": 1.0,
                    "depth": 1.0,
                },
            },
            "7": {
                "class_type": "PDFGC_HeadSway",
                "inputs": {
                    "model": ["1", 0],
                    "length": ["5", 1],
                    "fps": ["5", 2],
                    "amplitude": 1.0,
                    "speed": 0.2,
                    "seed": 0,
                    "center": "zero",
                    "liveliness": 1.0,
                    "audio": ["3", 0],
                },
            },
            "8": _combine(mouth=["5", 0], eye=["6", 0], pose=["7", 0]),
            "9": _generate("4", "8"),
            "10": {"class_type": "CreateVideo", "inputs": {"images": ["9", 0], "fps": ["5", 2], "audio": ["5", 3]}},
            "11": _save_video("10", "pdfgc/audio_only_alive"),
        },
    },
    "photo_to_talking_head": {
        "note": (
            "PD-FGC from an ordinary photo: Align Faces finds the face and crops it to PD-FGC's framing, the "
            "crop speaks the audio with its head moving like the pose video, and Paste Back puts the animated "
            "face back into the full photo (soft-edged mask). Use any photo with a visible face.\n\n" + SETUP
        ),
        "columns": [["1", "2", "3", "4"], ["5", "6", "7"], ["8", "9", "10"], ["11", "12"], ["13", "14"]],
        "graph": {
            "1": _model(),
            "2": {"class_type": "LoadImage", "inputs": {"image": "pdfgc_photo.jpg"}, "_meta": {"title": "Photo"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": "pdfgc_speech.mp3"}},
            "4": {"class_type": "LoadVideo", "inputs": {"file": "pdfgc_pose.mp4"}, "_meta": {"title": "Pose video"}},
            "5": {
                "class_type": "PDFGC_AlignFaces",
                "inputs": {
                    "image": ["2", 0],
                    "backend": "dlib",
                    "mode": "image",
                    "face_index": -1,
                    "min_eye_distance": 20.0,
                    "border": "replicate",
                },
            },
            "6": {"class_type": "GetVideoComponents", "inputs": {"video": ["4", 0]}},
            "7": _lips("3"),
            "8": {
                "class_type": "PDFGC_EncodeAppearance",
                "inputs": {"model": ["1", 0], "image": ["5", 0], "crop": "official"},
            },
            "9": _driver("PDFGC_EncodePose", "6"),
            "10": _combine(mouth=["7", 0], pose=["9", 0]),
            "11": _generate("8", "10"),
            "12": {
                "class_type": "PDFGC_PasteBack",
                "inputs": {
                    "original": ["2", 0],
                    "generated": ["11", 0],
                    "crop_info": ["5", 1],
                    "feather": 16.0,
                    "view": "generator",
                },
            },
            "13": {"class_type": "CreateVideo", "inputs": {"images": ["12", 0], "fps": ["7", 2], "audio": ["7", 3]}},
            "14": _save_video("13", "pdfgc/photo"),
        },
    },
    "dub_video": {
        "note": (
            "PD-FGC dubbing: a video of a talking person gets new speech. Head pose, eyes and expression come "
            "from the video itself, only the lips follow the audio, and the face is pasted back below the eyes "
            "(mask: lower). Frames without the face pass through unchanged. For long videos use PD-FGC Dub "
            "Video File (streams from the input folder to the output folder).\n\n" + SETUP
        ),
        "columns": [["1", "2", "3"], ["4", "5"], ["6", "7"]],
        "graph": {
            "1": _model(),
            "2": {"class_type": "LoadVideo", "inputs": {"file": "pdfgc_talk.mp4"}, "_meta": {"title": "Video to dub"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": "pdfgc_speech.mp3"}, "_meta": {"title": "New speech"}},
            "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["2", 0]}},
            "5": {
                "class_type": "PDFGC_DubVideo",
                "inputs": {
                    "model": ["1", 0],
                    "images": ["4", 0],
                    "audio": ["3", 0],
                    "fps": ["4", 2],
                    "face": "largest",
                    "mask": "lower",
                    "feather": 12.0,
                    "color_match": True,
                    "length": "video",
                    "reference_frame": -1,
                    "smooth_seconds": 0.1,
                    "batch_size": 8,
                    "watermark": True,
                },
            },
            "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": ["5", 3], "audio": ["5", 1]}},
            "7": _save_video("6", "pdfgc/dub"),
        },
    },
    "expression_interpolation": {
        "note": (
            "PD-FGC expression interpolation: the portrait moves smoothly from its own expression (a) to the "
            "expression of a reference picture (b) over 50 frames (Mix Factors, ramp). Change length, curve, "
            "start / end, or connect speech (Encode Lips -> Combine Motion mouth) to make it talk "
            "meanwhile.\n\n" + SETUP
        ),
        "columns": [["1", "2", "3"], ["4", "5", "6"], ["7", "8"], ["9", "10"], ["11"]],
        "graph": {
            "1": _model(),
            "2": {"class_type": "LoadImage", "inputs": {"image": "pdfgc_anne.png"}, "_meta": {"title": "Portrait"}},
            "3": {
                "class_type": "LoadImage",
                "inputs": {"image": "pdfgc_expression.jpg"},
                "_meta": {"title": "Expression reference"},
            },
            "4": {
                "class_type": "PDFGC_EncodeAppearance",
                "inputs": {"model": ["1", 0], "image": ["2", 0], "crop": "official"},
            },
            "5": {
                **_driver("PDFGC_EncodeExpression", "2", fps=DEFAULT_FPS),
                "_meta": {"title": "Expression a (portrait)"},
            },
            "6": {
                **_driver("PDFGC_EncodeExpression", "3", fps=DEFAULT_FPS),
                "_meta": {"title": "Expression b (reference)"},
            },
            "7": {
                "class_type": "PDFGC_MixFactors",
                "inputs": {
                    "a": ["5", 0],
                    "b": ["6", 0],
                    "mode": "ramp",
                    "t": 0.5,
                    "start": 0.0,
                    "end": 1.0,
                    "curve": "smoothstep",
                    "length": 50,
                    "fit": "hold",
                },
            },
            "8": _combine(expression=["7", 0]),
            "9": _generate("4", "8"),
            "10": {"class_type": "CreateVideo", "inputs": {"images": ["9", 0], "fps": DEFAULT_FPS}},
            "11": _save_video("10", "pdfgc/expression_interpolation"),
        },
    },
}


# ---------------------------------------------------------------------------------------------
# UI format -> API format (what the frontend's graphToPrompt does, for the workflows built here)


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """API-format prompt of a UI-format workflow: links become ``[source id, output index]``, widget
    values are matched to the inputs by the node's widget slots (``inputs[i].widget.name``, in
    ``widgets_values`` order); values of frontend-only widgets (upload buttons, previews) are
    dropped, as are frontend-only nodes (Note, ...) and muted / bypassed nodes (mode 2 / 4).
    Titles that differ from the node's display name go to ``_meta``."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in VIRTUAL_NODES or node.get("mode", 0) in (2, 4):
            continue
        if kind not in object_info:
            raise KeyError(f"node {node['id']}: unknown node type {kind!r}")
        info = object_info[kind]
        order = info.get("input_order", {})
        known = [*order.get("required", []), *order.get("optional", [])]
        widgets = [slot["widget"]["name"] for slot in node.get("inputs", []) if slot.get("widget")]
        values = dict(zip(widgets, node.get("widgets_values") or []))
        inputs = {}
        for name in known:
            slot = next((s for s in node.get("inputs", []) if s["name"] == name), None)
            if slot is not None and slot.get("link") is not None:
                _, src, src_slot, *_ = links[slot["link"]]
                inputs[name] = [str(src), src_slot]
            elif name in values:
                inputs[name] = values[name]
        entry = {"class_type": kind, "inputs": inputs}
        if node.get("title") and node["title"] != info.get("display_name", kind):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(node["id"])] = entry
    return prompt


def normalise(prompt: dict) -> dict:
    """A prompt for comparison: numbers as floats, no _meta."""

    def value(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v
        return float(v)

    return {
        k: {"class_type": n["class_type"], "inputs": {i: value(v) for i, v in n["inputs"].items()}}
        for k, n in prompt.items()
    }


def api_prompt(name: str, **overrides) -> dict:
    """A deep copy of GRAPHS[name]["graph"]; ``overrides`` maps "node id.input" to a new value."""
    prompt = json.loads(json.dumps(GRAPHS[name]["graph"]))
    for key, v in overrides.items():
        node, _, inp = key.partition(".")
        prompt[node]["inputs"][inp] = v
    return prompt


# ---------------------------------------------------------------------------------------------
# Inputs


def write_workflow_inputs(dest: str | Path, names=None, max_video_frames: int | None = None) -> list[str]:
    """Writes the files the workflows load (INPUT_FILES, or only ``names``) into ``dest`` (e.g.
    ComfyUI/input/), as ComfyUI's start-up does (nodes/_samples.py); existing files are kept.
    ``max_video_frames`` shortens the videos (quicker tests). Returns the names."""
    dest = Path(dest)
    chosen = [n for n in INPUT_FILES if names is None or n in names]
    if max_video_frames is None:
        install_sample_inputs(dest)
        return chosen
    from pdfgc_core import media

    dest.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        src, target = SAMPLES / INPUT_FILES[name], dest / name
        if target.exists():
            continue
        if src.suffix.lower() in media.VIDEO_EXTENSIONS:
            with media.Mp4Writer(target, VIDEO_FPS, crf=12, preset="veryfast") as w:
                w.write(media.read_frames(src, stop=max_video_frames))
        else:
            shutil.copyfile(src, target)
    return chosen


def workflow_inputs() -> dict[str, list[str]]:
    """{workflow name: input file names it loads}."""
    out = {}
    for name, spec in GRAPHS.items():
        vals = {v for node in spec["graph"].values() for v in node["inputs"].values() if isinstance(v, str)}
        out[name] = sorted(vals & set(INPUT_FILES))
    return out


# ---------------------------------------------------------------------------------------------
# Building in the frontend

BUILD_JS = """
const [apiText, columnsText, note, done] = [arguments[0], arguments[1], arguments[2], arguments[arguments.length - 1]];
(async () => {
  try {
    const api = JSON.parse(apiText), columns = JSON.parse(columnsText);
    await window.app.loadApiJson(api, "build");
    const graph = window.app.graph;
    const missing = graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);
    const noteNode = LiteGraph.createNode("Note");
    noteNode.widgets[0].value = note;
    noteNode.size = [330, 260];
    graph.add(noteNode);
    const GAP = 40, COL = 60;
    const ROOM = {LoadImage: 320, LoadVideo: 300};  // previews appear once the file is there
    for (const n of graph.nodes) {
      if (ROOM[n.type]) n.size = [Math.max(n.size[0], 300), Math.max(n.size[1], ROOM[n.type])];
    }
    let x = 20, bottom = 0;
    columns.forEach((ids, c) => {
      const nodes = ids.map(id => graph.getNodeById(+id));
      if (c === 0) nodes.unshift(noteNode);
      let y = 40, width = 0;
      for (const n of nodes) {
        n.pos = [x, y];
        y += n.size[1] + GAP + LiteGraph.NODE_TITLE_HEIGHT;
        width = Math.max(width, n.size[0]);
      }
      bottom = Math.max(bottom, y);
      x += width + COL;
    });
    const scale = Math.min(1, 1800 / x, 950 / bottom);
    graph.extra.ds = {scale: Math.round(scale * 100) / 100, offset: [20, 40]};
    graph.setDirtyCanvas(true, true);
    const serialized = graph.serialize();
    const prompt = (await window.app.graphToPrompt()).output;
    done({missing: missing, workflow: serialized, prompt: prompt});
  } catch (e) {
    done({error: String((e && e.stack) || e)});
  }
})();
"""


def _strip_nulls(value):
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _rounded(value):
    """Positions and sizes to whole pixels (stable files)."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


SHOW_JS = """
const [text, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  try {
    await window.app.loadGraphData(JSON.parse(text));
    await new Promise(r => setTimeout(r, 2500));  // previews of the loaded pictures and videos
    // the start-up templates browser of a fresh user profile covers the canvas: not part of the picture
    document.querySelectorAll(".p-dialog-mask").forEach(e => e.remove());
    // fit the view to the nodes (screen = (position + offset) * scale), as the template opens
    const g = window.app.graph, c = window.app.canvas, T = LiteGraph.NODE_TITLE_HEIGHT;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of g._nodes) {
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - T);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const rect = c.canvas.getBoundingClientRect(), margin = 30;
    const scale = Math.min(1, (rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0));
    c.ds.scale = scale;
    c.ds.offset = [-x0 + margin / scale, -y0 + margin / scale];
    window.app.graph.setDirtyCanvas(true, true);
    await new Promise(r => setTimeout(r, 300));
    done({ok: true});
  } catch (e) {
    done({error: String((e && e.stack) || e)});
  }
})();
"""
THUMBNAIL_WIDTH = 960


def screenshot(driver, workflow: dict) -> bytes:
    """JPEG of ``workflow`` as the frontend shows it when opened (its saved, fitted view): the
    template's thumbnail, ``example_workflows/<name>.jpg``."""
    import cv2
    import numpy as np

    res = driver.execute_async_script(SHOW_JS, json.dumps(workflow))
    if "error" in res:
        raise RuntimeError(f"the frontend could not show the workflow: {res['error']}")
    png = np.frombuffer(driver.get_screenshot_as_png(), np.uint8)
    img = cv2.imdecode(png, cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    img = cv2.resize(img, (THUMBNAIL_WIDTH, round(h * THUMBNAIL_WIDTH / w)), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("could not encode the screenshot")
    return jpg.tobytes()


def build_all(log=print, screenshots: dict | None = None) -> dict[str, dict]:
    """{name: UI-format workflow} built in the frontend of a temporary ComfyUI server (whose input
    folder holds the sample inputs, as users' does). With a ``screenshots`` dict, each built
    workflow is also opened and its screenshot (JPEG bytes) stored there by name."""
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from comfy_harness import ComfyServer, ensure_comfyui, open_frontend

    with tempfile.TemporaryDirectory(prefix="pdfgc-build-") as tmp:
        server = ComfyServer(ensure_comfyui(), Path(tmp))
        with server:
            object_info = server.object_info()
            with open_frontend(server.url) as driver:
                built = {}
                for name, spec in GRAPHS.items():
                    res = driver.execute_async_script(
                        BUILD_JS, json.dumps(spec["graph"]), json.dumps(spec["columns"]), spec["note"]
                    )
                    if "error" in res:
                        raise RuntimeError(f"{name}: the frontend failed: {res['error']}")
                    if res["missing"]:
                        raise RuntimeError(f"{name}: node types unknown to the frontend: {res['missing']}")
                    workflow = _rounded(_strip_nulls(res["workflow"]))
                    source = normalise(spec["graph"])
                    for how, prompt in (
                        ("graphToPrompt", res["prompt"]),
                        ("ui_to_api", ui_to_api(workflow, object_info)),
                    ):
                        got = normalise(prompt)
                        for node in got.values():  # frontend-only widgets the frontend puts in prompts
                            node["inputs"].pop("audioUI", None)
                        if got != source:
                            raise RuntimeError(
                                f"{name}: {how} of the built workflow differs from the source graph:\n"
                                f"{json.dumps(got, indent=1)}\nsource:\n{json.dumps(source, indent=1)}"
                            )
                    built[name] = workflow
                    log(f"built {name}: {len(workflow['nodes'])} nodes, {len(workflow['links'])} links")
                if screenshots is not None:
                    driver.set_window_size(1920, 1080)
                    for name, workflow in built.items():
                        screenshots[name] = screenshot(driver, workflow)
                return built


def dumps(workflow: dict) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    ap.add_argument(
        "--no-thumbnails", action="store_true", help="do not rewrite the example_workflows/*.jpg screenshots"
    )
    args = ap.parse_args(argv)
    shots = None if args.check or args.no_thumbnails else {}
    built = build_all(screenshots=shots)
    stale = []
    for name, workflow in built.items():
        path = OUT_DIR / f"{name}.json"
        text = dumps(workflow)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            OUT_DIR.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
            if shots and name in shots:
                path.with_suffix(".jpg").write_bytes(shots[name])
                print(f"wrote {path.with_suffix('.jpg').relative_to(REPO)}")
    if stale:
        print(f"out of date (run python scripts/build_workflows.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
