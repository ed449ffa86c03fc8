"""Error types raised on purpose by pdfgc_core.

Every failure caused by a user's input (a file, an image batch, a waveform, a factor
sequence, a setting) is reported as a subclass of :class:`PDFGCError` whose message names
the input, says what was wrong and what to do. Anything else escaping the library is a bug.
"""


class PDFGCError(Exception):
    """Base class of every error pdfgc_core raises deliberately."""


class CheckpointError(PDFGCError):
    """A checkpoint file is missing, unreadable, unsafe, or not a PD-FGC checkpoint."""


class InputError(PDFGCError, ValueError):
    """An image, audio, driver or factor input cannot be used as given."""


class MediaError(InputError):
    """A media file (image, audio, video) cannot be read or written."""


class FaceNotFoundError(InputError):
    """No usable face was found where one is required."""
