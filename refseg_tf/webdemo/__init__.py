"""The demo page of `refseg-serve`: upload an image, type a phrase, get the mask.

A small standard-library web application (`http.server`), one HTML page and one JSON endpoint:

- `GET /` the page (`static/index.html`, `static/app.js`, `static/style.css`);
- `GET /api/info` the model being served: `{"model", "source", "image_size", "explain",
  "max_pixels", "max_upload_bytes"}`;
- `POST /api/segment` with JSON `{"image": <base64 file bytes>, "expression": str,
  "explain": bool}` answers `{"width", "height", "foreground", "seconds", "mask_png",
  "overlay_png", "explain_jpg"}` (images base64; the mask is the PNG `refseg-predict` writes:
  8-bit grey, 0/255, the image's own size) or, for bad input, `{"error": message}` with status
  400 (empty phrase, malformed request), 413 (oversized upload or image) or 415 (not an image);
  a body that stops before its Content-Length is answered 408 after `read_timeout` seconds
  and its connection closed.

Why not Gradio, the field's usual demo toolkit: `pip install --dry-run gradio` (6.x) here would
add about 35 packages (FastAPI, uvicorn, pandas, huggingface_hub, ...) and replace the installed
Pillow 13 by 12.3, the decoder every image of the library goes through. The page needs one form
and one request, which the standard library serves without any of that.

The mask comes from the same code as `refseg-predict`: `refseg_tf.inference.Predictor`
(`read_image`, the model directory's scoring rule) for a model directory, or
`refseg_tf.export.SavedModelPredictor` (`image_bytes_for_serving`) for an exported SavedModel.
Per-word (RMI) or per-step (RRN) maps are `refseg-predict --explain`'s picture
(`refseg_tf.predict.explain_to_file`, `model.explain`).

Example:
    service = DemoService.from_model_dir("runs/rmi")
    server = make_server(service, host="127.0.0.1", port=8765)
    server.serve_forever()
"""

from __future__ import annotations

import base64
import binascii
import http.server
import io
import json
import os
import tempfile
import threading
import time
from importlib import resources

import numpy as np
from absl import logging

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Seconds a connection may sit idle or stall inside a request body before it is closed: a
# client that announces a Content-Length and sends less would otherwise hold its handler
# thread forever (issue 21).
DEFAULT_READ_TIMEOUT = 30.0
# base64 makes a file 4/3 larger; the JSON fields around it are small.
_REQUEST_OVERHEAD = 4096
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; "
        "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DemoError(ValueError):
    """Bad input from the page, with the HTTP status to answer (the message is shown as is)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mask_png(mask: np.ndarray) -> bytes:
    """The mask as `refseg-predict` writes it: 8-bit grey PNG, 255 on the object, 0 elsewhere."""
    return _encode_png(np.asarray(mask, bool).astype(np.uint8) * 255)


def check_image_header(image_bytes: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the image header, before any pixel is decoded.

    Raises:
        DemoError: 415 when Pillow cannot read the bytes as an image, 413 when the image has
            more than `max_pixels` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    if not image_bytes:
        raise DemoError("The uploaded file is empty: choose an image file.", 415)
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            width, height = image.size
            image_format = image.format
    except Image.DecompressionBombError:
        raise DemoError(
            f"The image is too large: this demo accepts at most {max_pixels:,} pixels "
            "(refseg-serve --max_pixels).", 413,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DemoError(
            f"The uploaded file is not an image this demo can read (JPEG, PNG, GIF, BMP, WebP, "
            f"TIFF, ...): {error}", 415,
        ) from None
    if width * height > max_pixels:
        raise DemoError(
            f"The image is too large: {width} x {height} = {width * height:,} pixels; this "
            f"demo accepts at most {max_pixels:,} (refseg-serve --max_pixels). Downscale it "
            "first.", 413,
        )
    logging.debug("Upload: %s image, %d x %d.", image_format, width, height)
    return width, height


def check_expression(expression) -> str:
    if expression is not None and not isinstance(expression, str):
        raise DemoError(f"`expression` must be a string (the phrase); received "
                        f"{type(expression).__name__} {expression!r:.80}.")
    if expression is None or not expression.strip():
        raise DemoError("Type an expression: the phrase is empty (e.g. \"the red circle\").")
    return expression.strip()


class KerasBackend:
    """A model directory written by `refseg-train`, through `refseg_tf.inference.Predictor`.

    Args:
        predictor: a `Predictor` (`Predictor.from_model_dir(model_dir)`).
        source: what to show as the model's origin (the model directory).
    """

    def __init__(self, predictor, source: str):
        self.predictor = predictor
        self.source = source
        self.model_name = str(predictor.config.model.get("name", type(predictor.model).__name__))
        self.image_size = predictor.image_size
        self.explains = predictor.model.has_explanation

    def mask(self, image_path: str, image: np.ndarray, expression: str) -> np.ndarray:
        return self.predictor.predict_mask(image, expression)

    def explain_picture(self, image: np.ndarray, expression: str, folder: str) -> bytes:
        from refseg_tf.inference import explain_to_file

        path = os.path.join(folder, "explain.jpg")
        path = explain_to_file(self.predictor, image, expression, path)
        with open(path, "rb") as f:
            return f.read()


class SavedModelBackend:
    """An exported SavedModel (`refseg-export`), through `refseg_tf.export.SavedModelPredictor`.

    A SavedModel has no per-step maps. Args: `saved_model_dir`, a version folder
    (`OUT/saved_model/1`).
    """

    explains = False

    def __init__(self, saved_model_dir: str):
        from refseg_tf.export import SavedModelPredictor

        self.predictor = SavedModelPredictor(saved_model_dir)
        self.source = saved_model_dir
        contract = _export_contract(saved_model_dir)
        self.model_name = str(contract.get("model", {}).get("name", "SavedModel"))
        self.image_size = contract.get("model", {}).get("image_size")

    def mask(self, image_path: str, image: np.ndarray, expression: str) -> np.ndarray:
        from refseg_tf.export import image_bytes_for_serving

        _, mask = self.predictor.predict(image_bytes_for_serving(image_path), expression)
        return mask

    def explain_picture(self, image, expression, folder):
        raise DemoError("A SavedModel has no per-word maps; serve the model directory instead.")


def _export_contract(saved_model_dir: str) -> dict:
    """`export.json` beside `saved_model/<version>` (written by `refseg-export`), if readable."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(saved_model_dir))),
                        "export.json")
    try:
        with open(path, encoding="utf-8") as f:
            contract = json.load(f)
        return contract if isinstance(contract, dict) else {}
    except (OSError, ValueError):
        return {}


class DemoService:
    """Checks a request, runs the backend (one request at a time) and renders the answer.

    Args:
        backend: a `KerasBackend` or `SavedModelBackend`.
        max_pixels: larger images are refused (413) before they are decoded.
        max_upload_bytes: larger files are refused (413) before the request body is read.
    """

    def __init__(self, backend, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES):
        for name, value in (("max_pixels", max_pixels), ("max_upload_bytes", max_upload_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
        self.backend = backend
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()

    @classmethod
    def from_model_dir(cls, model_dir: str, checkpoint: str = "auto", **options):
        from refseg_tf.inference import Predictor

        predictor = Predictor.from_model_dir(model_dir, checkpoint)
        return cls(KerasBackend(predictor, model_dir), **options)

    @classmethod
    def from_saved_model(cls, saved_model_dir: str, **options):
        return cls(SavedModelBackend(saved_model_dir), **options)

    @property
    def max_request_bytes(self) -> int:
        return (self.max_upload_bytes * 4) // 3 + 4 + _REQUEST_OVERHEAD

    def info(self) -> dict:
        return {
            "model": self.backend.model_name,
            "source": self.backend.source,
            "image_size": self.backend.image_size,
            "explain": bool(self.backend.explains),
            "max_pixels": self.max_pixels,
            "max_upload_bytes": self.max_upload_bytes,
        }

    def segment_request(self, payload) -> dict:
        """Answers a decoded `POST /api/segment` JSON body (see the module docstring)."""
        if not isinstance(payload, dict):
            raise DemoError("The request must be a JSON object {\"image\", \"expression\"}.")
        encoded = payload.get("image")
        if encoded is None:
            raise DemoError("Choose or drop an image first (the request has no `image`).")
        if not isinstance(encoded, str):
            raise DemoError(f"`image` must be the file's bytes in base64 (a string); received "
                            f"{type(encoded).__name__} {encoded!r:.80}.")
        try:
            image_bytes = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise DemoError("`image` must be the file's bytes in base64.") from None
        explain = payload.get("explain", False)
        if not isinstance(explain, bool):
            raise DemoError(f"`explain` must be true or false; received {explain!r}.")
        return self.segment(image_bytes, payload.get("expression"), explain=explain)

    def segment(self, image_bytes: bytes, expression: str, explain: bool = False) -> dict:
        """Mask, overlay and optionally per-word maps of one image and phrase."""
        from refseg_tf.inference import read_image
        from refseg_tf.visualize import render_overlay

        expression = check_expression(expression)
        if len(image_bytes) > self.max_upload_bytes:
            raise DemoError(self.upload_too_large_message(len(image_bytes)), 413)
        check_image_header(image_bytes, self.max_pixels)
        if explain and not self.backend.explains:
            raise DemoError(f"{self.backend.model_name} has no per-word maps.")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="refseg-serve-") as folder:
            image_path = os.path.join(folder, "upload")
            with open(image_path, "wb") as f:
                f.write(image_bytes)
            try:
                image = read_image(image_path)
            except ValueError as error:
                raise DemoError(f"The uploaded image cannot be decoded: {error}", 415) from None
            with self._lock:
                mask = np.asarray(self.backend.mask(image_path, image, expression), bool)
                explained = None
                if explain:
                    explained = self.backend.explain_picture(image, expression, folder)
        overlay = render_overlay(image, mask)  # the page prints the phrase above it
        height, width = mask.shape
        answer = {
            "expression": expression,
            "width": width,
            "height": height,
            "foreground": float(mask.mean()),
            "seconds": round(time.perf_counter() - start, 3),
            "mask_png": _base64_text(mask_png(mask)),
            "overlay_png": _base64_text(_encode_png(overlay)),
            "explain_jpg": None if explained is None else _base64_text(explained),
        }
        return answer

    def upload_too_large_message(self, size: int) -> str:
        return (f"The file is too large: {size / 2**20:.1f} MB; this demo accepts at most "
                f"{self.max_upload_bytes / 2**20:.1f} MB (refseg-serve --max_upload_mb).")


def _static_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class DemoRequestHandler(http.server.BaseHTTPRequestHandler):
    """Routes the page, `/api/info` and `/api/segment` to the server's `DemoService`."""

    server_version = "refseg-serve"
    protocol_version = "HTTP/1.1"

    @property
    def service(self) -> DemoService:
        return self.server.service

    def setup(self):
        self.timeout = self.server.read_timeout  # socket timeout of every read (StreamRequestHandler)
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        logging.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: dict):
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/api/info":
            return self._send_json(200, self.service.info())
        if path in STATIC_FILES:
            name, content_type = STATIC_FILES[path]
            return self._send(200, _static_file(name), content_type)
        return self._send_json(404, {"error": f"No page {path!r} here; open /."})

    do_HEAD = do_GET

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/api/segment":
            return self._send_json(404, {"error": f"No endpoint {self.path!r}; POST /api/segment."})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            return self._send_json(411, {"error": "The request needs a Content-Length."})
        if length > self.service.max_request_bytes:
            self.close_connection = True  # the body is not read
            message = self.service.upload_too_large_message(length * 3 // 4)
            return self._send_json(413, {"error": message})
        try:
            body = self.rfile.read(length)
        except TimeoutError:  # socket.timeout: the client stopped sending half-way
            body = None
        if body is None or len(body) < length:
            self.close_connection = True
            received = "nothing more" if body is None else f"{len(body):,} bytes"
            logging.warning("%s: request body incomplete (%s of %d bytes); connection closed.",
                            self.address_string(), received, length)
            return self._send_json(408 if body is None else 400, {
                "error": f"The request body stopped before its Content-Length ({length:,} "
                         f"bytes) arrived; send the whole file again."})
        try:
            payload = json.loads(body.decode("utf-8"))
            answer = self.service.segment_request(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._send_json(400, {"error": "The request body must be JSON."})
        except DemoError as error:
            return self._send_json(error.status, {"error": str(error)})
        except Exception as error:  # the page shows it; the traceback goes to the log
            logging.exception("Segmentation failed")
            return self._send_json(500, {"error": f"The model failed on this input: {error}"})
        return self._send_json(200, answer)


class DemoServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server holding the `DemoService` its handlers use."""

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of page loads and segment requests
    # (20 at once in tests/test_bad_inputs.py) must queue, not overflow it.
    request_queue_size = 128

    def __init__(self, address, service: DemoService, read_timeout: float = DEFAULT_READ_TIMEOUT):
        if isinstance(read_timeout, bool) or not isinstance(read_timeout, (int, float)) or not (
                read_timeout > 0):
            raise ValueError(f"`read_timeout` must be a positive number of seconds; received "
                             f"{read_timeout!r}.")
        self.service = service
        self.read_timeout = float(read_timeout)
        super().__init__(address, DemoRequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def make_server(
    service: DemoService, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> DemoServer:
    """Binds the demo to (host, port); port 0 picks a free one (see `server.url`).

    `read_timeout`: seconds a connection may stall (idle, or inside a request body) before it
    is answered 408 and closed, so a truncated upload does not hold a handler thread.

    The page has no authentication: keep the default 127.0.0.1 (this machine only) unless
    everyone who can reach the address may use the model.
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"`port` must be an integer in [0, 65535]; received {port!r}.")
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.warning("refseg-serve binds to %s: anyone who can reach it can use the model.",
                        host)
    return DemoServer((host, port), service, read_timeout)
