"""Reading sources and staging a job's inputs: real files, a real local HTTP server, the
real S3 server of conftest. The network guard's own cases are tests/test_hostile_inputs.py;
the job contract's are tests/test_jobs.py."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from longtalk.errors import DownloadFailed, InputError
from longtalk.inputs import formats, staging
from longtalk.inputs.formats import SNIFF_BYTES, check_format
from longtalk.inputs.job import parse_job
from longtalk.inputs.sources import CHUNK_BYTES, MediaSource, iter_base64, open_source
from longtalk.settings import Settings
from longtalk.inputs.staging import (
    StagedInput, fetch_url_input, prepare, stage_inputs, stored_input_key, url_record_key, url_ref_key,
)
from tests.media import MediaServer

from .test_media import generate_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    names = ["still.png", "still.jpg", "still.webp", "tone.wav", "tone.mp3", "tone.m4a", "clip.mp4",
             "talk.webm"]
    return generate_samples(tmp_path_factory.mktemp("staging-media"), names)


@pytest.fixture(scope="module")
def server(samples):
    srv = MediaServer({name: path.read_bytes() for name, path in samples.items()})
    yield srv
    srv.close()


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


def test_base64_and_data_uri_inputs(settings, store, render_id, samples):
    png, mp3 = samples["still.png"].read_bytes(), samples["tone.mp3"].read_bytes()
    job = job_of(settings, image_base64="data:image/png;base64," + base64.b64encode(png).decode(),
                 wav_base64=base64.encodebytes(mp3).decode())
    staged = stage_inputs(job, store, render_id, settings)
    assert_staged(store, staged["image"], render_id, png, "image", ".png")
    assert_staged(store, staged["audio"], render_id, mp3, "audio", ".mp3")
    assert staged["image"].source_key == "image_base64"


def test_video_mode_with_audio_from_a_video_container(settings, store, render_id, samples):
    job = job_of(settings, input_type="video", video_path=str(samples["clip.mp4"]),
                 wav_path=str(samples["talk.webm"]))
    staged = stage_inputs(job, store, render_id, settings)
    assert set(staged) == {"video", "audio"}
    assert_staged(store, staged["video"], render_id, samples["clip.mp4"].read_bytes(), "video",
                  ".mp4")
    assert_staged(store, staged["audio"], render_id, samples["talk.webm"].read_bytes(), "audio",
                  ".webm")
    assert (staged["audio"].format, staged["audio"].kind) == ("webm", "video")


def test_multi_without_second_track_stores_the_audio_once(settings, store, render_id, samples):
    job = job_of(settings, person_count="multi", image_path=str(samples["still.png"]),
                 wav_base64=base64.b64encode(samples["tone.wav"].read_bytes()).decode())
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


def test_a_fresh_render_id_uploads_without_asking_first(settings, store, render_id, samples, monkeypatch):
    """The API's /run makes a new id, so nothing can be stored under it yet: its inputs are put
    without a HEAD each (a round trip fewer per input), and stored all the same."""
    looked = []
    real_size = type(store).size
    monkeypatch.setattr(type(store), "size", lambda self, key: looked.append(key) or real_size(self, key))
    job = job_of(settings, image_path=str(samples["still.png"]), wav_path=str(samples["tone.wav"]))
    staged = stage_inputs(job, store, render_id, settings, fresh=True)
    assert looked == []
    assert_staged(store, staged["image"], render_id, samples["still.png"].read_bytes(), "image", ".png")
    assert_staged(store, staged["audio"], render_id, samples["tone.wav"].read_bytes(), "audio", ".wav")
    again = stage_inputs(job, store, render_id, settings)  # an id given again (the CLI): looked up first
    assert again == staged and len(looked) == 2


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


def test_wrong_kind_for_video_and_image(settings, store, render_id, samples):
    job = job_of(settings, input_type="video", video_path=str(samples["still.png"]),
                 wav_path=str(samples["tone.wav"]))
    err = refused(job, store, render_id, settings)
    assert err.field == "video_path" and "expected a video" in err.reason and "PNG image" in err.reason
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
    # the content is decoded once, when staged: that is where a contradicting type shows
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
    assert sum(read) - image_size <= small.max_input_bytes + CHUNK_BYTES


def test_empty_input_is_refused(settings, store, render_id, samples, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    err = refused(job_of(settings, image_path=str(samples["still.png"]), wav_path=str(empty)),
                  store, render_id, settings)
    assert err.field == "wav_path" and "empty" in err.reason


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


# ---- URL inputs: checked by the client, fetched by ingest ------------------------------------

def test_url_inputs_are_recorded_not_downloaded(settings, store, render_id, samples, server):
    url = server.url("/files/still.jpg?token=abc")
    before = len(server.requests)
    staged = stage_inputs(job_of(settings, image_url=url, wav_path=str(samples["tone.wav"])),
                          store, render_id, settings)
    image = staged["image"]
    ref = url_ref_key(render_id, "image")
    assert image == StagedInput(field="image", source_key="image_url", object_key=ref, format="",
                                kind="", size=0, sha256="", fetched_by_ingest=True)
    assert store.get_json(ref) == {"field": "image", "key": "image_url", "url": url}
    assert len(server.requests) == before  # not fetched: that is ingest's work
    assert sorted(store.list(prefix_of(render_id))) == sorted([ref, staged["audio"].object_key])


def test_url_refused_by_the_guard_leaves_nothing(settings, store, render_id, samples, server):
    strict = replace(settings, url_allow_hosts="")
    before = len(server.requests)
    job = job_of(strict, image_path=str(samples["still.png"]),
                 wav_url=server.url("/files/tone.wav?sig=SECRET"))
    err = refused(job, store, render_id, strict)
    assert err.field == "wav_url" and "loopback address" in err.reason and "SECRET" not in str(err)
    assert len(server.requests) == before


def test_fetch_url_input_checks_stores_and_records(settings, store, render_id, samples, server,
                                                   tmp_path):
    job = job_of(settings, person_count="multi", image_path=str(samples["still.png"]),
                 wav_url=server.url("/files/tone.mp3?token=abc"))
    staged = stage_inputs(job, store, render_id, settings)
    ref = staged["audio"].object_key
    assert staged["audio_2"].object_key == ref  # one URL, one reference, one download
    before = len(server.requests)
    progress: dict = {}
    got, local = fetch_url_input(store, render_id, ref, settings, tmp_path, progress)
    mp3 = samples["tone.mp3"].read_bytes()
    assert_staged(store, got, render_id, mp3, "audio", ".mp3")
    assert (got.field, got.source_key, got.format, got.kind) == ("audio", "wav_url", "mp3", "audio")
    assert local.read_bytes() == mp3 and progress["bytes"] == len(mp3)
    assert store.get_json(url_record_key(ref)) == {**got.__dict__}
    assert stored_input_key(store, {}, {"audio_2": ref}, "audio_2") == got.object_key
    # a retried ingest finds the record: no second download
    again, local2 = fetch_url_input(store, render_id, ref, settings, tmp_path / "again")
    assert again == got and local2.read_bytes() == mp3
    assert len(server.requests) == before + 1


def test_fetch_url_input_refuses_bad_content_and_stores_nothing(settings, store, render_id, samples,
                                                               server, tmp_path):
    staged = stage_inputs(job_of(settings, image_url=server.url("/files/tone.wav"),
                                 wav_path=str(samples["tone.wav"])), store, render_id, settings)
    ref = staged["image"].object_key
    before = set(store.list(prefix_of(render_id)))
    with pytest.raises(InputError) as err:
        fetch_url_input(store, render_id, ref, settings, tmp_path)
    assert not isinstance(err.value, DownloadFailed)  # not retried: the content is wrong
    assert err.value.field == "image_url" and "got WAV audio" in err.value.reason
    assert set(store.list(prefix_of(render_id))) == before  # no content object, no record
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="has not been fetched yet"):
        stored_input_key(store, {}, {"image": ref}, "image")


def test_a_download_that_breaks_off_stores_nothing_and_is_fetched_again(settings, store, render_id,
                                                                       samples, server, tmp_path):
    staged = stage_inputs(job_of(settings, image_path=str(samples["still.png"]),
                                 wav_url=server.url("/flaky/tone.wav")), store, render_id, settings)
    ref = staged["audio"].object_key
    before = set(store.list(prefix_of(render_id)))
    with pytest.raises(DownloadFailed) as err:
        fetch_url_input(store, render_id, ref, settings, tmp_path / "first")
    assert err.value.field == "wav_url" and "closed before the end of the body" in err.value.reason
    assert set(store.list(prefix_of(render_id))) == before  # the partial body counts for nothing
    got, _ = fetch_url_input(store, render_id, ref, settings, tmp_path / "second")
    assert_staged(store, got, render_id, samples["tone.wav"].read_bytes(), "audio", ".wav")
    assert server.requests.count("/flaky/tone.wav") == 2


def test_a_new_submission_does_not_reuse_what_an_earlier_one_fetched(settings, store, render_id,
                                                                     samples, server, tmp_path):
    first = stage_inputs(job_of(settings, image_path=str(samples["still.png"]),
                                wav_url=server.url("/files/tone.wav")), store, render_id, settings)
    fetch_url_input(store, render_id, first["audio"].object_key, settings, tmp_path / "a")
    second = stage_inputs(job_of(settings, image_path=str(samples["still.png"]),
                                 wav_url=server.url("/files/tone.mp3")), store, render_id, settings)
    assert store.get_json_or_none(url_record_key(second["audio"].object_key)) is None
    got, _ = fetch_url_input(store, render_id, second["audio"].object_key, settings, tmp_path / "b")
    assert got.format == "mp3"


# ---- sniffed once ------------------------------------------------------------------------

def test_each_input_is_sniffed_once(settings, store, render_id, samples, server, tmp_path,
                                    monkeypatch):
    calls: list[int] = []
    real_sniff = formats.sniff

    def counting(head):
        calls.append(len(head))
        return real_sniff(head)

    monkeypatch.setattr(formats, "sniff", counting)
    png = samples["still.png"].read_bytes()
    job = job_of(settings, person_count="multi", image_base64=base64.b64encode(png).decode(),
                 wav_path=str(samples["tone.wav"]), wav_url_2=server.url("/files/tone.mp3"))
    staged = stage_inputs(job, store, render_id, settings)
    assert len(calls) == 2  # the image and the first track; the URL is not read by the client
    fetch_url_input(store, render_id, staged["audio_2"].object_key, settings, tmp_path)
    assert len(calls) == 3  # and the URL once, when fetched
    # the first track reused as the second is read, and sniffed, once
    calls.clear()
    stage_inputs(job_of(settings, person_count="multi", image_path=str(samples["still.png"]),
                        wav_path=str(samples["tone.wav"])), store, render_id, settings)
    assert len(calls) == 2


def test_content_already_checked_is_not_decoded_again(samples, monkeypatch):
    """The same bytes for the same kind under the same limits pass without a second decode;
    other limits decode again (and may refuse); a refusal is never kept."""
    calls: list[str] = []
    real = staging.check_media

    def counting(key, path, kind, fmt, settings):
        calls.append(key)
        return real(key, path, kind, fmt, settings)

    monkeypatch.setattr(staging, "check_media", counting)
    monkeypatch.setattr(staging, "_CHECKED", type(staging._CHECKED)(maxsize=8))
    wav = b64(samples["tone.wav"].read_bytes())
    first = prepare(MediaSource("audio", "wav_base64", "base64", wav), SETTINGS_FOR_CONTENT)
    again = prepare(MediaSource("audio_2", "wav_base64_2", "base64", wav), SETTINGS_FOR_CONTENT)
    first.discard(), again.discard()
    assert calls == ["wav_base64"] and again.facts == first.facts
    seconds = first.facts.duration_s
    for _ in range(2):  # a tighter limit: decoded again, refused each time (not kept)
        with pytest.raises(InputError) as info:
            prepare(MediaSource("audio", "wav_base64", "base64", wav),
                    replace(SETTINGS_FOR_CONTENT, max_audio_seconds=seconds / 4))
        assert info.value.field == "wav_base64"
    assert calls == ["wav_base64"] * 3


# ---- what a source holds: content checks (decoded once, when staged) -------------------------

def b64(data: bytes, mime: str | None = None) -> str:
    text = base64.b64encode(data).decode()
    return text if mime is None else f"data:{mime};base64,{text}"


def content_error(field: str, key: str, value: str, **overrides) -> InputError:
    """What preparing this source refuses (before anything could be stored)."""
    with pytest.raises(InputError) as info:
        prepare(MediaSource(field, key, "base64", value), replace(SETTINGS_FOR_CONTENT, **overrides))
    return info.value


SETTINGS_FOR_CONTENT = Settings()


def content_cases(m: dict[str, bytes]):
    png, jpg, wav, mp3, mp4 = (m[n] for n in ("still.png", "still.jpg", "tone.wav", "tone.mp3", "clip.mp4"))
    return [
        # (field, key, value, err text)
        ("image", "image_base64", "not base64 at all!!", "not valid base64"),
        ("image", "image_base64", "data:image/png;base64,@@@@", "not valid base64"),
        ("image", "image_base64", "QUJD=", "not valid base64"),
        ("audio", "wav_base64", "QUJDR", "not valid base64"),
        ("image", "image_base64", "data:image/png;base64,", "empty"),
        ("image", "image_base64", b64(wav), "expected an image (JPEG, PNG or WebP), got WAV audio"),
        ("image", "image_base64", b64(mp4), "got MP4 video"),
        ("image", "image_base64", b64(b"just some text, not a picture"), "no supported format"),
        ("audio", "wav_base64", b64(png), "expected audio (WAV, MP3, FLAC, OGG or M4A"),
        ("audio", "wav_base64", b64(png, "audio/wav"), "got PNG image"),
        ("video", "video_base64", b64(wav), "expected a video (MP4, MOV, WebM or MKV), got WAV audio"),
        ("video", "video_base64", b64(jpg), "got JPEG image"),
        ("audio_2", "wav_base64_2", b64(jpg), "got JPEG image"),
        # data URI mime contradicting the content
        ("image", "image_base64", b64(jpg, "image/png"), "data URI says image/png"),
        ("image", "image_base64", b64(png, "audio/wav"), "data URI says audio/wav"),
        ("audio", "wav_base64", b64(mp3, "audio/wav"), "but the content is MP3 audio"),
        ("audio", "wav_base64", b64(wav, "audio/mpeg"), "data URI says audio/mpeg"),
    ]


@pytest.fixture(scope="module")
def content(samples) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in samples.items()}


def test_content_errors(content):
    for field, key, value, text in content_cases(content):
        err = content_error(field, key, value)
        assert err.field == key and text in err.reason, (key, text, err.reason)


@pytest.mark.parametrize("field, name, mime", [
    ("image", "still.jpg", None), ("image", "still.webp", None), ("image", "still.png", "application/octet-stream"),
    ("image", "still.jpg", "image/jpg"), ("image", "still.png", "IMAGE/PNG"), ("image", "still.png", ""),
    ("audio", "tone.wav", "audio/x-wav"), ("audio", "tone.wav", "audio/wave"), ("audio", "tone.mp3", "audio/mpeg"),
    ("audio", "tone.m4a", "audio/mp4"), ("audio", "tone.m4a", "video/mp4"), ("audio", "clip.mp4", "video/mp4"),
    ("audio", "talk.webm", "video/webm"), ("audio", "talk.webm", None),
    ("audio", "tone.m4a", "application/octet-stream"),
])
def test_accepted_formats_and_declared_types(content, field, name, mime):
    source = MediaSource(field, "x_base64", "base64", b64(content[name], mime))
    head = b"".join(iter_base64(source))[:SNIFF_BYTES]
    fmt = check_format(field, source.key, formats.sniff(head), source.data_uri_mime)
    assert fmt.name == name.rsplit(".", 1)[1].replace("jpg", "jpeg")


def test_errors_never_quote_base64():
    secret = b64(b"SECRET-PAYLOAD" * 20)
    for value in (secret, "data:image/png;base64," + secret, secret + "!!"):
        err = content_error("image", "image_base64", value)
        assert secret[:20] not in str(err) and err.field == "image_base64"


def test_base64_larger_than_the_limit(content):
    err = content_error("image", "image_base64", b64(content["still.png"]), max_input_bytes=100)
    assert err.field == "image_base64" and "larger than the limit of 100 bytes" in err.reason


@hsettings(max_examples=50, deadline=None)
@given(data=st.binary(min_size=1, max_size=300), cuts=st.lists(st.integers(0, 400), max_size=8),
       chunk=st.sampled_from([4, 8, 12, 1024]))
def test_base64_decoding_roundtrip(data, cuts, chunk):
    text = base64.b64encode(data).decode()
    for cut in sorted(set(cuts), reverse=True):
        text = text[:cut] + "\n " + text[cut:]
    source = MediaSource("image", "image_base64", "base64", text)
    assert b"".join(iter_base64(source, chunk)) == data
    # URL-safe alphabet without padding is tolerated too
    loose = MediaSource("image", "image_base64", "base64",
                        base64.urlsafe_b64encode(data).decode().rstrip("="))
    assert b"".join(iter_base64(loose, chunk)) == data


@pytest.mark.parametrize("chunk", [4, 8, 12, 1024])
@pytest.mark.parametrize("text", ["QQ==QUJD", "QQ==\nQUJD", "QUJD QQ== QUJD", "QUJD=", "QUJDQ",
                                  "QU=D", "QUJD\u00e9QUJD"])
def test_invalid_base64_in_any_chunking(text, chunk):
    with pytest.raises(InputError) as err:
        list(iter_base64(MediaSource("audio", "wav_base64", "base64", text), chunk))
    assert err.value.field == "wav_base64" and "not valid base64" in err.value.reason
