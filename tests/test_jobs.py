"""parse_job: the RunPod worker's input contract, table-driven; the render-id rule.

Parsing checks the form of each media source; what a source holds (base64 content, a file's
format) is checked when it is staged: tests/test_staging.py."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from longtalk.errors import InputError
from longtalk.inputs import RENDER_ID_MAX, check_render_id, is_render_id
from longtalk.inputs.job import load_job_file, parse_job
from longtalk.inputs.sources import MediaSource
from longtalk.settings import Settings

from .test_media import generate_samples

SETTINGS = Settings()
SOURCE_KEYS = {
    "image": ("image_path", "image_url", "image_base64"),
    "video": ("video_path", "video_url", "video_base64"),
    "audio": ("wav_path", "wav_url", "wav_base64"),
    "audio_2": ("wav_path_2", "wav_url_2", "wav_base64_2"),
}


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, bytes]:
    names = ["still.png", "still.jpg", "still.webp", "tone.wav", "tone.mp3", "tone.m4a",
             "clip.mp4", "talk.webm"]
    files = generate_samples(tmp_path_factory.mktemp("job-media"), names)
    return {name: path.read_bytes() for name, path in files.items()}


def b64(data: bytes, mime: str | None = None) -> str:
    text = base64.b64encode(data).decode()
    return text if mime is None else f"data:{mime};base64,{text}"


def parse(inp: dict, **overrides) -> "object":
    return parse_job({"input": inp}, replace(SETTINGS, **overrides) if overrides else SETTINGS)


def error(inp, **overrides) -> InputError:
    with pytest.raises(InputError) as info:
        parse(inp, **overrides)
    return info.value


BASE = {"image_path": "/data/face.png", "wav_path": "/data/voice.wav"}


# ---- defaults and shapes ------------------------------------------------------

def test_defaults():
    job = parse(BASE)
    assert (job.spec.input_type, job.spec.person_count) == ("image", "single")
    assert job.spec.prompt == "A person is talking"
    assert (job.spec.width, job.spec.height, job.spec.max_frame) == (512, 512, None)
    assert job.spec.force_offload is True and job.spec.network_volume is False
    assert job.warnings == ()
    assert job.image == MediaSource("image", "image_path", "path", "/data/face.png")
    assert job.audio == MediaSource("audio", "wav_path", "path", "/data/voice.wav")
    assert job.video is None and job.audio_2 is None
    assert job.sources() == [job.image, job.audio]
    params = job.params()
    assert params == {"input_type": "image", "person_count": "single",
                      "prompt": "A person is talking", "width": 512, "height": 512,
                      "max_frame": None, "force_offload": True, "network_volume": False, "seed": 2}
    assert json.loads(json.dumps(params)) == params


def test_bare_input_object_is_accepted():
    assert parse_job(dict(BASE), SETTINGS) == parse(BASE)


def test_keys_outside_input_are_ignored():
    job = parse_job({"id": "runpod-123", "webhook": "x", "input": dict(BASE)}, SETTINGS)
    assert job.warnings == ()


def test_all_params_given():
    job = parse({**BASE, "input_type": "image", "person_count": "single", "prompt": "Hello",
                 "width": 768, "height": 1024, "max_frame": 250, "force_offload": False,
                 "network_volume": True, "seed": 77})
    assert job.params() == {"input_type": "image", "person_count": "single", "prompt": "Hello",
                            "width": 768, "height": 1024, "max_frame": 250,
                            "force_offload": False, "network_volume": True, "seed": 77}


# ---- every media field in every form -------------------------------------------

CONTENT = {"image": ("still.png", "image/png"), "video": ("clip.mp4", "video/mp4"),
           "audio": ("tone.wav", "audio/wav"), "audio_2": ("tone.mp3", "audio/mpeg")}


def _job_for(field: str, key: str, value: str) -> dict:
    inp = {"input_type": "video" if field == "video" else "image",
           "person_count": "multi" if field == "audio_2" else "single"}
    inp["video_path" if field == "video" else "image_path"] = "/data/visual"
    inp["wav_path"] = "/data/voice.wav"
    if field == "audio":
        del inp["wav_path"]
    if field in ("image", "video"):
        del inp[f"{field}_path"]
    inp[key] = value
    return inp


@pytest.mark.parametrize("field", list(SOURCE_KEYS))
@pytest.mark.parametrize("form", ["path", "url", "base64", "data-uri"])
def test_every_field_in_every_form(media, field, form):
    key = SOURCE_KEYS[field][{"path": 0, "url": 1}.get(form, 2)]
    name, mime = CONTENT[field]
    value = {
        "path": f"/data/in/{field}.bin",
        "url": f"https://media.example.com/{field}?token=abc",
        "base64": b64(media[name]),
        "data-uri": b64(media[name], mime),
    }[form]
    job = parse(_job_for(field, key, value))
    source = getattr(job, field)
    assert source == MediaSource(field, key, form.replace("data-uri", "base64"), value)
    assert source in job.sources()
    assert job.warnings == ()


def test_sources_order_video_mode():
    job = parse({"input_type": "video", "person_count": "multi", "video_url": "http://h/v.mp4",
                 "wav_path": "/a.wav", "wav_url_2": "http://h/b.mp3"})
    assert [s.field for s in job.sources()] == ["video", "audio", "audio_2"]
    assert [s.key for s in job.sources()] == ["video_url", "wav_path", "wav_url_2"]


def test_base64_whitespace_and_newlines_tolerated(media):
    text = base64.encodebytes(media["still.png"]).decode()  # 76-character lines
    spaced = "  " + text.replace("\n", "\r\n\t ") + "\n"
    assert parse({"image_base64": spaced, "wav_path": "/a.wav"}).image.value == spaced
    assert parse({"image_base64": "data:image/png;base64,\n" + text,
                  "wav_path": "/a.wav"}).image.form == "base64"


def test_empty_strings_count_as_absent():
    job = parse({"image_path": "/f.png", "image_url": "  ", "image_base64": "", "video_url": "",
                 "wav_path": "/a.wav", "wav_url": None, "wav_base64": "", "wav_url_2": ""})
    assert job.image.key == "image_path" and job.audio.key == "wav_path"
    assert job.warnings == ()  # the empty video_url and wav_url_2 are not "given"


# ---- errors ---------------------------------------------------------------------

def _error_cases(media):
    png, wav = media["still.png"], media["tone.wav"]
    img = {"image_path": "/f.png"}
    aud = {"wav_path": "/a.wav"}
    return [
        # (input, err.field, text in the message)
        ({**aud, "image_base64": "data:image/png,abc"}, "image_base64", "base64"),
        # exactly one source
        ({**aud, "image_url": "https://h/a.png", "image_base64": b64(png)},
         "image_url|image_base64", "image_url and image_base64"),
        ({**img, "wav_path": "/a.wav", "wav_url": "http://h/a.wav"}, "wav_path|wav_url",
         "exactly one"),
        ({**img, "person_count": "multi", **aud, "wav_path_2": "/b", "wav_base64_2": b64(wav)},
         "wav_path_2|wav_base64_2", "wav_path_2 and wav_base64_2"),
        ({"input_type": "video", **aud, "video_path": "/v", "video_url": "http://h/v"},
         "video_path|video_url", "exactly one"),
        # required
        (aud, "image_path|image_url|image_base64", "required for input_type image"),
        ({"input_type": "video", **aud, "image_path": "/f.png"},
         "video_path|video_url|video_base64", "required for input_type video"),
        (img, "wav_path|wav_url|wav_base64", "required"),
        ({**img, "wav_path": ""}, "wav_path|wav_url|wav_base64", "required"),
        # choices
        ({**img, **aud, "input_type": "audio"}, "input_type", "image, video"),
        ({**img, **aud, "input_type": 1}, "input_type", "image, video"),
        ({**img, **aud, "person_count": "three"}, "person_count", "single, multi"),
        # dimensions
        ({**img, **aud, "width": 500}, "width", "multiple of 16"),
        ({**img, **aud, "height": 500}, "height", "multiple of 16"),
        ({**img, **aud, "width": 0}, "width", "positive"),
        ({**img, **aud, "width": -512}, "width", "positive"),
        ({**img, **aud, "width": 4096}, "width", "between 64 and 1920"),
        ({**img, **aud, "height": 48}, "height", "between 64 and 1920"),
        ({**img, **aud, "width": "abc"}, "width", "must be an integer"),
        ({**img, **aud, "width": 512.5}, "width", "must be an integer"),
        ({**img, **aud, "width": True}, "width", "must be an integer"),
        ({**img, **aud, "height": [512]}, "height", "must be an integer"),
        ({**img, **aud, "height": "nan"}, "height", "must be an integer"),
        # max_frame
        ({**img, **aud, "max_frame": 0}, "max_frame", "positive"),
        ({**img, **aud, "max_frame": -5}, "max_frame", "positive"),
        ({**img, **aud, "max_frame": 1.5}, "max_frame", "must be an integer"),
        ({**img, **aud, "max_frame": "abc"}, "max_frame", "must be an integer"),
        ({**img, **aud, "max_frame": True}, "max_frame", "must be an integer"),
        # seed
        ({**img, **aud, "seed": -1}, "seed", "from 0 to 9223372036854775807"),
        ({**img, **aud, "seed": 2**63}, "seed", "from 0 to 9223372036854775807"),
        ({**img, **aud, "seed": 1.5}, "seed", "must be an integer"),
        ({**img, **aud, "seed": "lucky"}, "seed", "must be an integer"),
        ({**img, **aud, "seed": False}, "seed", "must be an integer"),
        # booleans
        ({**img, **aud, "force_offload": "maybe"}, "force_offload", "true or false"),
        ({**img, **aud, "force_offload": 2}, "force_offload", "true or false"),
        ({**img, **aud, "network_volume": "yes please"}, "network_volume", "true or false"),
        ({**img, **aud, "network_volume": []}, "network_volume", "true or false"),
        # prompt
        ({**img, **aud, "prompt": 42}, "prompt", "must be a string"),
        ({**img, **aud, "prompt": ["a"]}, "prompt", "must be a string"),
        ({**img, **aud, "prompt": "x" * 2001}, "prompt", "at most 2000 characters"),
        # source values
        ({**aud, "image_url": "ftp://host/face.png"}, "image_url", "only http and https"),
        ({**aud, "image_url": "file:///etc/passwd"}, "image_url", "only http and https"),
        ({**img, "wav_url": "/local/voice.wav"}, "wav_url", "only http and https"),
        ({**img, "wav_url": "http:///nohost"}, "wav_url", "no host"),
        ({**aud, "image_path": 12}, "image_path", "must be a string"),
        ({**img, "wav_base64": {"data": "x"}}, "wav_base64", "must be a string"),
    ]


def test_error_cases(media):
    cases = _error_cases(media)
    for inp, field, text in cases:
        err = error(inp)
        assert err.field == field, (inp.keys(), err)
        assert text in err.reason, (field, err.reason)
        assert str(err) == f"{field}: {err.reason}"


def test_dimension_limits_come_from_settings():
    assert parse({**BASE, "width": 2048}, max_dimension=2048).spec.width == 2048
    err = error({**BASE, "width": 64}, min_dimension=128)
    assert err.field == "width" and "between 128 and 1920" in err.reason


@pytest.mark.parametrize("given, expected", [
    (512.0, 512), ("512", 512), (" 768 ", 768), ("1024.0", 1024), (64, 64), ("+128", 128),
])
def test_dimension_coercion(given, expected):
    assert parse({**BASE, "width": given, "height": given}).spec.width == expected


@pytest.mark.parametrize("given, expected", [
    (100, 100), (100.0, 100), ("100", 100), (" 7 ", 7), (None, None), ("1e3", 1000),
])
def test_max_frame_coercion(given, expected):
    assert parse({**BASE, "max_frame": given}).spec.max_frame == expected


@pytest.mark.parametrize("given, expected", [
    (True, True), (False, False), ("true", True), ("false", False), ("TRUE", True),
    (" False ", False), (0, False), (1, True), ("0", False), ("1", True),
])
def test_boolean_coercion(given, expected):
    job = parse({**BASE, "force_offload": given, "network_volume": given})
    assert job.spec.force_offload is expected and job.spec.network_volume is expected


def test_choice_normalised_and_null_means_default():
    job = parse({**BASE, "input_type": " IMAGE ", "person_count": "Single", "prompt": None,
                 "width": None})
    assert (job.spec.input_type, job.spec.person_count, job.spec.prompt, job.spec.width) == (
        "image", "single", "A person is talking", 512)


def test_prompt_limit_is_inclusive():
    assert parse({**BASE, "prompt": "y" * 2000}).spec.prompt == "y" * 2000


# ---- warnings ---------------------------------------------------------------------

def test_multi_without_second_track_reuses_the_first():
    job = parse({**BASE, "person_count": "multi"})
    assert job.audio_2 == MediaSource("audio_2", "wav_path", "path", "/data/voice.wav")
    assert job.audio_2 == replace(job.audio, field="audio_2")
    assert [s.field for s in job.sources()] == ["image", "audio", "audio_2"]
    assert len(job.warnings) == 1
    assert "first track is used for both speakers" in job.warnings[0]


def test_multi_with_second_track():
    job = parse({**BASE, "person_count": "multi", "wav_url_2": "https://h/b.wav"})
    assert job.audio_2 == MediaSource("audio_2", "wav_url_2", "url", "https://h/b.wav")
    assert job.warnings == ()


def test_second_track_with_single_is_ignored():
    job = parse({**BASE, "wav_url_2": "https://h/b.wav", "wav_path_2": "/b.wav"})
    assert job.audio_2 is None and job.sources() == [job.image, job.audio]
    assert job.warnings == ("wav_path_2, wav_url_2 ignored: person_count is single",)


def test_source_for_the_other_mode_is_ignored(media):
    job = parse({**BASE, "video_url": "https://h/v.mp4"})
    assert job.video is None
    assert job.warnings == ("video_url ignored: input_type is image",)
    job = parse({"input_type": "video", "video_path": "/v.mp4", "wav_path": "/a.wav",
                 "image_base64": "not even base64", "image_url": "ftp://x"})
    assert job.image is None and job.sources()[0].key == "video_path"
    assert job.warnings == ("image_url, image_base64 ignored: input_type is video",)


def test_unknown_keys_warning():
    """Keys of no field that look like nothing we know: accepted (RunPod clients send
    extras), with one warning naming them."""
    job = parse({**BASE, "steps": 3, "cfg": 1.0, "lora": "x.safetensors"})
    assert job.warnings == ("unknown input keys ignored: cfg, lora, steps",)


@pytest.mark.parametrize("key, meant", [
    ("widht", "width"), ("hieght", "height"), ("Width", "width"), ("image-path", "image_path"),
    ("image_pth", "image_path"), ("IMAGE_URL", "image_url"), ("Network-Volume", "network_volume"),
    ("wav_path_3", "wav_path_2"), ("max_frames", "max_frame"), ("promt", "prompt"), ("speed", "seed"),
])
def test_a_misspelled_field_is_refused_with_the_field_it_resembles(key, meant):
    """A render that silently ignored `widht: 768` would come back at 512: refused before
    anything starts, naming the key and the field it resembles."""
    exc = error({**BASE, key: 768})
    assert exc.field == key
    assert exc.reason == f"unknown field; did you mean {meant}?"
    assert str(exc) == f"{key}: unknown field; did you mean {meant}?"


def test_strict_input_refuses_every_unknown_key():
    inp = {**BASE, "steps": 3, "cfg": 1.0}
    assert parse(inp).warnings  # accepted by default
    exc = error(inp, strict_input=True)
    assert exc.field == "cfg" and "unknown field" in exc.reason and "LONGTALK_STRICT_INPUT" in exc.reason
    assert parse(BASE, strict_input=True).warnings == ()  # known keys only: nothing to refuse


def test_seed_is_part_of_the_spec():
    """The seed (an extension of the RunPod contract) is decided here, once, for every window."""
    job = parse({**BASE, "seed": 2**63 - 1}, window=17, motion=5)
    assert job.warnings == () and job.spec.seed == 2**63 - 1
    assert (job.spec.seed, job.spec.seed_for(3)) == (2**63 - 1, 2**63 + 2)
    assert (job.spec.window, job.spec.motion, job.spec.fps) == (17, 5, 25)
    assert parse({**BASE, "seed": "42"}).spec.seed == 42 and parse({**BASE, "seed": 0}).spec.seed == 0
    assert parse(BASE).spec.seed == 2 == Settings().default_seed  # the old RunPod graphs' seed
    assert parse(BASE, default_seed=1234).spec.seed == 1234  # LONGTALK_DEFAULT_SEED where the job is parsed
    assert parse({**BASE, "seed": 5}, default_seed=1234).spec.seed == 5


def test_the_default_seed_is_a_setting_under_its_new_and_its_old_name():
    assert Settings.from_env({"LONGTALK_DEFAULT_SEED": "77"}).default_seed == 77
    assert Settings.from_env({"LONGTALK_COMFY_SEED": "78"}).default_seed == 78  # a deployment's old variable
    assert Settings.from_env({"LONGTALK_COMFY_SEED": "78", "LONGTALK_DEFAULT_SEED": "77"}).default_seed == 77
    for env in ({"LONGTALK_DEFAULT_SEED": "-1"}, {"LONGTALK_COMFY_SEED": str(2**63)}):
        with pytest.raises(ValueError, match="LONGTALK_DEFAULT_SEED: must be an integer from 0 to"):
            Settings.from_env(env)
    with pytest.raises(ValueError, match="LONGTALK_DEFAULT_SEED: cannot read 'lucky' as int"):
        Settings.from_env({"LONGTALK_COMFY_SEED": "lucky"})


# ---- describe ---------------------------------------------------------------------

def test_describe_is_short_and_safe(media):
    url = MediaSource("image", "image_url", "url",
                      "https://user:pw@cdn.example.com/a/face.png?X-Amz-Signature=SECRET#frag")
    assert url.describe() == "image_url=https://cdn.example.com/a/face.png...(truncated)"
    plain = MediaSource("image", "image_url", "url", "http://h:8080/a.png")
    assert plain.describe() == "image_url=http://h:8080/a.png"
    long_url = MediaSource("image", "image_url", "url", "https://h/" + "p" * 500)
    assert len(long_url.describe()) < 160 and long_url.describe().endswith("(truncated)")
    data = b64(media["still.png"], "image/png")
    inline = MediaSource("image", "image_base64", "base64", data)
    assert inline.describe() == f"image_base64=<data:image/png base64, {len(data)} chars>"
    assert data[30:60] not in inline.describe() and data[30:60] not in repr(inline)
    assert MediaSource("audio", "wav_path", "path", "/a.wav").describe() == "wav_path=/a.wav"


# ---- paths the operator gave (the command line) ----------------------------------------

def test_trusted_paths_are_marked_and_expand_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    inp = {"image_path": "~/face.png", "wav_path": "~/talk.wav", "wav_path_2": "/x/b.wav",
           "person_count": "multi"}
    job = parse_job({"input": inp}, SETTINGS, trusted={"image_path", "wav_path"})
    assert job.image == MediaSource("image", "image_path", "path", f"{tmp_path}/face.png", trusted=True)
    assert job.audio == MediaSource("audio", "wav_path", "path", f"{tmp_path}/talk.wav", trusted=True)
    assert job.audio_2.trusted is False  # not given on the command line: confined
    plain = parse({**BASE, "image_path": "~/face.png"})  # a job document's path: as written
    assert plain.image == MediaSource("image", "image_path", "path", "~/face.png")
    # only paths are ever trusted
    job = parse_job({"input": {"image_url": "https://h/a.png", "wav_path": "/a.wav"}}, SETTINGS,
                    trusted={"image_url"})
    assert job.image.trusted is False and job.image.form == "url"


# ---- the render id ---------------------------------------------------------------------

@pytest.mark.parametrize("good", ["a", "r-0123abcd", "My.Render_1", "9", "a" * RENDER_ID_MAX])
def test_render_id_rule_accepts(good):
    assert is_render_id(good) and check_render_id(good) == good


@pytest.mark.parametrize("bad", ["", "-a", ".a", "_a", "a/b", "a b", "ä", "a" * (RENDER_ID_MAX + 1),
                                 "a\nb", None, 12])
def test_render_id_rule_refuses(bad):
    assert not is_render_id(bad)
    with pytest.raises(InputError) as err:
        check_render_id(bad)
    assert err.value.field == "id" and f"1-{RENDER_ID_MAX} letters" in err.value.reason


def test_the_render_id_rule_is_the_one_comfyui_uploads_use():
    """One rule: every id the client accepts names a valid ComfyUI upload subfolder, and the
    binder refuses what the client refuses."""
    from longtalk.comfy.binder import upload_subfolder

    longest = "a" * RENDER_ID_MAX
    assert upload_subfolder(longest, 3) == f"longtalk/{longest}/w00003"
    with pytest.raises(ValueError, match=f"1-{RENDER_ID_MAX} letters"):
        upload_subfolder(longest + "a", 3)
    # the longest object key a render writes stays far below S3's 1024 bytes
    assert len(f"renders/{longest}/windows/99999/tail_08.png") < 1024


# ---- job files ----------------------------------------------------------------------

def test_load_job_file(tmp_path):
    good = tmp_path / "job.json"
    good.write_text(json.dumps({"input": BASE}))
    assert load_job_file(good) == {"input": BASE}
    assert parse_job(load_job_file(good), SETTINGS).image.key == "image_path"

    bad = tmp_path / "bad.json"
    bad.write_text('{"input": {"image_path": "/x",}}')
    with pytest.raises(InputError) as err:
        load_job_file(bad)
    assert err.value.field == "job" and "not valid JSON" in err.value.reason
    assert "line 1" in err.value.reason

    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    with pytest.raises(InputError) as err:
        load_job_file(array)
    assert err.value.field == "job" and "JSON object" in err.value.reason

    with pytest.raises(InputError) as err:
        load_job_file(tmp_path / "missing.json")
    assert err.value.field == "job" and "not found" in err.value.reason


@pytest.mark.parametrize("obj, field", [
    ([], "job"), ("text", "job"), (None, "job"), ({"input": "x"}, "input"), ({"input": []}, "input"),
])
def test_job_must_be_an_object(obj, field):
    with pytest.raises(InputError) as err:
        parse_job(obj, SETTINGS)
    assert err.value.field == field and "JSON object" in err.value.reason


# ---- name and labels (extension fields: longtalk/inputs/tags.py) ---------------

def test_name_and_labels():
    job = parse({**BASE, "name": "  Quarterly update ", "labels": ["team-a", "lang:en", "client=acme"]})
    assert job.name == "Quarterly update" and job.labels == ("team-a", "lang:en", "client=acme")
    assert not job.warnings  # known fields, not "unknown keys ignored"
    plain = parse(BASE)
    assert plain.name is None and plain.labels == ()
    assert "name" not in plain.params() and "labels" not in plain.params()  # no render parameter


@pytest.mark.parametrize("extra, field", [
    ({"name": 7}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "two\nlines"}, "name"),
    ({"labels": "team-a"}, "labels"),
    ({"labels": [f"l{i}" for i in range(17)]}, "labels"),
    ({"labels": ["ok", "has space"]}, "labels[1]"),
    ({"labels": ["-leading"]}, "labels[0]"),
    ({"labels": ["x" * 41]}, "labels[0]"),
    ({"labels": [3]}, "labels[0]"),
    ({"labels": ["a", "b", "a"]}, "labels"),
])
def test_bad_name_or_labels_name_the_field(extra, field):
    err = error({**BASE, **extra})
    assert err.field == field, (err.field, str(err))
