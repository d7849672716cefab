"""Bad input costs nothing: every bad job, driven through `starter.main` against the real
Temporal dev server and S3 server with in-process workers, is refused with an error that
names the field and the reason, before any workflow starts (exit status 2), with nothing
left in the bucket and no window rendered.

One table, one test. The terminal summary says how many bad inputs were tried and refused.
"""

from __future__ import annotations

import asyncio
import base64
import random
import threading
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from longtalk.backends.preview import PreviewBackend
from longtalk.inputs import existing_status
from tests.helpers import CountingPreview, run_starter, summary_line, write_job
from tests.media import EXAMPLES, cut_audio, make_video, transcode
from worker import build_workers

pytestmark = pytest.mark.timeout(300)

RESULTS: list[tuple[str, bool]] = []  # (case, refused as expected)


# ---- the workers: this module's own, on task queues of its own ----------------------------
# (so they never collide with the session's workers of tests/test_pipeline.py, whatever order
# the modules run in, and their render counter is the whole story)

@pytest.fixture(scope="module")
def own_settings(settings):
    tag = uuid.uuid4().hex[:6]
    return replace(settings, render_queue=f"render-bad-{tag}", gpu_queue=f"gpu-bad-{tag}")


@pytest.fixture(scope="module")
def backend():
    return CountingPreview()


@pytest.fixture(scope="module")
def render_calls():
    """Every render_window of any PreviewBackend in this process, whoever's worker ran it."""
    calls: list[tuple[str, int]] = []
    original = PreviewBackend.render_window

    async def counting(self, job, progress=None):
        calls.append((job.render_id, job.index))
        return await original(self, job, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PreviewBackend, "render_window", counting)
        yield calls


@pytest.fixture(scope="module")
async def workers(temporal_client, own_settings, store, backend, render_calls):
    ws = build_workers(temporal_client, own_settings, store, backends={"preview": backend},
                       identity="bad-inputs")
    tasks = [asyncio.create_task(w.run()) for w in ws]
    yield ws
    for w in ws:
        await w.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    summary_line(request, "bad-inputs-summary", lambda: (
        f"test_bad_inputs: {len(RESULTS)} bad inputs tried, {sum(1 for _, ok in RESULTS if ok)} refused "
        f"before the workflow started (exit 2, field and reason named, bucket empty, nothing rendered)"))


# ---- the bad media, made once --------------------------------------------------------------

def _damage(data: bytes, start: float, length: float, seed: int = 7) -> bytes:
    """Random bytes over [start, start + length) of the file (fractions of its size)."""
    out = bytearray(data)
    rnd = random.Random(seed)
    first = int(len(data) * start)
    for i in range(first, first + max(64, int(len(data) * length))):
        out[i] = rnd.randrange(256)
    return bytes(out)


def _image(path: Path, width: int, height: int) -> Path:
    y, x = np.mgrid[0:height, 0:width]
    img = np.dstack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                     np.full_like(x, 128)]).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return path


def _wav(path: Path, samples: int, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        tone = (np.sin(np.arange(samples) * 2 * np.pi * 220 / rate) * 8000).astype("<i2")
        w.writeframes(tone.tobytes())
    return path


@pytest.fixture(scope="module")
def m(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-inputs")
    f: dict[str, Path] = {"portrait": EXAMPLES / "portrait.png"}

    def write(name: str, data: bytes) -> Path:
        (d / name).write_bytes(data)
        f[name] = d / name
        return d / name

    # good material
    f["speech"] = cut_audio(EXAMPLES / "speech.ogg", d / "speech.wav", 1.0, 1.5)
    f["speech3"] = cut_audio(EXAMPLES / "speech.ogg", d / "speech3.wav", 1.0, 3.0)
    f["video"] = make_video(d / "video.mp4", 1.0)  # moov after mdat
    f["video3"] = make_video(d / "video3.mp4", 3.0)
    transcode(f["video"], d / "video_fs.mp4", c="copy", movflags="+faststart")
    f["mp3"] = cut_audio(EXAMPLES / "speech.ogg", d / "speech.mp3", 1.0, 3.0)
    f["flac"] = cut_audio(EXAMPLES / "speech.ogg", d / "speech.flac", 1.0, 3.0)
    transcode(EXAMPLES / "speech.ogg", d / "speech.m4a", {"ss": "1", "t": "3"}, movflags="+faststart",
              **{"c:a": "aac"})
    transcode("sine=frequency=440:duration=2", d / "audio_only.mp4", {"f": "lavfi"}, **{"c:a": "aac"})
    portrait = cv2.imread(str(EXAMPLES / "portrait.png"))
    jpeg = cv2.imencode(".jpg", portrait, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    png = (EXAMPLES / "portrait.png").read_bytes()
    wav = f["speech3"].read_bytes()
    fs = (d / "video_fs.mp4").read_bytes()

    # images
    write("portrait.jpg", jpeg)
    write("corrupt.png", _damage(png, 0.5, 0.05))
    write("corrupt.jpg", _damage(jpeg, 0.5, 0.1))
    write("garbage.png", png[:16] + bytes(random.Random(1).randrange(256) for _ in range(4000)))
    write("truncated.jpg", jpeg[:int(len(jpeg) * 0.7)])
    write("no_eoi.jpg", jpeg[:-2])  # OpenCV decodes this one without complaint
    write("truncated.png", png[:int(len(png) * 0.7)])
    f["wide.png"] = _image(d / "wide.png", 2000, 100)
    f["tiny.png"] = _image(d / "tiny.png", 8, 8)
    # audio
    write("corrupt.mp3", _damage(f["mp3"].read_bytes(), 0.4, 0.1))
    write("corrupt.flac", _damage(f["flac"].read_bytes(), 0.4, 0.1))
    write("broken.ogg", (EXAMPLES / "speech.ogg").read_bytes()[:120])  # an Ogg page header, no audio
    write("truncated.wav", wav[:len(wav) // 2])
    write("truncated.mp3", f["mp3"].read_bytes()[:len(f["mp3"].read_bytes()) // 2])
    m4a = (d / "speech.m4a").read_bytes()
    write("truncated.m4a", m4a[:int(len(m4a) * 0.6)])
    write("empty.wav", b"")
    f["no_samples.wav"] = _wav(d / "no_samples.wav", 0)
    f["20ms.wav"] = _wav(d / "20ms.wav", 320)
    # video
    write("corrupt.mp4", _damage(f["video3"].read_bytes(), 0.3, 0.1))
    write("truncated.mp4", f["video3"].read_bytes()[:int(len(f["video3"].read_bytes()) * 0.6)])
    mdat = fs.index(b"mdat") - 4
    write("header_only.mp4", fs[:mdat + 16])  # the index, and almost none of the frames
    f["audio_only.mp4"] = d / "audio_only.mp4"
    f["big.wav"] = _wav(d / "big.wav", 16000 * 8)  # 256 kB
    return f


@pytest.fixture(scope="module")
def web(m):
    """Serves big.wav with no Content-Length (the size is only found out while streaming)."""
    body = m["big.wav"].read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            try:
                for i in range(0, len(body), 16384):
                    self.wfile.write(body[i:i + 16384])
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ---- the table ------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    fields: Callable[[dict, str], dict]  # (media, web base URL) -> job input
    field: str  # what the error must name
    reason: str  # what the error must say
    settings: dict = field(default_factory=dict)


def img(name="portrait", **more):
    return lambda m, web: {"image_path": m[name], "wav_path": m["speech"], "width": 256,
                           "height": 256, **more}


def aud(name, key="wav_path", **more):
    return lambda m, web: {"image_path": m["portrait"], key: m[name], "width": 256,
                           "height": 256, **more}


def vid(name, **more):
    return lambda m, web: {"input_type": "video", "video_path": m[name], "wav_path": m["speech"],
                           "width": 256, "height": 256, **more}


def b64(path: Path, mime: str | None = None) -> str:
    text = base64.b64encode(path.read_bytes()).decode()
    return f"data:{mime};base64,{text}" if mime else text


DECODE = "cannot be decoded (corrupt or truncated)"
TRUNC = "corrupt or truncated"
OUTSIDE = "outside the allowed input folders (LONGTALK_INPUT_ROOTS)"

CASES = [
    # images
    Case("corrupt PNG (bytes overwritten, checksum wrong)", img("corrupt.png"), "image_path", DECODE),
    Case("corrupt JPEG (entropy data overwritten)", img("corrupt.jpg"), "image_path", DECODE),
    Case("garbage after a PNG signature", img("garbage.png"), "image_path", DECODE),
    Case("truncated JPEG", img("truncated.jpg"), "image_path", DECODE),
    Case("JPEG without its end marker", img("no_eoi.jpg"), "image_path", "ends before its end marker"),
    Case("truncated PNG", img("truncated.png"), "image_path", DECODE),
    Case("extreme aspect ratio 2000x100", img("wide.png"), "image_path", "aspect ratio of 20.0:1"),
    Case("tiny image 8x8", img("tiny.png"), "image_path", "each side must be at least 64 pixels"),
    # audio
    Case("corrupt MP3", aud("corrupt.mp3"), "wav_path", TRUNC),
    Case("corrupt FLAC", aud("corrupt.flac"), "wav_path", TRUNC),
    Case("corrupt Ogg (a header page only)", aud("broken.ogg"), "wav_path", TRUNC),
    Case("truncated WAV", aud("truncated.wav"), "wav_path", "is truncated"),
    Case("truncated MP3", aud("truncated.mp3"), "wav_path", "is truncated"),
    Case("truncated M4A", aud("truncated.m4a"), "wav_path", TRUNC),
    Case("zero-length audio file", aud("empty.wav"), "wav_path", "empty (0 bytes)"),
    Case("WAV with no samples", aud("no_samples.wav"), "wav_path", "contains no audio samples"),
    Case("audio shorter than one frame (20 ms)", aud("20ms.wav"), "wav_path",
         "shorter than one video frame (40 ms)"),
    Case("audio longer than the maximum (3 s, max 2 s)", aud("speech3"), "wav_path",
         "longer than the limit of 2 seconds", {"max_audio_seconds": 2}),
    Case("corrupt second speaker track", lambda m, web: {
        "person_count": "multi", "image_path": m["portrait"], "wav_path": m["speech"],
        "wav_path_2": m["corrupt.mp3"], "width": 256, "height": 256}, "wav_path_2", TRUNC),
    # video
    Case("corrupt MP4", vid("corrupt.mp4"), "video_path", DECODE),
    Case("truncated MP4 (index at the end, cut off)", vid("truncated.mp4"), "video_path", DECODE),
    Case("MP4 cut right after its header", vid("header_only.mp4"), "video_path", TRUNC),
    Case("MP4 with only an audio stream given as video", vid("audio_only.mp4"), "video_path",
         "has no video stream"),
    Case("video longer than the maximum (3 s, max 2 s)", lambda m, web: {
        "input_type": "video", "video_path": m["video3"], "wav_path": m["speech"],
        "width": 256, "height": 256}, "video_path", "longer than the limit of 2 seconds",
         {"max_audio_seconds": 2}),
    # wrong kinds
    Case("audio given as image", img("speech"), "image_path", "got WAV audio"),
    Case("image given as audio", aud("portrait"), "wav_path", "got PNG image"),
    Case("video given as image", img("video"), "image_path", "got MP4 video"),
    # base64, sources, sizes, places
    Case("invalid base64", lambda m, web: {"image_path": m["portrait"],
                                           "wav_base64": "this is %%% not base64!"},
         "wav_base64", "not valid base64"),
    Case("data URI type contradicts the content", lambda m, web: {
        "image_base64": b64(m["portrait.jpg"], "image/png"), "wav_path": m["speech"]},
         "image_base64", "the data URI says image/png but the content is JPEG image"),
    Case("data URI says audio, content is an image", lambda m, web: {
        "image_path": m["portrait"], "wav_base64": b64(m["portrait"], "audio/wav")},
         "wav_base64", "expected audio"),
    # (a URL's body is downloaded by ingest: one over the size limit is refused there, see
    # tests/test_pipeline.py::test_url_input_refused_by_ingest_names_the_field_and_leaves_nothing)
    Case("input over the size limit (path)", aud("big.wav"), "wav_path",
         "larger than the limit of 100000 bytes", {"max_input_bytes": 100_000}),
    Case("input over the size limit (base64)", lambda m, web: {
        "image_path": m["portrait"], "wav_base64": b64(m["big.wav"], "audio/wav")},
         "wav_base64", "larger than the limit of 100000 bytes", {"max_input_bytes": 100_000}),
    Case("URL to a loopback address", lambda m, web: {"image_path": m["portrait"],
                                                      "wav_url": f"{web}/big.wav?token=s3cr3t"},
         "wav_url", "loopback address", {"url_allow_hosts": ""}),
    Case("URL that is not http(s)", lambda m, web: {"image_path": m["portrait"],
                                                    "wav_url": "ftp://127.0.0.1/talk.wav?token=s3cr3t"},
         "wav_url", "only http and https URLs are accepted"),
    Case("URL to the cloud metadata address", lambda m, web: {
        "image_url": "http://169.254.169.254/latest/meta-data/", "wav_path": m["speech"]},
         "image_url", "cloud metadata address"),
    Case("path outside the input roots", lambda m, web: {"image_path": "/etc/hostname",
                                                         "wav_path": m["speech"]},
         "image_path", OUTSIDE),
    Case("missing file", lambda m, web: {"image_path": m["portrait"].parent / "nope.png",
                                         "wav_path": m["speech"]}, "image_path", "file not found"),
    Case("two sources for one field", lambda m, web: {
        "image_path": m["portrait"], "image_url": "https://example.com/face.png",
        "wav_path": m["speech"]}, "image_path|image_url", "give exactly one source"),
    Case("missing required audio", lambda m, web: {"image_path": m["portrait"]},
         "wav_path|wav_url|wav_base64", "required"),
    Case("missing required image", lambda m, web: {"wav_path": m["speech"]},
         "image_path|image_url|image_base64", "required for input_type image"),
    # scalar fields
    Case("unknown input_type", img(input_type="gif"), "input_type", "must be one of image, video"),
    Case("unknown person_count", img(person_count="three"), "person_count",
         "must be one of single, multi"),
    Case("width not a multiple of 16", img(width=250), "width", "must be a multiple of 16"),
    Case("width above the range", img(width=2048), "width", "between 64 and 1920"),
    Case("width below the range", img(width=32), "width", "between 64 and 1920"),
    Case("height above the range", img(height=4096), "height", "between 64 and 1920"),
    Case("height below the range", img(height=48), "height", "between 64 and 1920"),
    Case("max_frame 0", img(max_frame=0), "max_frame", "must be a positive integer"),
    Case("max_frame negative", img(max_frame=-5), "max_frame", "must be a positive integer"),
    Case("max_frame 1.5", img(max_frame=1.5), "max_frame", "must be an integer"),
    Case("max_frame 'abc'", img(max_frame="abc"), "max_frame", "must be an integer"),
    Case("prompt not a string", img(prompt=["a", "b"]), "prompt", "must be a string"),
    # a key that is no field: refused when it resembles one (else the render silently ignores it)
    Case("misspelled width", img(widht=768), "widht", "unknown field; did you mean width?"),
    Case("field name in another case", img(Height=768), "Height", "unknown field; did you mean height?"),
    Case("dashes for underscores", img(**{"max-frame": 30}), "max-frame", "did you mean max_frame?"),
    Case("unknown key under LONGTALK_STRICT_INPUT", img(steps=4), "steps", "unknown field",
         {"strict_input": True}),
]



@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input_is_refused_and_costs_nothing(case, workers, backend, render_calls,
                                                      temporal_client, own_settings, store, m,
                                                      web, tmp_path, render_id):
    # render_calls sees every worker in this process (other modules' workers may still be
    # finishing their own renders): only this render's calls count
    def mine():
        return (len(backend.calls), sum(1 for rid, _ in render_calls if rid == render_id))

    before = mine()
    job_settings = replace(own_settings, **case.settings)
    job = write_job(tmp_path, **case.fields(m, web))
    ok = False
    try:
        rc, _out, err = await run_starter(temporal_client, job_settings, job, "--id", render_id)
        assert rc == 2, f"exit {rc}, expected 2 (refused before start): {err}"
        line = next((ln for ln in err.splitlines() if ln.startswith("error: ")), "")
        assert line.startswith(f"error: {case.field}: "), f"field not named first: {err!r}"
        assert case.reason in line, f"reason {case.reason!r} missing: {line!r}"
        assert "s3cr3t" not in err  # a URL's query never shows
        # no workflow, nothing stored, nothing rendered
        assert await existing_status(temporal_client, render_id) is None
        assert list(store.list(f"renders/{render_id}/")) == []
        assert mine() == before
        ok = True
    finally:
        RESULTS.append((case.name, ok))
