"""Media files: driving media in, mp4 with sound out: frame folders, single images and video files are
read as a stream of RGB uint8 frames; results are written as H.264 + AAC mp4 atomically.

Frames everywhere in this module are numpy ``uint8`` arrays ``[H, W, 3]`` in RGB order,
``0..255`` (a batch is ``[B, H, W, 3]``). Nothing here imports torch or ComfyUI; the ffmpeg
binary is the static one shipped by ``imageio-ffmpeg`` (``imageio_ffmpeg.get_ffmpeg_exe()``).

Decoding rules
  * Frame folders and single images are decoded like the official loader:
    ``cv2.imread(path, IMREAD_COLOR)`` then BGR -> RGB. That fixes what other files become:
    grayscale is replicated to three channels; an alpha channel is dropped (not composited,
    so transparent pixels show their stored colour); 16-bit samples keep their high byte
    (``v >> 8``); JPEG EXIF orientation is applied.
  * Folders list image files (png, jpg, jpeg, bmp, webp; any case) sorted by file name as a
    plain string, as ``sorted(os.listdir(folder))`` does (``"10.png" < "2.png"``). Hidden
    files (``.name``) are skipped.
  * Videos are decoded by ffmpeg to rgb24 and streamed one frame at a time: every decoded
    frame once (``-fps_mode passthrough``), or resampled to a constant rate with ``fps=``.

Writing rules
  * :class:`Mp4Writer` pipes raw frames into ffmpeg (libx264, ``crf``/``preset``/``pix_fmt``)
    writing a hidden temporary file beside ``path``; the audio, if any, is muxed in a second
    pass as AAC, padded with silence or cut so it lasts exactly as long as the video (the
    video decides the length; ``-shortest`` guards the rest). Only a clean finish renames the
    result onto ``path`` (``os.replace``); an exception, KeyboardInterrupt or :meth:`abort`
    kills ffmpeg and deletes every temporary file, leaving a pre-existing ``path`` untouched.
  * With chroma-subsampled pixel formats (``yuv420p``: even width and height;
    ``yuv422p``: even width) odd frame sizes are padded by one pixel on the right / bottom,
    repeating the last column / row. The written video is then 1 px larger than the frames.
  * Frames are converted by :func:`pdfgc_core.images.to_rgb`: float frames are taken as ``0..1``
    and become ``round(clip(x, 0, 1) * 255)`` (rounding, not truncation, maps ``k / 255`` back to
    ``k`` exactly); grey is replicated, alpha dropped, 16-bit samples keep their high byte.

Modules: :mod:`.ffmpeg` (the binary and its processes), :mod:`.atomic` (all-or-nothing files),
:mod:`.read` (frames in), :mod:`.write` (mp4 and PNG out), :mod:`.listing` (bounded folder listings and
non-blocking opens, used for every folder scan). Their public names are re-exported here.
"""

from .atomic import atomic_write, check_output_path
from .ffmpeg import ffmpeg_exe
from .listing import Listing, list_files, open_regular
from .read import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    MediaInfo,
    iter_frames,
    list_frame_files,
    probe,
    read_frames,
    seek_frames,
    video_meta,
)
from .write import Mp4Writer, write_frames_png

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Listing",
    "MediaInfo",
    "Mp4Writer",
    "atomic_write",
    "check_output_path",
    "ffmpeg_exe",
    "iter_frames",
    "list_files",
    "list_frame_files",
    "open_regular",
    "probe",
    "read_frames",
    "seek_frames",
    "video_meta",
    "write_frames_png",
]
