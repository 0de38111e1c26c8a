"""The image input of the app: hands the uploaded file itself to `demo.preprocess.load_image`.

Gradio's own `gr.Image` opens and converts every upload with Pillow before our code runs. That
bypasses the one preprocessing function the model was trained with: its decompression-bomb guard
(Pillow's is 3x looser), 16-bit scaling (Pillow clips), the first frame of a GIF (Gradio passed
palette indices), and its error messages (Gradio answered a bad file with a generic "the upstream
Gradio app has raised an exception"). This component looks the same in the browser and in the API,
but its value is the uploaded file's path (or bytes), decoded later by `load_image`.
"""
from __future__ import annotations

import base64
import binascii

import gradio as gr
from gradio.data_classes import ImageData

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # uploaded files (Gradio's max_file_size) and inline data: URLs alike


class ImageUpload(gr.Image):
    """`gr.Image` whose handler receives the upload undecoded: a file path, or bytes for a data: URL.

    Create it with `type="filepath", image_mode=None` (what the API documents). It keeps `gr.Image`'s
    constructor: Gradio reads the page's settings off that signature, so a wrapper would lose them.
    """

    is_template = True  # the browser renders it with gr.Image's front end

    def preprocess(self, payload: ImageData | None) -> str | bytes | None:
        """The file as uploaded; Gradio has already checked that the path is one of its uploads."""
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return _data_url_bytes(payload.url)
        if payload.path is None:
            raise gr.Error("the upload has no file; upload the image again")
        return payload.path


def _data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 `data:` URL (what a webcam or clipboard may send instead of a file).

    Gradio's max_file_size applies to uploaded files only; without this check an inline image
    would be decoded whatever its size.
    """
    encoded = url.partition(",")[2]
    if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES:
        raise gr.Error(f"the inline image is over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit; "
                       "send a smaller image")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise gr.Error("the image data sent by the browser is not valid base64; upload the file instead") from exc
