"""comfy_graphs.tiny_weights: the safetensors writer and the random-weight model files.

The expected names and shapes below are facts read from the pinned loaders (ComfyUI 0.8.0
3cd7b32f, ComfyUI-WanVideoWrapper 60a38757, ComfyUI-MelBandRoFormer b40e2632) and the real
architectures, written out here independently of the module's builders.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from comfy_graphs import tiny_weights as tw
from comfy_graphs.tiny_weights import plan_tiny_weights, read_safetensors_header, write_tiny_weights
from longtalk.comfy.config import MODEL_FOLDERS, ModelFiles

slow = pytest.mark.skipif(os.environ.get("LONGTALK_SLOW_TESTS") != "1",
                          reason="writes ~2 GB; set LONGTALK_SLOW_TESTS=1")

MODELS = ModelFiles()
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}
SMALL_FIELDS = ("diffusion_model", "lora", "vae", "text_encoder")


@pytest.fixture(scope="module")
def plan() -> dict:
    return plan_tiny_weights()


def rel(field: str) -> str:
    return f"{MODEL_FOLDERS[field]}/{getattr(MODELS, field)}"


def shapes(plan: dict, field: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v[1]) for k, v in plan[rel(field)].items()}


def dtypes(plan: dict, field: str) -> dict[str, str]:
    return {k: v[0] for k, v in plan[rel(field)].items()}


# --- independent decoders --------------------------------------------------------------------

def fp8_value(code: int) -> float:
    """float8_e4m3fn by its definition: 1 sign, 4 exponent (bias 7), 3 mantissa, no inf."""
    sign = -1.0 if code & 0x80 else 1.0
    exp, mant = (code >> 3) & 0xF, code & 7
    if exp == 0xF and mant == 7:
        return float("nan")
    if exp == 0:
        return sign * mant / 8 * 2.0 ** -6
    return sign * (1 + mant / 8) * 2.0 ** (exp - 7)


FP8_TABLE = np.array([fp8_value(c) for c in range(256)])


def read_tensor(path: Path, name: str) -> np.ndarray:
    header = read_safetensors_header(path)
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    info = header[name]
    start, end = info["data_offsets"]
    with open(path, "rb") as f:
        f.seek(8 + n + start)
        raw = f.read(end - start)
    if info["dtype"] == "F32":
        out = np.frombuffer(raw, "<f4").astype(np.float64)
    elif info["dtype"] == "F16":
        out = np.frombuffer(raw, "<f2").astype(np.float64)
    elif info["dtype"] == "BF16":
        out = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    elif info["dtype"] == "F8_E4M3":
        out = FP8_TABLE[np.frombuffer(raw, np.uint8)]
    else:
        raise AssertionError(info["dtype"])
    return out.reshape(info["shape"])


def check_layout(path: Path) -> dict:
    """Header length a multiple of 8, offsets contiguous from 0, file size exact."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    assert n % 8 == 0
    tensors = sorted((v["data_offsets"], k, v) for k, v in header.items() if k != "__metadata__")
    offset = 0
    for (start, end), name, info in tensors:
        assert start == offset, name
        assert end - start == int(np.prod(info["shape"], dtype=np.int64)) * ITEMSIZE[info["dtype"]], name
        offset = end
    assert path.stat().st_size == 8 + n + offset
    return header


# --- the writer --------------------------------------------------------------------------------

def test_fp8_encoder_is_exact_on_every_code_and_never_nan():
    finite = [c for c in range(256) if not np.isnan(FP8_TABLE[c]) and c != 0x80]
    codes = np.frombuffer(tw.encode(FP8_TABLE[finite].astype(np.float32), "F8_E4M3"), np.uint8)
    assert list(codes) == finite
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(200_000) * scale for scale in (1e-4, 0.02, 1, 100, 1e4)])
    x = np.concatenate([x, [np.inf, -np.inf, np.nan, 448, 464, -500, 2.0 ** -10, 3 * 2.0 ** -10]])
    codes = np.frombuffer(tw.encode(x.astype(np.float32), "F8_E4M3"), np.uint8)
    assert not np.isin(codes, [0x7F, 0xFF]).any()
    back = FP8_TABLE[codes]
    ok = np.isfinite(x) & (np.abs(x) <= 448)
    # round to nearest: error at most half a step (2**-10 subnormal, 1/16 relative normal)
    tol = np.maximum(np.abs(x[ok]) / 16, 2.0 ** -10)
    assert (np.abs(back[ok] - x[ok]) <= tol + 1e-12).all()
    assert (np.abs(back[~ok & ~np.isnan(x)]) == 448).all()  # saturates
    # ties go to the even code: 1 + 1/16 is between 1 (0x38) and 1.125 (0x39)
    assert tw.encode(np.array([1.0625, 1.1875], np.float32), "F8_E4M3") == bytes([0x38, 0x3A])


def test_bf16_and_fp16_round_trip():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(10_000) * 3).astype(np.float32)
    bf = (np.frombuffer(tw.encode(x, "BF16"), "<u2").astype(np.uint32) << 16).view(np.float32)
    assert np.allclose(bf, x, rtol=2.0 ** -8, atol=0)
    assert tw.encode(np.array([1.0, -2.0], np.float32), "BF16") == bytes([0x80, 0x3F, 0x00, 0xC0])
    f16 = np.frombuffer(tw.encode(x, "F16"), "<f2")
    assert np.allclose(f16, x, rtol=2.0 ** -11, atol=0)


def test_writer_round_trip(tmp_path):
    specs = {
        "a.f32": tw.TensorSpec("F32", (3, 2), "values", values=(1, 2, 3, 4, 5, 6)),
        "b.f16": tw.TensorSpec("F16", (4,), "values", values=(0.5, -1, 2, 65504)),
        "c.bf16": tw.TensorSpec("BF16", (2, 2), "values", values=(1, -2, 0.15625, 3e38)),
        "d.fp8": tw.TensorSpec("F8_E4M3", (5,), "values", values=(0.5, -448, 1000, 2.0 ** -9, 0.3)),
        "e.ones": tw.TensorSpec("BF16", (7,), "ones"),
        "f.zeros": tw.TensorSpec("F8_E4M3", (3, 3), "zeros"),
        "g.scalar": tw.TensorSpec("F32", (), "values", values=(0.04,)),
        "h.normal": tw.TensorSpec("F32", (1000,), "normal", std=0.02),
    }
    path = tmp_path / "x.safetensors"
    assert tw.write_safetensors(path, specs, seed=5)
    header = check_layout(path)
    assert header["__metadata__"]["seed"] == "5"
    assert {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"} == \
        {k: (s.dtype, s.shape) for k, s in specs.items()}
    assert read_tensor(path, "a.f32").tolist() == [[1, 2], [3, 4], [5, 6]]
    assert read_tensor(path, "b.f16").tolist() == [0.5, -1, 2, 65504]
    assert read_tensor(path, "c.bf16")[0].tolist() == [1, -2]
    assert read_tensor(path, "c.bf16")[1, 0] == 0.15625
    assert read_tensor(path, "d.fp8").tolist() == [0.5, -448, 448, 2.0 ** -9, 0.3125]
    assert read_tensor(path, "e.ones").tolist() == [1] * 7
    assert not read_tensor(path, "f.zeros").any()
    assert read_tensor(path, "g.scalar").shape == ()
    normal = read_tensor(path, "h.normal")
    assert 0.015 < normal.std() < 0.025 and abs(normal.mean()) < 0.005
    # same header (tensors and seed): left alone
    assert not tw.write_safetensors(path, specs, seed=5)
    assert tw.write_safetensors(path, specs, seed=6)


# --- the files and what the pinned loaders read --------------------------------------------------

def test_plan_covers_the_fetch_list(plan):
    assert set(plan) == {f"{folder}/{name}" for folder, name in MODELS.fetch_list()}
    assert len(plan) == 9
    for tensors in plan.values():
        for name, (dtype, shape) in tensors.items():
            assert dtype in ITEMSIZE and all(isinstance(d, int) and d > 0 for d in shape), name
    other = ModelFiles(vae="other_vae.safetensors")
    assert "vae/other_vae.safetensors" in plan_tiny_weights(other)


def test_wan_transformer(plan):
    s, d = shapes(plan, "diffusion_model"), dtypes(plan, "diffusion_model")
    assert s["patch_embedding.weight"] == (96, 36, 1, 2, 2)
    width = s["patch_embedding.weight"][0]  # what WanVideoModelLoader infers
    assert width not in (5120, 3072, 4096)  # -> 12 heads, 30 layers
    assert width % 12 == 0 and (width // 12) % 2 == 0
    assert {int(k.split(".")[1]) for k in s if k.startswith("blocks.")} == set(range(30))
    assert "blocks.0.cross_attn.k_img.weight" in s  # the loader's i2v marker
    assert s["img_emb.proj.0.weight"] == (1280,)
    assert s["img_emb.proj.1.weight"] == (1280, 1280)
    assert s["img_emb.proj.3.weight"] == (96, 1280)
    assert s["blocks.0.ffn.0.bias"] == (256,)
    assert s["blocks.29.ffn.2.weight"] == (96, 256)
    assert s["blocks.0.self_attn.k.weight"] == (96, 96)
    assert s["blocks.7.modulation"] == (1, 6, 96)
    assert s["time_embedding.0.weight"] == (96, 256)
    assert s["time_projection.1.weight"] == (576, 96)
    assert s["head.head.weight"] == (64, 96)  # 16 latent channels x 1x2x2 patch
    assert s["head.modulation"] == (1, 2, 96)
    # the text embedding takes the (64-wide) umt5 output
    assert s["text_embedding.0.weight"] == (96, shapes(plan, "text_encoder")["norm.weight"][0])
    assert len(s) == 23 + 30 * 32
    # plain fp8 (quantization "fp8_e4m3fn"): no scale keys, no marker, no audio parts
    assert not any(k.endswith((".scale_weight", ".weight_scale")) or k == "scaled_fp8" for k in s)
    assert not any("audio" in k for k in s)
    assert d["blocks.3.cross_attn.v_img.weight"] == "F8_E4M3"
    assert d["blocks.3.ffn.0.weight"] == "F8_E4M3"


@pytest.mark.parametrize("field", ["infinitetalk_single", "infinitetalk_multi"])
def test_infinitetalk_adapter(plan, field):
    s, d = shapes(plan, field), dtypes(plan, field)
    assert s["audio_proj.proj1.weight"] == (512, 5 * 12 * 768)
    assert s["audio_proj.proj1_vf.weight"] == (512, 8 * 12 * 768)
    assert s["audio_proj.proj2.weight"] == (512, 512)
    assert s["audio_proj.proj3.weight"] == (32 * 768, 512)
    assert s["audio_proj.norm.weight"] == (768,)
    for i in range(30):
        assert s[f"blocks.{i}.norm_x.weight"] == (96,)
        assert s[f"blocks.{i}.audio_cross_attn.q_linear.weight"] == (96, 96)
        assert s[f"blocks.{i}.audio_cross_attn.kv_linear.weight"] == (192, 768)
        assert s[f"blocks.{i}.audio_cross_attn.proj.weight"] == (96, 96)
    assert "blocks.30.norm_x.weight" not in s
    assert "blocks.0.audio_cross_attn.q_norm.weight" not in s  # would pick the LongCat path
    assert len(s) == 14 + 30 * 11
    # scaled fp8: every fp8 weight has a scalar ".scale_weight" next to it
    fp8 = [k for k, v in d.items() if v == "F8_E4M3"]
    assert len(fp8) == 4 + 30 * 3
    for k in fp8:
        scale = k[: -len(".weight")] + ".scale_weight"
        assert d[scale] == "F32" and s[scale] == ()
    assert not any(k.endswith(".comfy_quant") for k in s)


def test_lora_pairs_match_the_transformer(plan):
    lora, wan = shapes(plan, "lora"), shapes(plan, "diffusion_model")
    linears = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
               "cross_attn.k", "cross_attn.v", "cross_attn.o", "cross_attn.k_img",
               "cross_attn.v_img", "ffn.0", "ffn.2"]
    assert len(lora) == 30 * len(linears) * 3
    for i in range(30):
        for name in linears:
            out_dim, in_dim = wan[f"blocks.{i}.{name}.weight"]
            key = f"diffusion_model.blocks.{i}.{name}"
            assert lora[f"{key}.lora_down.weight"] == (4, in_dim)
            assert lora[f"{key}.lora_up.weight"] == (out_dim, 4)
            assert lora[f"{key}.alpha"] == ()
    assert lora["diffusion_model.blocks.0.ffn.0.lora_up.weight"] == (256, 4)
    assert set(dtypes(plan, "lora").values()) == {"BF16"}


def test_light_vae(plan):
    s = shapes(plan, "vae")
    assert s["decoder.conv1.bias"] == (96,)  # WanVideoVAELoader: 96 -> lightVAE, pruning 0.75
    assert s["conv2.weight"] == (16, 16, 1, 1, 1)  # 16 latent channels: Wan 2.1 VAE
    assert s["conv1.weight"] == (32, 32, 1, 1, 1)
    # a quarter of the full VAE's widths (96, 192, 384 / decoder 384, 192, 96)
    assert s["encoder.conv1.weight"] == (24, 3, 3, 3, 3)
    assert s["encoder.downsamples.3.shortcut.weight"] == (48, 24, 1, 1, 1)
    assert s["encoder.downsamples.2.resample.1.weight"] == (24, 24, 3, 3)
    assert "encoder.downsamples.2.time_conv.weight" not in s  # downsample2d
    assert s["encoder.downsamples.5.time_conv.weight"] == (48, 48, 3, 1, 1)
    assert s["encoder.middle.1.to_qkv.weight"] == (288, 96, 1, 1)
    assert s["encoder.head.2.weight"] == (32, 96, 3, 3, 3)
    assert s["decoder.middle.0.residual.0.gamma"] == (96, 1, 1, 1)
    assert s["decoder.upsamples.3.resample.1.weight"] == (48, 96, 3, 3)
    assert s["decoder.upsamples.3.time_conv.weight"] == (192, 96, 3, 1, 1)
    assert s["decoder.upsamples.4.shortcut.weight"] == (96, 48, 1, 1, 1)
    assert s["decoder.upsamples.11.resample.1.weight"] == (24, 48, 3, 3)
    assert "decoder.upsamples.11.time_conv.weight" not in s  # upsample2d
    assert s["decoder.head.2.weight"] == (3, 24, 3, 3, 3)
    assert max(int(k.split(".")[2]) for k in s if k.startswith("encoder.downsamples.")) == 10
    assert max(int(k.split(".")[2]) for k in s if k.startswith("decoder.upsamples.")) == 14
    assert not any(k.startswith("model.") for k in s)  # the loader adds the prefix
    assert set(dtypes(plan, "vae").values()) == {"BF16"}


def test_umt5(plan):
    s = shapes(plan, "text_encoder")
    assert s["token_embedding.weight"] == (256384, 64)
    assert {int(k.split(".")[1]) for k in s if k.startswith("blocks.")} == set(range(24))
    # the skeleton's attention is 64 heads x 64 whatever the residual width: q/k/v 64 -> 4096
    assert s["blocks.0.attn.q.weight"] == (4096, 64) and s["blocks.0.attn.v.weight"] == (4096, 64)
    assert s["blocks.23.attn.o.weight"] == (64, 4096)
    assert s["blocks.5.ffn.gate.0.weight"] == (64, 64)
    assert s["blocks.5.ffn.fc2.weight"] == (64, 64)
    assert s["blocks.11.pos_embedding.embedding.weight"] == (32, 64)  # 32 buckets x 64 heads
    assert s["norm.weight"] == (64,)
    assert len(s) == 2 + 24 * 10
    assert "scaled_fp8" not in s  # the T5 loader refuses scaled fp8
    assert set(dtypes(plan, "text_encoder").values()) == {"F8_E4M3"}


def test_clip_vision_h(plan):
    s = shapes(plan, "clip_vision")
    assert s["vision_model.embeddings.patch_embedding.weight"] == (1280, 3, 14, 14)
    assert s["vision_model.embeddings.position_embedding.weight"] == (257, 1280)
    assert s["vision_model.embeddings.class_embedding"] == (1280,)
    assert s["vision_model.pre_layrnorm.weight"] == (1280,)
    assert s["vision_model.encoder.layers.31.self_attn.q_proj.weight"] == (1280, 1280)
    assert s["vision_model.encoder.layers.0.mlp.fc1.weight"] == (5120, 1280)
    assert s["vision_model.encoder.layers.0.mlp.fc2.weight"] == (1280, 5120)
    assert s["vision_model.post_layernorm.bias"] == (1280,)
    assert s["visual_projection.weight"] == (1024, 1280)
    # ComfyUI picks the H config from layer 30 being there and layer 47 not
    assert "vision_model.encoder.layers.30.layer_norm1.weight" in s
    assert "vision_model.encoder.layers.32.layer_norm1.weight" not in s
    assert len(s) == 3 + 2 + 32 * 16 + 2 + 1
    assert sum(int(np.prod(v)) for v in s.values()) == 632_076_800


def test_wav2vec2_base(plan):
    s = shapes(plan, "wav2vec")
    p = "wav2vec2."
    assert all(k.startswith(p) for k in s)
    assert s[p + "feature_extractor.conv_layers.0.conv.weight"] == (512, 1, 10)
    for i in (1, 2, 3, 4):
        assert s[p + f"feature_extractor.conv_layers.{i}.conv.weight"] == (512, 512, 3)
    for i in (5, 6):
        assert s[p + f"feature_extractor.conv_layers.{i}.conv.weight"] == (512, 512, 2)
    assert p + "feature_extractor.conv_layers.0.conv.bias" not in s  # conv_bias false
    assert s[p + "feature_extractor.conv_layers.0.layer_norm.weight"] == (512,)  # group norm
    assert p + "feature_extractor.conv_layers.1.layer_norm.weight" not in s
    assert s[p + "feature_projection.projection.weight"] == (768, 512)
    assert s[p + "encoder.pos_conv_embed.conv.weight_v"] == (768, 48, 128)
    assert s[p + "encoder.pos_conv_embed.conv.weight_g"] == (1, 1, 128)
    assert s[p + "masked_spec_embed"] == (768,)
    assert {int(k.split(".")[3]) for k in s if k.startswith(p + "encoder.layers.")} == set(range(12))
    assert s[p + "encoder.layers.11.attention.out_proj.weight"] == (768, 768)
    assert s[p + "encoder.layers.0.feed_forward.intermediate_dense.weight"] == (3072, 768)
    assert s[p + "encoder.layers.0.feed_forward.output_dense.weight"] == (768, 3072)
    assert len(s) == 9 + 4 + 1 + 3 + 2 + 12 * 16
    assert sum(int(np.prod(v)) for v in s.values()) == 94_371_712
    assert set(dtypes(plan, "wav2vec").values()) == {"F16"}


# STFT bins per mel band of librosa.filters.mel(sr=44100, n_fft=2048, n_mels=60) > 0, with the
# two corner bins MelBandRoformer forces on (checked against librosa itself).
MEL_BAND_BINS = [7, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 9, 9, 9, 10, 10, 11, 13,
                 13, 13, 15, 16, 17, 19, 20, 20, 22, 24, 26, 28, 29, 31, 33, 36, 39, 41, 44, 47,
                 50, 54, 57, 61, 66, 71, 76, 80, 86, 93, 99, 105, 113, 122, 130]


def test_mel_band_roformer(plan):
    s = shapes(plan, "vocal_model")
    assert len(MEL_BAND_BINS) == 60 and sum(MEL_BAND_BINS) == 1979
    assert tw.mel_band_bins() == MEL_BAND_BINS
    for b, bins in enumerate(MEL_BAND_BINS):
        d_in = bins * 2 * 2  # complex x stereo
        assert s[f"band_split.to_features.{b}.0.gamma"] == (d_in,)
        assert s[f"band_split.to_features.{b}.1.weight"] == (384, d_in)
        assert s[f"mask_estimators.0.to_freqs.{b}.0.0.weight"] == (1536, 384)
        assert s[f"mask_estimators.0.to_freqs.{b}.0.2.weight"] == (1536, 1536)
        assert s[f"mask_estimators.0.to_freqs.{b}.0.4.weight"] == (2 * d_in, 1536)
    assert "band_split.to_features.60.0.gamma" not in s
    for i in range(6):
        for j in (0, 1):  # time, freq transformer, one layer each
            a = f"layers.{i}.{j}.layers.0.0"
            assert s[f"{a}.to_qkv.weight"] == (1536, 384)
            assert s[f"{a}.to_gates.weight"] == (8, 384)
            assert s[f"{a}.to_out.0.weight"] == (384, 512)
            assert s[f"{a}.rotary_embed.freqs"] == (32,)
            assert s[f"layers.{i}.{j}.layers.0.1.net.1.weight"] == (1536, 384)
            assert s[f"layers.{i}.{j}.norm.gamma"] == (384,)
            assert f"layers.{i}.{j}.layers.1.0.norm.gamma" not in s
    assert "layers.6.0.norm.gamma" not in s
    assert len(s) == 12 * 12 + 60 * 3 + 60 * 6


# --- writing -----------------------------------------------------------------------------------

def test_write_small_files_end_to_end(tmp_path, plan):
    lines: list[str] = []
    paths = write_tiny_weights(tmp_path, only=SMALL_FIELDS, progress=lines.append)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [rel(f) for f in SMALL_FIELDS]
    for field, path in zip(SMALL_FIELDS, paths):
        header = check_layout(path)
        got = {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}
        assert got == {k: (dt, tuple(sh)) for k, (dt, sh) in plan[rel(field)].items()}
        assert header["__metadata__"]["seed"] == "0"
    wan = paths[0]
    assert np.isfinite(read_tensor(wan, "blocks.0.self_attn.q.weight")).all()
    assert (read_tensor(wan, "blocks.0.self_attn.norm_q.weight") == 1).all()
    assert not read_tensor(wan, "blocks.0.self_attn.q.bias").any()
    q = read_tensor(wan, "blocks.0.cross_attn.q.weight")
    assert 0.01 < q.std() < 0.03
    vae = paths[2]
    assert (read_tensor(vae, "decoder.head.0.gamma") == 1).all()
    alpha = read_tensor(paths[1], "diffusion_model.blocks.0.ffn.2.alpha")
    assert alpha.shape == () and alpha == 4
    assert any("written" in line for line in lines)
    # a re-run leaves matching files alone
    mtimes = [p.stat().st_mtime_ns for p in paths]
    lines.clear()
    assert write_tiny_weights(tmp_path, only=SMALL_FIELDS, progress=lines.append) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert sum("up to date" in line for line in lines) == len(paths)


def test_scaled_fp8_adapter_file(tmp_path):
    (path,) = write_tiny_weights(tmp_path, only=["infinitetalk_single"])
    check_layout(path)
    scale = read_tensor(path, "blocks.3.audio_cross_attn.kv_linear.scale_weight")
    codes = read_tensor(path, "blocks.3.audio_cross_attn.kv_linear.weight")
    assert scale.shape == () and scale > 0
    weight = codes * scale  # what CustomLinear computes
    assert np.isfinite(codes).all() and 0.01 < weight.std() < 0.03
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    start, end = header["audio_proj.proj1.weight"]["data_offsets"]
    data = np.frombuffer(raw, np.uint8, count=end - start, offset=8 + n + start)
    assert not np.isin(data, [0x7F, 0xFF]).any()


def test_deterministic(tmp_path):
    a = write_tiny_weights(tmp_path / "a", only=SMALL_FIELDS, seed=0)
    b = write_tiny_weights(tmp_path / "b", only=SMALL_FIELDS, seed=0)
    c = write_tiny_weights(tmp_path / "c", only=SMALL_FIELDS, seed=1)
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
        assert pa.stat().st_size == pc.stat().st_size


@slow
def test_write_everything(tmp_path, plan):
    paths = write_tiny_weights(tmp_path)
    assert len(paths) == 9
    total = 0
    for path in paths:
        header = check_layout(path)
        key = path.relative_to(tmp_path).as_posix()
        got = {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}
        assert got == {k: (dt, tuple(sh)) for k, (dt, sh) in plan[key].items()}
        total += path.stat().st_size
    assert 1.9e9 < total < 2.2e9
    freqs = read_tensor(tmp_path / rel("vocal_model"), "layers.0.0.layers.0.0.rotary_embed.freqs")
    assert np.allclose(freqs, 1 / 10000 ** (np.arange(0, 64, 2) / 64), rtol=1e-3)
