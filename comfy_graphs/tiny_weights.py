"""Random-weight model files of the right architectures, for checking a ComfyUI image on a CPU.

An operator checks a ComfyUI image (custom nodes installed, graphs valid, every node runs)
without downloading ~30 GB of real weights: `write_tiny_weights(models_dir)` writes every file
of `ModelFiles().fetch_list()` under its configured name, with the tensor names, shapes and
dtypes the pinned loaders read, filled with seeded random numbers (numpy only, no torch).
Wired into `python -m comfy_graphs doctor --tiny-weights DIR`.

Matched against these pinned sources (the loader that reads each file is named next to each
architecture's constants below):

    ComfyUI 0.8.0                3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce  (clip_vision)
    ComfyUI-WanVideoWrapper      60a387579e2e1c96591598e4caf3465a7aaaf443  (Wan, InfiniteTalk,
                                 LoRA, VAE, umt5, wav2vec2)
    ComfyUI-MelBandRoFormer      b40e263224778ec417114d91d8b3b39934e30de5  (vocal model)
    ComfyUI-KJNodes              955a93b230c5e2130316beb5d502fc46685b6670  (no weights)
    ComfyUI-VideoHelperSuite     993082e4f2473bf4acaf06f51e33877a7eb38960  (no weights)

Where a loader infers the architecture from the tensors, the files are shrunk: a Wan I2V
transformer 96 wide (12 heads x 8, the loader's fallback of 30 layers), FFN 256; InfiniteTalk
audio cross-attention at that width; a rank-4 LoRA; the "lightVAE" (75% channel pruning) Wan
2.1 VAE; a 64-wide umt5 encoder. Where the loader fixes the architecture (CLIP vision H,
wav2vec2 base, MelBandRoFormer, the InfiniteTalk audio projection, umt5's vocabulary and
relative-position table) the real shapes are written.

Sizes on disk with the default settings (all nine files, 2,139,219,374 bytes, ~2.1 GB; about
a minute on one CPU core):

    clip_vision/clip_vision_h.safetensors                      1264 MB  (fp16, 632 M values)
    diffusion_models/MelBandRoformer_fp16.safetensors           457 MB  (fp16)
    wav2vec2/wav2vec2-chinese-base_fp16.safetensors             189 MB  (fp16)
    diffusion_models/Wan2_1-InfiniteTalk-{Single,Multi}_...      79 MB each (scaled fp8)
    text_encoders/umt5-xxl-enc-fp8_e4m3fn.safetensors            42 MB  (fp8)
    vae/Wan2_1_VAE_bf16.safetensors                              16 MB  (bf16, lightVAE)
    diffusion_models/Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors  12 MB  (fp8 + f32)
    loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16      1 MB  (bf16)

Files are written in the safetensors format (8-byte little-endian header length, a JSON
header padded with spaces to a multiple of 8, then the raw little-endian data), tensor by
tensor in chunks so memory stays low. A file that already exists with the same header (same
tensors and same seed) is left alone, so re-runs are cheap.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Collection, Iterator

import numpy as np

from longtalk.comfy.config import MODEL_FOLDERS, ModelFiles

__all__ = [
    "plan_tiny_weights",
    "write_tiny_weights",
    "read_safetensors_header",
    "write_safetensors",
    "encode",
    "decode",
]

# ---------------------------------------------------------------------------------------------
# Pinned facts. Each group names the loader (at the pinned commits above) that reads the file.
# ---------------------------------------------------------------------------------------------

# Wan 2.1 transformer, WanVideoModelLoader (ComfyUI-WanVideoWrapper nodes_model_loading.py):
# the width is patch_embedding.weight.shape[0], in_channels its shape[1]; widths other than
# 5120 / 3072 / 4096 get 12 heads and 30 layers; "blocks.0.cross_attn.k_img.weight" makes the
# model i2v, whose img_emb (MLPProj) takes 1280-wide CLIP-H features; ffn width from
# blocks.0.ffn.0.bias. Parameters are copied in without a shape check, so text_embedding takes
# the umt5 output width (UMT5_WIDTH below).
WAN_WIDTH = 96
WAN_HEADS = 12  # fixed by the loader for this width; head dim 8 (rope split 4/2/2)
WAN_LAYERS = 30  # fixed by the loader for this width
WAN_FFN = 256
WAN_IN_CHANNELS = 36  # 16 noise + 4 mask + 16 image latent channels: i2v
WAN_OUT_CHANNELS = 16
WAN_PATCH = (1, 2, 2)
WAN_FREQ_DIM = 256  # sinusoidal time embedding width, fixed in the loader's config
CLIP_IMAGE_DIM = 1280  # MLPProj(1280, dim), fixed in WanModel for i2v
WAN_I2V_MARKER = "blocks.0.cross_attn.k_img.weight"

# InfiniteTalk adapter, MultiTalkModelLoader + WanVideoModelLoader (multitalk/nodes.py,
# multitalk/multitalk.py): AudioProjModel(seq_len=5, seq_len_vf=5+4-1, blocks=12,
# channels=768, intermediate_dim=512, output_dim=768, context_tokens=32,
# norm_output_audio=True) under "audio_proj." (renamed to multitalk_audio_proj.), and per block
# norm_x (LayerNorm with affine) + audio_cross_attn = SingleStreamMultiAttention(dim, 768 wide
# audio tokens, qkv bias, no q/k norm). Scaled fp8: the loader collects every key ending in
# ".scale_weight" (".weight_scale" is renamed to it) as a per-layer scalar that CustomLinear
# multiplies into its fp8 weight.
AUDIO_WINDOW = 5
AUDIO_VAE_SCALE = 4
AUDIO_BLOCKS = 12  # wav2vec2 hidden states per frame
AUDIO_CHANNELS = 768  # wav2vec2 width
AUDIO_INTERMEDIATE = 512
AUDIO_CONTEXT_TOKENS = 32
AUDIO_OUTPUT_DIM = 768
SCALE_SUFFIX = ".scale_weight"

# lightx2v LoRA, WanVideoLoraSelect -> ComfyUI comfy.lora.load_lora via the wrapper's key map:
# "diffusion_model.<module>.lora_up.weight" [out, rank], ".lora_down.weight" [rank, in] and an
# optional ".alpha" scalar, for every block linear of the transformer.
LORA_RANK = 4
LORA_PREFIX = "diffusion_model."
WAN_BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                     "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
                     "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")

# Wan 2.1 VAE, WanVideoVAELoader (wanvideo/wan_video_vae.py): "model." is prepended when
# missing; decoder.conv1.bias of width 96 means lightVAE (pruning_rate 0.75, every channel
# count a quarter of the full VAE's); conv2.weight.shape[0] == 16 picks the Wan 2.1 VAE.
# load_state_dict is strict.
VAE_BASE_DIM = 96
VAE_Z_DIM = 16
VAE_DIM_MULT = (1, 2, 4, 4)
VAE_NUM_RES_BLOCKS = 2
VAE_TEMPORAL_DOWNSAMPLE = (False, True, True)
VAE_PRUNING_RATE = 0.75

# umt5-xxl encoder, WanVideoTextEncodeCached / LoadWanVideoT5TextEncoder (wanvideo/modules/
# t5.py): a fixed 24-layer skeleton (64 heads, 32 relative-position buckets per layer, vocab
# 256384) into which the tensors are copied without shape checks; "token_embedding.weight"
# marks the native key format.
UMT5_WIDTH = 64
UMT5_FFN = 64
UMT5_LAYERS = 24
UMT5_HEADS = 64
# The attention width is not taken from the tensors: the skeleton views q/k/v as 64 heads of
# 64 (dim_attn 4096), so q, k, v map the residual to 4096 and o maps 4096 back (a 64-wide
# q/k/v makes the attention see 1/64 of the tokens and fail against the position bias).
UMT5_ATTN = 4096
UMT5_BUCKETS = 32
UMT5_VOCAB = 256384

# CLIP vision H, ComfyUI CLIPVisionLoader (comfy/clip_vision.py, clip_vision_config_h.json,
# clip_model.py): "vision_model.encoder.layers.30.layer_norm1.weight" without layer 47 selects
# the H config: 1280 wide, 32 layers, 16 heads, MLP 5120, patch 14 at 224 px, projection 1024.
CLIP_H_WIDTH = 1280
CLIP_H_LAYERS = 32
CLIP_H_MLP = 5120
CLIP_H_PATCH = 14
CLIP_H_IMAGE = 224
CLIP_H_PROJECTION = 1024

# wav2vec2 base, Wav2VecModelLoader (multitalk/nodes.py with multitalk/wav2vec2_config.json):
# a transformers Wav2Vec2Model built from the shipped config; every named parameter is read
# as "wav2vec2." + name, the weight-normed positional conv as weight_g / weight_v.
# Config: conv_dim 7 x 512, kernels 10,3,3,3,3,2,2, conv_bias false, group norm on the first
# conv, hidden 768, 12 layers, intermediate 3072, 128-tap positional conv in 16 groups,
# mask_time_prob 0.05 > 0 (so masked_spec_embed exists).
WAV2VEC_PREFIX = "wav2vec2."
WAV2VEC_CONV_DIMS = (512,) * 7
WAV2VEC_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC_HIDDEN = 768
WAV2VEC_LAYERS = 12
WAV2VEC_INTERMEDIATE = 3072
WAV2VEC_POS_KERNEL = 128
WAV2VEC_POS_GROUPS = 16

# MelBandRoFormer, MelBandRoFormerModelLoader (nodes.py, model/mel_band_roformer.py): a fixed
# config (dim 384, depth 6, one time and one freq transformer layer each, 60 mel bands, 8 heads
# of 64, stereo, mask estimator depth 2, 2048-point STFT at 44.1 kHz), load_state_dict strict.
# The band input widths come from librosa's Slaney mel filter bank (reproduced below).
MELBAND_DIM = 384
MELBAND_DEPTH = 6
MELBAND_TIME_DEPTH = 1
MELBAND_FREQ_DEPTH = 1
MELBAND_BANDS = 60
MELBAND_HEADS = 8
MELBAND_DIM_HEAD = 64
MELBAND_FF_MULT = 4
MELBAND_MASK_DEPTH = 2
MELBAND_MLP_EXPANSION = 4
MELBAND_SAMPLE_RATE = 44100
MELBAND_N_FFT = 2048
MELBAND_STEREO = True
ROTARY_THETA = 10000.0  # rotary_embedding_torch default; its `freqs` is a saved parameter

# ---------------------------------------------------------------------------------------------
# Tensor specs
# ---------------------------------------------------------------------------------------------

DTYPES = ("F32", "F16", "BF16", "F8_E4M3")
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}
WEIGHT_STD = 0.02
CHUNK = 1 << 22  # values generated and encoded at a time (16 MB of float32)
FORMAT_NAME = "longtalk-tiny-weights"


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]
    init: str = "normal"  # "normal" (N(0, std)), "ones", "zeros", "values"
    std: float = WEIGHT_STD
    values: tuple[float, ...] | None = None  # init == "values"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _ITEMSIZE[self.dtype]


Specs = dict[str, TensorSpec]


def _normal(dtype: str, *shape: int, std: float = WEIGHT_STD) -> TensorSpec:
    return TensorSpec(dtype, tuple(shape), "normal", std)


def _ones(dtype: str, *shape: int) -> TensorSpec:
    return TensorSpec(dtype, tuple(shape), "ones")


def _zeros(dtype: str, *shape: int) -> TensorSpec:
    return TensorSpec(dtype, tuple(shape), "zeros")


def _value(dtype: str, value: float) -> TensorSpec:
    return TensorSpec(dtype, (), "values", values=(float(value),))


def _linear(specs: Specs, name: str, out_dim: int, in_dim: int, dtype: str, *,
            bias: bool = True, bias_dtype: str | None = None) -> None:
    specs[f"{name}.weight"] = _normal(dtype, out_dim, in_dim)
    if bias:
        specs[f"{name}.bias"] = _zeros(bias_dtype or dtype, out_dim)


def _attention_projections(s: Specs, prefix: str, width: int, dtype: str) -> None:
    """q/k/v/out projections of a transformers-style attention block (CLIP, wav2vec2)."""
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        _linear(s, f"{prefix}.{name}", width, width, dtype)


def _layer_norm(specs: Specs, name: str, dim: int, dtype: str, *, bias: bool = True) -> None:
    specs[f"{name}.weight"] = _ones(dtype, dim)
    if bias:
        specs[f"{name}.bias"] = _zeros(dtype, dim)


# ---------------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------------

def wan_i2v_transformer(width: int = WAN_WIDTH, layers: int = WAN_LAYERS, ffn: int = WAN_FFN,
                        in_channels: int = WAN_IN_CHANNELS, text_dim: int = UMT5_WIDTH,
                        image_dim: int = CLIP_IMAGE_DIM, freq_dim: int = WAN_FREQ_DIM,
                        out_channels: int = WAN_OUT_CHANNELS, patch: tuple[int, int, int] = WAN_PATCH,
                        weight_dtype: str = "F8_E4M3", other_dtype: str = "F32") -> Specs:
    """Wan 2.1 I2V transformer: block linears in fp8 (like the _fp8_e4m3fn files), rest f32."""
    s: Specs = {}
    s["patch_embedding.weight"] = _normal(other_dtype, width, in_channels, *patch)
    s["patch_embedding.bias"] = _zeros(other_dtype, width)
    _linear(s, "text_embedding.0", width, text_dim, other_dtype)
    _linear(s, "text_embedding.2", width, width, other_dtype)
    _linear(s, "time_embedding.0", width, freq_dim, other_dtype)
    _linear(s, "time_embedding.2", width, width, other_dtype)
    _linear(s, "time_projection.1", 6 * width, width, other_dtype)
    for i in range(layers):
        b = f"blocks.{i}"
        s[f"{b}.modulation"] = _normal(other_dtype, 1, 6, width)
        for name in ("q", "k", "v", "o"):
            _linear(s, f"{b}.self_attn.{name}", width, width, weight_dtype, bias_dtype=other_dtype)
        s[f"{b}.self_attn.norm_q.weight"] = _ones(other_dtype, width)
        s[f"{b}.self_attn.norm_k.weight"] = _ones(other_dtype, width)
        _layer_norm(s, f"{b}.norm3", width, other_dtype)  # cross_attn_norm=True
        for name in ("q", "k", "v", "o", "k_img", "v_img"):
            _linear(s, f"{b}.cross_attn.{name}", width, width, weight_dtype, bias_dtype=other_dtype)
        for name in ("norm_q", "norm_k", "norm_k_img"):
            s[f"{b}.cross_attn.{name}.weight"] = _ones(other_dtype, width)
        _linear(s, f"{b}.ffn.0", ffn, width, weight_dtype, bias_dtype=other_dtype)
        _linear(s, f"{b}.ffn.2", width, ffn, weight_dtype, bias_dtype=other_dtype)
    _linear(s, "head.head", out_channels * math.prod(patch), width, other_dtype)
    s["head.modulation"] = _normal(other_dtype, 1, 2, width)
    _layer_norm(s, "img_emb.proj.0", image_dim, other_dtype)
    _linear(s, "img_emb.proj.1", image_dim, image_dim, other_dtype)
    _linear(s, "img_emb.proj.3", width, image_dim, other_dtype)
    _layer_norm(s, "img_emb.proj.4", width, other_dtype)
    return s


def _scaled_fp8_linear(specs: Specs, name: str, out_dim: int, in_dim: int, std: float = WEIGHT_STD) -> None:
    # fp8 codes carry weight / scale; the scale brings them back (std 0.02 -> codes near 0.5).
    scale = std / 0.5
    specs[f"{name}.weight"] = _normal("F8_E4M3", out_dim, in_dim, std=std / scale)
    specs[f"{name}{SCALE_SUFFIX}"] = _value("F32", scale)
    specs[f"{name}.bias"] = _zeros("F32", out_dim)


def infinitetalk_adapter(width: int = WAN_WIDTH, layers: int = WAN_LAYERS,
                         audio_window: int = AUDIO_WINDOW, vae_scale: int = AUDIO_VAE_SCALE,
                         audio_blocks: int = AUDIO_BLOCKS, audio_channels: int = AUDIO_CHANNELS,
                         intermediate: int = AUDIO_INTERMEDIATE, context_tokens: int = AUDIO_CONTEXT_TOKENS,
                         output_dim: int = AUDIO_OUTPUT_DIM) -> Specs:
    """InfiniteTalk adapter as scaled fp8 (like the _fp8_e4m3fn_scaled_KJ files)."""
    s: Specs = {}
    window_vf = audio_window + vae_scale - 1
    _scaled_fp8_linear(s, "audio_proj.proj1", intermediate, audio_window * audio_blocks * audio_channels)
    _scaled_fp8_linear(s, "audio_proj.proj1_vf", intermediate, window_vf * audio_blocks * audio_channels)
    _scaled_fp8_linear(s, "audio_proj.proj2", intermediate, intermediate)
    _scaled_fp8_linear(s, "audio_proj.proj3", context_tokens * output_dim, intermediate)
    _layer_norm(s, "audio_proj.norm", output_dim, "F32")
    for i in range(layers):
        b = f"blocks.{i}"
        _layer_norm(s, f"{b}.norm_x", width, "F32")
        _scaled_fp8_linear(s, f"{b}.audio_cross_attn.q_linear", width, width)
        _scaled_fp8_linear(s, f"{b}.audio_cross_attn.kv_linear", 2 * width, output_dim)
        _scaled_fp8_linear(s, f"{b}.audio_cross_attn.proj", width, width)
    return s


def wan_block_linear_dims(width: int = WAN_WIDTH, ffn: int = WAN_FFN) -> dict[str, tuple[int, int]]:
    """(out, in) of every block linear of the Wan I2V transformer."""
    dims = {name: (width, width) for name in WAN_BLOCK_LINEARS}
    dims["ffn.0"] = (ffn, width)
    dims["ffn.2"] = (width, ffn)
    return dims


def wan_lora(width: int = WAN_WIDTH, layers: int = WAN_LAYERS, ffn: int = WAN_FFN,
             rank: int = LORA_RANK, dtype: str = "BF16") -> Specs:
    """lightx2v-style LoRA: lora_down / lora_up / alpha for every block linear."""
    s: Specs = {}
    for i in range(layers):
        for name, (out_dim, in_dim) in wan_block_linear_dims(width, ffn).items():
            key = f"{LORA_PREFIX}blocks.{i}.{name}"
            s[f"{key}.lora_down.weight"] = _normal(dtype, rank, in_dim)
            s[f"{key}.lora_up.weight"] = _normal(dtype, out_dim, rank)
            s[f"{key}.alpha"] = _value(dtype, rank)  # alpha / rank = 1
    return s


def _vae_stages(s: Specs, prefix: str, dims: list[int], blocks: int, resample_modes: list[str], dtype: str,
                halved_after_resample: bool = False) -> None:
    """The residual blocks of each stage, numbered on, with a resample between stages."""
    idx = 0
    stages = len(dims) - 1
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        if halved_after_resample and i > 0:  # the previous stage's upsample halved the channels
            in_dim //= 2
        for _ in range(blocks):
            _vae_residual(s, f"{prefix}.{idx}", in_dim, out_dim, dtype)
            in_dim = out_dim
            idx += 1
        if i != stages - 1:
            _vae_resample(s, f"{prefix}.{idx}", out_dim, resample_modes[i], dtype)
            idx += 1


def _vae_middle(s: Specs, prefix: str, dim: int, dtype: str) -> None:
    _vae_residual(s, f"{prefix}.0", dim, dim, dtype)
    _vae_attention(s, f"{prefix}.1", dim, dtype)
    _vae_residual(s, f"{prefix}.2", dim, dim, dtype)


def _vae_residual(s: Specs, name: str, in_dim: int, out_dim: int, dtype: str) -> None:
    s[f"{name}.residual.0.gamma"] = _ones(dtype, in_dim, 1, 1, 1)
    s[f"{name}.residual.2.weight"] = _normal(dtype, out_dim, in_dim, 3, 3, 3)
    s[f"{name}.residual.2.bias"] = _zeros(dtype, out_dim)
    s[f"{name}.residual.3.gamma"] = _ones(dtype, out_dim, 1, 1, 1)
    s[f"{name}.residual.6.weight"] = _normal(dtype, out_dim, out_dim, 3, 3, 3)
    s[f"{name}.residual.6.bias"] = _zeros(dtype, out_dim)
    if in_dim != out_dim:
        s[f"{name}.shortcut.weight"] = _normal(dtype, out_dim, in_dim, 1, 1, 1)
        s[f"{name}.shortcut.bias"] = _zeros(dtype, out_dim)


def _vae_attention(s: Specs, name: str, dim: int, dtype: str) -> None:
    s[f"{name}.norm.gamma"] = _ones(dtype, dim, 1, 1)
    s[f"{name}.to_qkv.weight"] = _normal(dtype, 3 * dim, dim, 1, 1)
    s[f"{name}.to_qkv.bias"] = _zeros(dtype, 3 * dim)
    s[f"{name}.proj.weight"] = _normal(dtype, dim, dim, 1, 1)
    s[f"{name}.proj.bias"] = _zeros(dtype, dim)


def _vae_resample(s: Specs, name: str, dim: int, mode: str, dtype: str) -> None:
    if mode.startswith("upsample"):
        s[f"{name}.resample.1.weight"] = _normal(dtype, dim // 2, dim, 3, 3)
        s[f"{name}.resample.1.bias"] = _zeros(dtype, dim // 2)
        if mode == "upsample3d":
            s[f"{name}.time_conv.weight"] = _normal(dtype, 2 * dim, dim, 3, 1, 1)
            s[f"{name}.time_conv.bias"] = _zeros(dtype, 2 * dim)
    else:
        s[f"{name}.resample.1.weight"] = _normal(dtype, dim, dim, 3, 3)
        s[f"{name}.resample.1.bias"] = _zeros(dtype, dim)
        if mode == "downsample3d":
            s[f"{name}.time_conv.weight"] = _normal(dtype, dim, dim, 3, 1, 1)
            s[f"{name}.time_conv.bias"] = _zeros(dtype, dim)


def vae_channel_widths(base: int = VAE_BASE_DIM, dim_mult: tuple[int, ...] = VAE_DIM_MULT,
                       pruning_rate: float = VAE_PRUNING_RATE) -> tuple[list[int], list[int]]:
    """(encoder widths, decoder widths) as the VAE computes them after pruning."""
    enc = [int(base * u * (1 - pruning_rate)) for u in (1, *dim_mult)]
    dec = [int(base * u * (1 - pruning_rate)) for u in (dim_mult[-1], *dim_mult[::-1])]
    return enc, dec


def wan21_vae(base: int = VAE_BASE_DIM, z_dim: int = VAE_Z_DIM, dim_mult: tuple[int, ...] = VAE_DIM_MULT,
              num_res_blocks: int = VAE_NUM_RES_BLOCKS,
              temporal_downsample: tuple[bool, ...] = VAE_TEMPORAL_DOWNSAMPLE,
              pruning_rate: float = VAE_PRUNING_RATE, dtype: str = "BF16") -> Specs:
    """Wan 2.1 VAE (lightVAE at pruning 0.75), keys without the "model." prefix."""
    s: Specs = {}
    enc, dec = vae_channel_widths(base, dim_mult, pruning_rate)
    # encoder
    s["encoder.conv1.weight"] = _normal(dtype, enc[0], 3, 3, 3, 3)
    s["encoder.conv1.bias"] = _zeros(dtype, enc[0])
    _vae_stages(s, "encoder.downsamples", enc, num_res_blocks,
                ["downsample3d" if t else "downsample2d" for t in temporal_downsample], dtype)
    mid = enc[-1]
    _vae_middle(s, "encoder.middle", mid, dtype)
    s["encoder.head.0.gamma"] = _ones(dtype, mid, 1, 1, 1)
    s["encoder.head.2.weight"] = _normal(dtype, 2 * z_dim, mid, 3, 3, 3)
    s["encoder.head.2.bias"] = _zeros(dtype, 2 * z_dim)
    # latent 1x1 convs
    s["conv1.weight"] = _normal(dtype, 2 * z_dim, 2 * z_dim, 1, 1, 1)
    s["conv1.bias"] = _zeros(dtype, 2 * z_dim)
    s["conv2.weight"] = _normal(dtype, z_dim, z_dim, 1, 1, 1)
    s["conv2.bias"] = _zeros(dtype, z_dim)
    # decoder
    temporal_upsample = temporal_downsample[::-1]
    s["decoder.conv1.weight"] = _normal(dtype, dec[0], z_dim, 3, 3, 3)
    s["decoder.conv1.bias"] = _zeros(dtype, dec[0])
    _vae_middle(s, "decoder.middle", dec[0], dtype)
    # the decoder has one more residual block per stage, and each upsample halves the channels
    _vae_stages(s, "decoder.upsamples", dec, num_res_blocks + 1,
                ["upsample3d" if t else "upsample2d" for t in temporal_upsample], dtype, halved_after_resample=True)
    s["decoder.head.0.gamma"] = _ones(dtype, dec[-1], 1, 1, 1)
    s["decoder.head.2.weight"] = _normal(dtype, 3, dec[-1], 3, 3, 3)
    s["decoder.head.2.bias"] = _zeros(dtype, 3)
    return s


def umt5_encoder(width: int = UMT5_WIDTH, ffn: int = UMT5_FFN, layers: int = UMT5_LAYERS,
                 heads: int = UMT5_HEADS, buckets: int = UMT5_BUCKETS, vocab: int = UMT5_VOCAB,
                 attn: int = UMT5_ATTN, dtype: str = "F8_E4M3") -> Specs:
    """umt5-xxl encoder in the wrapper's native key format (one position table per layer)."""
    s: Specs = {"token_embedding.weight": _normal(dtype, vocab, width, std=0.5)}
    for i in range(layers):
        b = f"blocks.{i}"
        s[f"{b}.norm1.weight"] = _ones(dtype, width)
        for name in ("q", "k", "v"):
            s[f"{b}.attn.{name}.weight"] = _normal(dtype, attn, width, std=0.125)
        s[f"{b}.attn.o.weight"] = _normal(dtype, width, attn, std=0.0156)
        s[f"{b}.norm2.weight"] = _ones(dtype, width)
        s[f"{b}.ffn.gate.0.weight"] = _normal(dtype, ffn, width, std=0.125)
        s[f"{b}.ffn.fc1.weight"] = _normal(dtype, ffn, width, std=0.125)
        s[f"{b}.ffn.fc2.weight"] = _normal(dtype, width, ffn, std=0.125)
        s[f"{b}.pos_embedding.embedding.weight"] = _normal(dtype, buckets, heads, std=0.125)
    s["norm.weight"] = _ones(dtype, width)
    return s


def clip_vision_h(width: int = CLIP_H_WIDTH, layers: int = CLIP_H_LAYERS, mlp: int = CLIP_H_MLP,
                  patch: int = CLIP_H_PATCH, image: int = CLIP_H_IMAGE,
                  projection: int = CLIP_H_PROJECTION, dtype: str = "F16") -> Specs:
    """CLIP ViT-H/14 vision tower in transformers' names, as ComfyUI's clip_vision reads it."""
    s: Specs = {}
    v = "vision_model"
    s[f"{v}.embeddings.class_embedding"] = _normal(dtype, width)
    s[f"{v}.embeddings.patch_embedding.weight"] = _normal(dtype, width, 3, patch, patch)
    s[f"{v}.embeddings.position_embedding.weight"] = _normal(dtype, (image // patch) ** 2 + 1, width)
    _layer_norm(s, f"{v}.pre_layrnorm", width, dtype)
    for i in range(layers):
        b = f"{v}.encoder.layers.{i}"
        _layer_norm(s, f"{b}.layer_norm1", width, dtype)
        _attention_projections(s, f"{b}.self_attn", width, dtype)
        _layer_norm(s, f"{b}.layer_norm2", width, dtype)
        _linear(s, f"{b}.mlp.fc1", mlp, width, dtype)
        _linear(s, f"{b}.mlp.fc2", width, mlp, dtype)
    _layer_norm(s, f"{v}.post_layernorm", width, dtype)
    s["visual_projection.weight"] = _normal(dtype, projection, width)
    return s


def wav2vec2_base(conv_dims: tuple[int, ...] = WAV2VEC_CONV_DIMS,
                  conv_kernels: tuple[int, ...] = WAV2VEC_CONV_KERNELS, hidden: int = WAV2VEC_HIDDEN,
                  layers: int = WAV2VEC_LAYERS, intermediate: int = WAV2VEC_INTERMEDIATE,
                  pos_kernel: int = WAV2VEC_POS_KERNEL, pos_groups: int = WAV2VEC_POS_GROUPS,
                  dtype: str = "F16") -> Specs:
    """wav2vec2 base (group-norm feature extractor, post-norm encoder) under "wav2vec2."."""
    s: Specs = {}
    p = WAV2VEC_PREFIX
    in_dim = 1
    for i, (out_dim, kernel) in enumerate(zip(conv_dims, conv_kernels)):
        conv = f"{p}feature_extractor.conv_layers.{i}.conv.weight"
        s[conv] = _normal(dtype, out_dim, in_dim, kernel, std=0.1)
        if i == 0:  # feat_extract_norm "group": GroupNorm on the first conv only
            _layer_norm(s, f"{p}feature_extractor.conv_layers.0.layer_norm", out_dim, dtype)
        in_dim = out_dim
    _layer_norm(s, f"{p}feature_projection.layer_norm", conv_dims[-1], dtype)
    _linear(s, f"{p}feature_projection.projection", hidden, conv_dims[-1], dtype)
    s[f"{p}masked_spec_embed"] = _normal(dtype, hidden)
    s[f"{p}encoder.pos_conv_embed.conv.weight_g"] = _ones(dtype, 1, 1, pos_kernel)
    s[f"{p}encoder.pos_conv_embed.conv.weight_v"] = _normal(dtype, hidden, hidden // pos_groups, pos_kernel)
    s[f"{p}encoder.pos_conv_embed.conv.bias"] = _zeros(dtype, hidden)
    _layer_norm(s, f"{p}encoder.layer_norm", hidden, dtype)
    for i in range(layers):
        b = f"{p}encoder.layers.{i}"
        _attention_projections(s, f"{b}.attention", hidden, dtype)
        _layer_norm(s, f"{b}.layer_norm", hidden, dtype)
        _linear(s, f"{b}.feed_forward.intermediate_dense", intermediate, hidden, dtype)
        _linear(s, f"{b}.feed_forward.output_dense", hidden, intermediate, dtype)
        _layer_norm(s, f"{b}.final_layer_norm", hidden, dtype)
    return s


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa.hz_to_mel with htk=False)."""
    freq = np.asanyarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = freq >= min_log_hz
    mels = np.where(log_t, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    return np.where(log_t, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_band_bins(sample_rate: int = MELBAND_SAMPLE_RATE, n_fft: int = MELBAND_N_FFT,
                  num_bands: int = MELBAND_BANDS) -> list[int]:
    """STFT bins per mel band, as MelBandRoformer derives them from librosa.filters.mel.

    The Slaney filter bank (fmin 0, fmax sr/2, slaney norm), made binary with > 0, with the
    first bin of the first band and the last bin of the last band forced on, as the model does.
    """
    n_freqs = 1 + n_fft // 2
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), num_bands + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((num_bands, n_freqs), dtype=np.float32)
    for i in range(num_bands):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:num_bands + 2] - mel_f[:num_bands]))[:, None]
    weights[0, 0] = 1.0
    weights[-1, -1] = 1.0
    in_band = weights > 0
    if not in_band.any(axis=0).all():
        raise AssertionError("mel bands do not cover every STFT bin")
    return [int(n) for n in in_band.sum(axis=1)]


def mel_band_roformer(dim: int = MELBAND_DIM, depth: int = MELBAND_DEPTH,
                      time_depth: int = MELBAND_TIME_DEPTH, freq_depth: int = MELBAND_FREQ_DEPTH,
                      num_bands: int = MELBAND_BANDS, heads: int = MELBAND_HEADS,
                      dim_head: int = MELBAND_DIM_HEAD, ff_mult: int = MELBAND_FF_MULT,
                      mask_depth: int = MELBAND_MASK_DEPTH, mlp_expansion: int = MELBAND_MLP_EXPANSION,
                      stereo: bool = MELBAND_STEREO, dtype: str = "F16") -> Specs:
    """MelBandRoformer state dict (rotary freqs written with their real values)."""
    s: Specs = {}
    inner = heads * dim_head
    exponents = np.arange(0, dim_head, 2)[: dim_head // 2] / dim_head
    rotary = tuple(float(f) for f in 1.0 / ROTARY_THETA ** exponents)
    for i in range(depth):
        for j, n_layers in enumerate((time_depth, freq_depth)):
            t = f"layers.{i}.{j}"
            for k in range(n_layers):
                a = f"{t}.layers.{k}.0"
                s[f"{a}.norm.gamma"] = _ones(dtype, dim)
                s[f"{a}.to_qkv.weight"] = _normal(dtype, 3 * inner, dim)
                _linear(s, f"{a}.to_gates", heads, dim, dtype)
                s[f"{a}.to_out.0.weight"] = _normal(dtype, dim, inner)
                s[f"{a}.rotary_embed.freqs"] = TensorSpec(dtype, (len(rotary),), "values", values=rotary)
                f = f"{t}.layers.{k}.1"
                s[f"{f}.net.0.gamma"] = _ones(dtype, dim)
                _linear(s, f"{f}.net.1", dim * ff_mult, dim, dtype)
                _linear(s, f"{f}.net.4", dim, dim * ff_mult, dtype)
            s[f"{t}.norm.gamma"] = _ones(dtype, dim)
    channels = 2 if stereo else 1
    band_inputs = [2 * n * channels for n in mel_band_bins(num_bands=num_bands)]
    for b, d_in in enumerate(band_inputs):
        s[f"band_split.to_features.{b}.0.gamma"] = _ones(dtype, d_in)
        _linear(s, f"band_split.to_features.{b}.1", dim, d_in, dtype)
    hidden = dim * mlp_expansion
    for b, d_in in enumerate(band_inputs):
        m = f"mask_estimators.0.to_freqs.{b}.0"
        widths = (dim, *(hidden,) * mask_depth, 2 * d_in)
        for layer, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            _linear(s, f"{m}.{2 * layer}", w_out, w_in, dtype)
    return s


# ModelFiles field -> architecture builder.
BUILDERS: dict[str, Callable[[], Specs]] = {
    "diffusion_model": wan_i2v_transformer,
    "infinitetalk_single": infinitetalk_adapter,
    "infinitetalk_multi": infinitetalk_adapter,
    "lora": wan_lora,
    "vae": wan21_vae,
    "text_encoder": umt5_encoder,
    "clip_vision": clip_vision_h,
    "wav2vec": wav2vec2_base,
    "vocal_model": mel_band_roformer,
}


def _files(models: ModelFiles, only: Collection[str] | None = None) -> dict[str, str]:
    """"folder/file" -> ModelFiles field, for every file of fetch_list() (first field wins)."""
    unknown = set(only or ()) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown model fields: {', '.join(sorted(unknown))}")
    wanted = set(models.fetch_list())
    out: dict[str, str] = {}
    for f in fields(models):
        pair = (MODEL_FOLDERS[f.name], getattr(models, f.name))
        if pair in wanted and (only is None or f.name in only):
            out.setdefault(f"{pair[0]}/{pair[1]}", f.name)
    return out


def _specs(models: ModelFiles | None = None, only: Collection[str] | None = None) -> dict[str, Specs]:
    models = models or ModelFiles()
    return {rel: BUILDERS[field]() for rel, field in _files(models, only).items()}


def plan_tiny_weights(models: ModelFiles | None = None) -> dict[str, dict[str, tuple[str, tuple[int, ...]]]]:
    """"folder/file" -> {tensor name: (safetensors dtype, shape)} for every file to write."""
    return {rel: {name: (t.dtype, t.shape) for name, t in specs.items()}
            for rel, specs in _specs(models).items()}


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

FP8_MAX = 448.0  # largest finite float8_e4m3fn; 0x7F / 0xFF are NaN and never written
_FP8_MAX_BITS = np.float32(FP8_MAX).view(np.uint32)
_FP8_MIN_NORMAL_BITS = np.float32(2.0 ** -6).view(np.uint32)


def _fp8_e4m3fn_codes(x: np.ndarray) -> np.ndarray:
    """float32 -> float8_e4m3fn codes, round to nearest even, saturating at +-448.

    Works on the float32 bit patterns: magnitudes (inf and NaN included) are clamped to 448,
    so the NaN codes 0x7F / 0xFF never come out.
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    sign = (u >> 24).astype(np.uint8) & np.uint8(0x80)
    a = np.minimum(u & np.uint32(0x7FFFFFFF), _FP8_MAX_BITS)
    # normal range: drop 20 mantissa bits with ties-to-even, rebias the exponent (127 -> 7)
    normal = ((a + np.uint32(0x7FFFF) + ((a >> 20) & np.uint32(1))) >> 20) - np.uint32(120 << 3)
    # subnormal range: multiples of 2**-9 (a result of 8 is the smallest normal, code 0x08)
    sub = np.rint(a.view(np.float32) * np.float32(512.0)).astype(np.uint32)
    return np.where(a >= _FP8_MIN_NORMAL_BITS, normal, sub).astype(np.uint8) | sign


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def encode(x: np.ndarray, dtype: str) -> bytes:
    """float values -> little-endian bytes of a safetensors dtype."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        return _bf16_bits(x).tobytes()
    if dtype == "F8_E4M3":
        return _fp8_e4m3fn_codes(x).tobytes()
    raise ValueError(f"unsupported dtype {dtype}")


def decode(data: bytes, dtype: str) -> np.ndarray:
    """little-endian bytes of a safetensors dtype -> float32 values."""
    if dtype == "F32":
        return np.frombuffer(data, "<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(data, "<f2").astype(np.float32)
    if dtype == "BF16":
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "F8_E4M3":
        codes = np.frombuffer(data, np.uint8)
        exp = (codes >> 3) & 0xF
        mant = (codes & 7).astype(np.float32)
        mag = np.where(exp == 0, mant * 2.0 ** -9, (1 + mant / 8) * np.exp2(exp.astype(np.float32) - 7))
        mag = np.where((codes & 0x7F) == 0x7F, np.nan, mag)
        return np.where(codes & 0x80, -mag, mag).astype(np.float32)
    raise ValueError(f"unsupported dtype {dtype}")


# ---------------------------------------------------------------------------------------------
# safetensors writing
# ---------------------------------------------------------------------------------------------

def _header_bytes(specs: Specs, metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for name in sorted(specs):
        t = specs[name]
        if t.dtype not in _ITEMSIZE:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _chunks(spec: TensorSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    n = spec.numel
    if spec.init == "values":
        values = np.asarray(spec.values, dtype=np.float32)
        if values.size != n:
            raise ValueError(f"{values.size} values for a tensor of {n}")
        yield values
        return
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        if spec.init == "normal":
            yield rng.standard_normal(size, dtype=np.float32) * np.float32(spec.std)
        elif spec.init == "ones":
            yield np.ones(size, dtype=np.float32)
        elif spec.init == "zeros":
            yield np.zeros(size, dtype=np.float32)
        else:
            raise ValueError(f"unknown init {spec.init!r}")


def _tensor_rng(seed: int, rel: str, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(rel.encode()), zlib.crc32(name.encode())])


def read_safetensors_header(path: Path | str) -> dict:
    """The parsed JSON header of a safetensors file (with "__metadata__" if present)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path}: implausible header length {n}")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError(f"{path}: truncated header")
    return json.loads(raw.decode("utf-8"))


def _data_size(header: dict) -> int:
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return max(ends, default=0)


def _up_to_date(path: Path, header: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            if f.read(len(header)) != header:
                return False
    except OSError:
        return False
    expected = len(header) + _data_size(json.loads(header[8:].decode("utf-8")))
    return path.stat().st_size == expected


def write_safetensors(path: Path, specs: Specs, *, seed: int = 0, rel: str | None = None,
                      metadata: dict[str, str] | None = None) -> bool:
    """Write one file from its specs; False when an identical file (same header) is there."""
    path = Path(path)
    rel = rel or path.name
    meta = {"format": "pt", "generator": FORMAT_NAME, "seed": str(seed)}
    meta.update(metadata or {})
    header = _header_bytes(specs, meta)
    if _up_to_date(path, header):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for name in sorted(specs):
                spec = specs[name]
                rng = _tensor_rng(seed, rel, name)
                for chunk in _chunks(spec, rng):
                    f.write(encode(chunk, spec.dtype))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


def write_tiny_weights(root: Path, models: ModelFiles | None = None, *, seed: int = 0,
                       progress: Callable[[str], None] | None = None,
                       only: Collection[str] | None = None) -> list[Path]:
    """Write root/<folder>/<file> for every file of fetch_list() (or the `only` fields).

    Returns the paths (written or already up to date). `progress` gets one line per file.
    """
    root = Path(root)
    models = models or ModelFiles()
    paths: list[Path] = []
    for rel, specs in _specs(models, only).items():
        path = root / rel
        size = len(_header_bytes(specs, {})) + sum(t.nbytes for t in specs.values())
        if progress:
            progress(f"{rel}: {len(specs)} tensors, {size / 1e6:.1f} MB ...")
        written = write_safetensors(path, specs, seed=seed, rel=rel)
        if progress:
            progress(f"{rel}: {'written' if written else 'up to date'}")
        paths.append(path)
    return paths
