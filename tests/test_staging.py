"""stage_inputs: real files, a real local HTTP server, the real S3 server of conftest."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from longtalk import staging
from longtalk.errors import InputError
from longtalk.jobs import MediaSource, parse_job
from longtalk.stack import free_port
from longtalk.staging import StagedInput, open_source, stage_inputs

from .test_media import generate_samples

BIG_BYTES = 50 * 1024 * 1024


# ---- a local HTTP server -------------------------------------------------------------

class Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.sent: dict[str, int] = {}  # path -> body bytes written successfully
        self.done: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def finished(self, path: str, timeout: float = 20) -> int:
        """Bytes sent for `path` once its handler has finished."""
        assert self.done[path].wait(timeout), f"handler for {path} still running"
        return self.sent[path]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.sent[path] = 0
                    server.done[path] = threading.Event()
                try:
                    self._serve(path)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    server.done[path].set()

            def _serve(self, path):
                if path.startswith("/files/") and path[7:] in server.files:
                    body = server.files[path[7:]]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self._write(path, body)
                elif path in ("/big", "/big-unannounced"):
                    # a small send buffer: what was "sent" is close to what the client took
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * 1024)
                    self.send_response(200)
                    if path == "/big":
                        self.send_header("Content-Length", str(BIG_BYTES))
                    self.end_headers()  # HTTP/1.0: without a length, the body ends at close
                    # a real WAV header, so that only the size can be the problem
                    head = server.files["tone.wav"][:65536].ljust(65536, b"\x00")
                    self._write(path, head)
                    block = b"\x00" * 65536
                    for _ in range(BIG_BYTES // len(block) - 1):
                        self._write(path, block)
                elif path == "/slow":
                    time.sleep(3)
                    self.send_response(200)
                    self.end_headers()
                elif path == "/to-ftp":
                    self.send_response(302)
                    self.send_header("Location", "ftp://127.0.0.1/file.png")
                    self.end_headers()
                elif path == "/to-png":
                    self.send_response(302)
                    self.send_header("Location", "/files/still.png")
                    self.end_headers()
                else:
                    self.send_error(404)

            def _write(self, path, data):
                self.wfile.write(data)
                with server.lock:
                    server.sent[path] += len(data)

        return Handler


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    names = ["still.png", "still.jpg", "tone.wav", "tone.mp3", "clip.mp4", "talk.webm"]
    return generate_samples(tmp_path_factory.mktemp("staging-media"), names)


@pytest.fixture(scope="module")
def server(samples):
    srv = Server({name: path.read_bytes() for name, path in samples.items()})
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def tmpdir_spy(tmp_path, monkeypatch) -> Path:
    """Route the module's temporary files into a folder the test can look at."""
    folder = tmp_path / "staging-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def job_of(settings, **inp):
    return parse_job({"input": inp}, settings)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prefix_of(render_id: str) -> str:
    return f"renders/{render_id}/"


def assert_staged(store, item: StagedInput, render_id: str, data: bytes, family: str, ext: str):
    digest = sha(data)
    assert item.object_key == f"renders/{render_id}/inputs/{family}-{digest[:16]}{ext}"
    assert item.size == len(data) and item.sha256 == digest
    assert store.get_bytes(item.object_key) == data


def refused(job, store, render_id, settings) -> InputError:
    with pytest.raises(InputError) as info:
        stage_inputs(job, store, render_id, settings)
    assert list(store.list(prefix_of(render_id))) == []
    return info.value


# ---- happy paths --------------------------------------------------------------------

def test_path_inputs(settings, store, render_id, samples, tmpdir_spy):
    job = job_of(settings, image_path=str(samples["still.png"]), wav_path=str(samples["tone.wav"]))
    staged = stage_inputs(job, store, render_id, settings)
    assert set(staged) == {"image", "audio"}
    png, wav = samples["still.png"].read_bytes(), samples["tone.wav"].read_bytes()
    assert_staged(store, staged["image"], render_id, png, "image", ".png")
    assert_staged(store, staged["audio"], render_id, wav, "audio", ".wav")
    assert (staged["image"].field, staged["image"].source_key) == ("image", "image_path")
    assert (staged["image"].format, staged["image"].kind) == ("png", "image")
    assert (staged["audio"].format, staged["audio"].kind) == ("wav", "audio")
    assert sorted(store.list(prefix_of(render_id))) == sorted(
        [staged["image"].object_key, staged["audio"].object_key])
    assert list(tmpdir_spy.iterdir()) == []


def test_url_inputs(settings, store, render_id, samples, server, tmpdir_spy):
    job = job_of(settings, image_url=server.url("/files/still.jpg?token=abc"),
                 wav_url=server.url("/files/tone.mp3"))
    staged = stage_inputs(job, store, render_id, settings)
    assert_staged(store, staged["image"], render_id, samples["still.jpg"].read_bytes(), "image",
                  ".jpg")
    assert_staged(store, staged["audio"], render_id, samples["tone.mp3"].read_bytes(), "audio",
                  ".mp3")
    assert staged["audio"].source_key == "wav_url" and staged["audio"].format == "mp3"
    assert list(tmpdir_spy.iterdir()) == []


def test_url_redirect_within_http_is_followed(settings, store, render_id, samples, server):
    job = job_of(settings, image_url=server.url("/to-png"), wav_path=str(samples["tone.wav"]))
    staged = stage_inputs(job, store, render_id, settings)
    assert_staged(store, staged["image"], render_id, samples["still.png"].read_bytes(), "image",
                  ".png")


def test_base64_and_data_uri_inputs(settings, store, render_id, samples):
    png, mp3 = samples["still.png"].read_bytes(), samples["tone.mp3"].read_bytes()
    job = job_of(settings, image_base64="data:image/png;base64," + base64.b64encode(png).decode(),
                 wav_base64=base64.encodebytes(mp3).decode())
    staged = stage_inputs(job, store, render_id, settings)
    assert_staged(store, staged["image"], render_id, png, "image", ".png")
    assert_staged(store, staged["audio"], render_id, mp3, "audio", ".mp3")
    assert staged["image"].source_key == "image_base64"


def test_video_mode_with_audio_from_a_video_container(settings, store, render_id, samples, server):
    job = job_of(settings, input_type="video", video_path=str(samples["clip.mp4"]),
                 wav_url=server.url("/files/talk.webm"))
    staged = stage_inputs(job, store, render_id, settings)
    assert set(staged) == {"video", "audio"}
    assert_staged(store, staged["video"], render_id, samples["clip.mp4"].read_bytes(), "video",
                  ".mp4")
    assert_staged(store, staged["audio"], render_id, samples["talk.webm"].read_bytes(), "audio",
                  ".webm")
    assert (staged["audio"].format, staged["audio"].kind) == ("webm", "video")


def test_multi_without_second_track_stores_the_audio_once(settings, store, render_id, samples,
                                                          server):
    job = job_of(settings, person_count="multi", image_path=str(samples["still.png"]),
                 wav_url=server.url("/files/tone.wav"))
    assert job.audio_2 is not None and job.warnings
    staged = stage_inputs(job, store, render_id, settings)
    assert staged["audio_2"] == replace(staged["audio"], field="audio_2")
    assert staged["audio_2"].object_key == staged["audio"].object_key
    assert len(list(store.list(prefix_of(render_id)))) == 2


def test_same_content_from_two_sources_is_one_object(settings, store, render_id, samples):
    wav = samples["tone.wav"].read_bytes()
    job = job_of(settings, person_count="multi", image_path=str(samples["still.png"]),
                 wav_path=str(samples["tone.wav"]), wav_base64_2=base64.b64encode(wav).decode())
    staged = stage_inputs(job, store, render_id, settings)
    assert staged["audio"].source_key == "wav_path"
    assert staged["audio_2"].source_key == "wav_base64_2"
    assert staged["audio_2"].object_key == staged["audio"].object_key
    assert len(list(store.list(prefix_of(render_id)))) == 2


def test_keys_are_content_addressed(settings, store, render_id, samples):
    first = stage_inputs(job_of(settings, image_path=str(samples["still.png"]),
                                wav_path=str(samples["tone.wav"])), store, render_id, settings)
    again = stage_inputs(job_of(settings, image_path=str(samples["still.png"]),
                                wav_path=str(samples["tone.wav"])), store, render_id, settings)
    assert again == first  # idempotent: the same keys, nothing new
    assert len(list(store.list(prefix_of(render_id)))) == 2
    other = stage_inputs(job_of(settings, image_path=str(samples["still.jpg"]),
                                wav_path=str(samples["tone.mp3"])), store, render_id, settings)
    assert other["image"].object_key != first["image"].object_key
    assert other["audio"].object_key != first["audio"].object_key
    # the first submission's inputs are still there, unchanged
    assert store.get_bytes(first["image"].object_key) == samples["still.png"].read_bytes()
    assert store.get_bytes(first["audio"].object_key) == samples["tone.wav"].read_bytes()
    assert len(list(store.list(prefix_of(render_id)))) == 4


def test_open_source_streams_every_form(settings, samples, server):
    png = samples["still.png"].read_bytes()
    for source in (MediaSource("image", "image_path", "path", str(samples["still.png"])),
                   MediaSource("image", "image_url", "url", server.url("/files/still.png")),
                   MediaSource("image", "image_base64", "base64", base64.b64encode(png).decode())):
        assert b"".join(open_source(source, settings)) == png


def test_relative_paths_are_relative_to_the_current_directory(settings, store, render_id,
                                                             samples, monkeypatch):
    monkeypatch.chdir(samples["still.png"].parent)
    staged = stage_inputs(job_of(settings, image_path="still.png", wav_path="./tone.wav"),
                          store, render_id, settings)
    assert staged["image"].size == samples["still.png"].stat().st_size


# ---- refusals that leave nothing behind ---------------------------------------------

def test_wrong_kind_leaves_nothing(settings, store, render_id, samples, tmpdir_spy):
    # the image is fine (and uploaded first), the "audio" is a PNG
    job = job_of(settings, image_path=str(samples["still.png"]), wav_path=str(samples["still.jpg"]))
    err = refused(job, store, render_id, settings)
    assert err.field == "wav_path" and "expected audio" in err.reason
    assert "got JPEG image" in err.reason
    assert list(tmpdir_spy.iterdir()) == []


def test_wrong_kind_for_video_and_image(settings, store, render_id, samples, server):
    job = job_of(settings, input_type="video", video_url=server.url("/files/still.png"),
                 wav_path=str(samples["tone.wav"]))
    err = refused(job, store, render_id, settings)
    assert err.field == "video_url" and "expected a video" in err.reason and "PNG image" in err.reason
    job = job_of(settings, image_path=str(samples["tone.wav"]), wav_path=str(samples["tone.wav"]))
    err = refused(job, store, render_id, settings)
    assert err.field == "image_path" and "got WAV audio" in err.reason


def test_unrecognised_content(settings, store, render_id, samples, tmp_path):
    text = tmp_path / "notes.png"
    text.write_bytes(b"not an image, whatever the name says\n" * 10)
    err = refused(job_of(settings, image_path=str(text), wav_path=str(samples["tone.wav"])),
                  store, render_id, settings)
    assert err.field == "image_path" and "no supported format" in err.reason


def test_data_uri_mismatch_leaves_nothing(settings, store, render_id, samples):
    jpg = samples["still.jpg"].read_bytes()
    payload = base64.b64encode(jpg).decode()
    job = job_of(settings, image_path=str(samples["still.png"]), wav_path=str(samples["tone.wav"]))
    # parse_job refuses this already; staging checks again for jobs built another way
    bad = replace(job, audio=MediaSource("audio", "wav_base64", "base64",
                                         "data:audio/wav;base64," + base64.b64encode(
                                             samples["tone.mp3"].read_bytes()).decode()))
    err = refused(bad, store, render_id, settings)
    assert err.field == "wav_base64" and "data URI says audio/wav" in err.reason
    bad = replace(job, image=MediaSource("image", "image_base64", "base64",
                                         "data:image/png;base64," + payload))
    err = refused(bad, store, render_id, settings)
    assert err.field == "image_base64" and "data URI says image/png" in err.reason
    assert payload[:40] not in str(err)


def test_too_large_url_with_announced_length(settings, store, render_id, samples, server,
                                             tmpdir_spy):
    small = replace(settings, max_input_bytes=1024 * 1024)
    job = job_of(small, image_path=str(samples["still.png"]), wav_url=server.url("/big"))
    err = refused(job, store, render_id, small)
    assert err.field == "wav_url" and "larger than the limit of 1048576 bytes" in err.reason
    assert server.finished("/big") < BIG_BYTES // 4
    assert list(tmpdir_spy.iterdir()) == []


def test_too_large_url_without_length_stops_reading_early(settings, store, render_id, samples,
                                                          server, tmpdir_spy):
    small = replace(settings, max_input_bytes=1024 * 1024)
    job = job_of(small, image_path=str(samples["still.png"]),
                 wav_url=server.url("/big-unannounced"))
    err = refused(job, store, render_id, small)
    assert err.field == "wav_url" and "larger than the limit of 1048576 bytes" in err.reason
    # the server could only push what fits into the socket buffers before the client hung up
    assert server.finished("/big-unannounced") < BIG_BYTES // 4
    assert list(tmpdir_spy.iterdir()) == []


def test_too_large_path_stops_reading_early(settings, store, render_id, samples, tmp_path,
                                            monkeypatch):
    big = tmp_path / "big.wav"
    with open(big, "wb") as out:
        out.write(samples["tone.wav"].read_bytes())
        out.write(b"\x00" * (20 * 1024 * 1024))
    read = []
    real_open_source = staging.open_source

    def counting(source, settings_):
        for chunk in real_open_source(source, settings_):
            read.append(len(chunk))
            yield chunk

    monkeypatch.setattr(staging, "open_source", counting)
    small = replace(settings, max_input_bytes=1024 * 1024)
    err = refused(job_of(small, image_path=str(samples["still.png"]), wav_path=str(big)),
                  store, render_id, small)
    assert err.field == "wav_path" and "larger than the limit" in err.reason
    image_size = samples["still.png"].stat().st_size
    assert sum(read) - image_size <= small.max_input_bytes + staging.CHUNK_BYTES


def test_empty_input_is_refused(settings, store, render_id, samples, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    err = refused(job_of(settings, image_path=str(samples["still.png"]), wav_path=str(empty)),
                  store, render_id, settings)
    assert err.field == "wav_path" and "empty" in err.reason


# ---- URL failures -----------------------------------------------------------------

def test_http_404(settings, store, render_id, samples, server):
    job = job_of(settings, image_url=server.url("/nothing.png?X-Amz-Signature=SECRETTOKEN"),
                 wav_path=str(samples["tone.wav"]))
    err = refused(job, store, render_id, settings)
    assert err.field == "image_url" and "HTTP 404" in err.reason
    assert "SECRETTOKEN" not in str(err) and "X-Amz" not in str(err)


def test_non_http_schemes_are_refused(settings, store, render_id, samples):
    job = job_of(settings, image_path=str(samples["still.png"]), wav_path=str(samples["tone.wav"]))
    for url in ("ftp://127.0.0.1/voice.wav", f"file://{samples['tone.wav']}", "gopher://x/1"):
        bad = replace(job, audio=MediaSource("audio", "wav_url", "url", url))
        err = refused(bad, store, render_id, settings)
        assert err.field == "wav_url" and "only http and https" in err.reason


def test_redirect_to_ftp_is_refused(settings, store, render_id, samples, server):
    job = job_of(settings, image_url=server.url("/to-ftp"), wav_path=str(samples["tone.wav"]))
    err = refused(job, store, render_id, settings)
    assert err.field == "image_url" and "redirect" in err.reason


def test_connection_refused(settings, store, render_id, samples):
    url = f"http://127.0.0.1:{free_port()}/face.png?token=SECRET"
    err = refused(job_of(settings, image_url=url, wav_path=str(samples["tone.wav"])),
                  store, render_id, settings)
    assert err.field == "image_url" and "connection refused" in err.reason
    assert "SECRET" not in str(err)


def test_timeout(settings, store, render_id, samples, server):
    quick = replace(settings, download_timeout_s=0.5)
    job = job_of(quick, image_path=str(samples["still.png"]), wav_url=server.url("/slow"))
    started = time.monotonic()
    err = refused(job, store, render_id, quick)
    assert time.monotonic() - started < 2.5
    assert err.field == "wav_url" and "timed out" in err.reason


# ---- path checks ------------------------------------------------------------------

def test_missing_file_and_directory(settings, store, render_id, samples, tmp_path):
    err = refused(job_of(settings, image_path=str(tmp_path / "nope.png"),
                         wav_path=str(samples["tone.wav"])), store, render_id, settings)
    assert err.field == "image_path" and "not found" in err.reason
    err = refused(job_of(settings, image_path=str(samples["still.png"]),
                         wav_path=str(tmp_path)), store, render_id, settings)
    assert err.field == "wav_path" and "not a regular file" in err.reason


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_not_a_regular_file(settings, store, render_id, samples, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    err = refused(job_of(settings, image_path=str(samples["still.png"]), wav_path=str(fifo)),
                  store, render_id, settings)
    assert err.field == "wav_path" and "not a regular file" in err.reason


def test_input_roots(settings, store, render_id, samples, tmp_path, monkeypatch):
    root = tmp_path / "allowed"
    outside = tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    inside_png = root / "face.png"
    inside_png.write_bytes(samples["still.png"].read_bytes())
    (root / "voice.wav").write_bytes(samples["tone.wav"].read_bytes())
    outside_wav = outside / "voice.wav"
    outside_wav.write_bytes(samples["tone.wav"].read_bytes())
    (root / "escape.wav").symlink_to(outside_wav)  # inside by name, outside in fact
    (root / "alias.png").symlink_to(inside_png)  # a link that stays inside is fine
    (root / "up").symlink_to(outside, target_is_directory=True)

    limited = replace(settings, input_roots=os.pathsep.join([str(root), str(tmp_path / "other")]))
    staged = stage_inputs(job_of(limited, image_path=str(root / "alias.png"),
                                 wav_path=str(root / "voice.wav")), store, render_id, limited)
    assert staged["image"].format == "png"
    store.delete_prefix(prefix_of(render_id))

    for bad in (outside_wav, root / "escape.wav", root / "up" / "voice.wav",
                root / ".." / "elsewhere" / "voice.wav", Path("/etc/hostname")):
        err = refused(job_of(limited, image_path=str(inside_png), wav_path=str(bad)),
                      store, render_id, limited)
        assert err.field == "wav_path" and "outside the allowed input folders" in err.reason, bad

    # a relative path is resolved against the current directory before the check
    monkeypatch.chdir(outside)
    err = refused(job_of(limited, image_path=str(inside_png), wav_path="voice.wav"),
                  store, render_id, limited)
    assert "outside the allowed input folders" in err.reason
    monkeypatch.chdir(root)
    assert stage_inputs(job_of(limited, image_path="face.png", wav_path="voice.wav"),
                        store, render_id, limited)["audio"].format == "wav"


def test_input_roots_outside_check_does_not_reveal_existence(settings, store, render_id, samples,
                                                            tmp_path):
    limited = replace(settings, input_roots=str(tmp_path / "allowed"))
    err = refused(job_of(limited, image_path=str(tmp_path / "secret" / "missing.png"),
                         wav_path=str(samples["tone.wav"])), store, render_id, limited)
    assert err.field == "image_path" and "outside the allowed input folders" in err.reason
