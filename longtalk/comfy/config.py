"""Typed settings for the ComfyUI graphs: which model files, how to sample, where overrides live.

Every field can be set from the environment as `LONGTALK_COMFY_<FIELD NAME IN CAPITALS>`,
for example `LONGTALK_COMFY_STEPS=8` or `LONGTALK_COMFY_DIFFUSION_MODEL=other.safetensors`.
`GraphConfig.from_env()` is the only place that reads the environment, and only the entry
points call it (worker.py for a GPU worker, the comfy_graphs commands); everything else
receives a GraphConfig. A value outside what the pinned node packs accept fails there,
naming its variable and the allowed values. (A job's seed is no graph setting: its default
is the client's LONGTALK_DEFAULT_SEED, longtalk.settings.)

The defaults are the old RunPod worker's choices (its seed graphs), except where a
per-window graph needs something else (attention `sdpa`, loudness normalisation off because
whole tracks are normalised upstream). `MODEL_FOLDERS` says which ComfyUI `models/` folder
each file is looked up in; `ModelFiles.fetch_list()` is the deployment's download list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from ..settings import values_from_env
from .modes import MODES, parse_modes

ENV_PREFIX = "LONGTALK_COMFY_"
GRAPHS_DIR_ENV = ENV_PREFIX + "GRAPHS_DIR"
MODES_ENV = ENV_PREFIX + "MODES"

# ComfyUI models/ subfolder of each ModelFiles field (the loader nodes' folder_paths names).
MODEL_FOLDERS: dict[str, str] = {
    "diffusion_model": "diffusion_models",  # WanVideoModelLoader
    "infinitetalk_single": "diffusion_models",  # MultiTalkModelLoader
    "infinitetalk_multi": "diffusion_models",  # MultiTalkModelLoader
    "lora": "loras",  # WanVideoLoraSelect
    "vae": "vae",  # WanVideoVAELoader
    "text_encoder": "text_encoders",  # WanVideoTextEncodeCached
    "clip_vision": "clip_vision",  # CLIPVisionLoader
    "wav2vec": "wav2vec2",  # Wav2VecModelLoader (a local file, no hub download)
    "vocal_model": "diffusion_models",  # MelBandRoFormerModelLoader
}

# The choices of the node inputs these settings fill, as ComfyUI-WanVideoWrapper 1.4.6 (the
# node pack pinned by docker/comfyui/Dockerfile) lists them in its schema
# (tests/fixtures/comfy_schema.json; tests/test_comfy_graphs.py checks they are equal).
SCHEDULERS = (  # WanVideoSampler.scheduler
    "unipc", "unipc/beta", "dpm++", "dpm++/beta", "dpm++_sde", "dpm++_sde/beta", "euler", "euler/beta",
    "longcat_distill_euler", "deis", "lcm", "lcm/beta", "res_multistep", "er_sde", "flowmatch_causvid",
    "flowmatch_distill", "flowmatch_pusa", "multitalk", "sa_ode_stable", "rcm", "vibt_unipc",
)
ATTENTION_MODES = (  # WanVideoModelLoader.attention_mode
    "sdpa", "flash_attn_2", "flash_attn_3", "sageattn", "sageattn_3", "radial_sage_attention",
    "sageattn_compiled", "sageattn_ultravico", "comfy",
)
BASE_PRECISIONS = ("fp32", "bf16", "fp16", "fp16_fast")  # WanVideoModelLoader.base_precision
QUANTIZATIONS = (  # WanVideoModelLoader.quantization
    "disabled", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e4m3fn_scaled", "fp8_e4m3fn_scaled_fast", "fp8_e5m2",
    "fp8_e5m2_fast", "fp8_e5m2_scaled", "fp8_e5m2_scaled_fast",
)
# The backend's colour correction (longtalk.backends.comfyui.color_match) implements one
# method: each channel's mean and standard deviation moved to the reference's. "disabled" = off.
COLOR_MATCH_METHODS = ("disabled", "meanstd")
MULTI_AUDIO_TYPES = ("para",)


@dataclass(frozen=True)
class ModelFiles:
    """File names as ComfyUI lists them in the loader nodes (relative to the model folder)."""

    diffusion_model: str = "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors"
    infinitetalk_single: str = "Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors"
    infinitetalk_multi: str = "Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors"
    lora: str = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
    vae: str = "Wan2_1_VAE_bf16.safetensors"
    text_encoder: str = "umt5-xxl-enc-fp8_e4m3fn.safetensors"
    clip_vision: str = "clip_vision_h.safetensors"
    wav2vec: str = "wav2vec2-chinese-base_fp16.safetensors"
    vocal_model: str = "MelBandRoformer_fp16.safetensors"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"model file {f.name} must be a non-empty file name, got {value!r}")
        for name in ("infinitetalk_single", "infinitetalk_multi"):
            # MultiTalkModelLoader picks the model type from the name: "InfiniteTalk" when it
            # contains "infinite", else "MultiTalk" (and the per-window tail pinning is
            # InfiniteTalk-only).
            if "infinite" not in getattr(self, name).lower():
                raise ValueError(f"{name} must be an InfiniteTalk file (its name must contain "
                                 f"'infinite'), got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "ModelFiles":
        """From the given variables (GraphConfig.from_env passes the environment)."""
        return cls(**_values_from_env(cls, environ))

    def infinitetalk(self, multi: bool) -> str:
        return self.infinitetalk_multi if multi else self.infinitetalk_single

    def folder_of(self, name: str) -> str:
        """The models/ subfolder of a field, e.g. folder_of("lora") == "loras"."""
        return MODEL_FOLDERS[name]

    def path_of(self, name: str) -> str:
        """models/-relative path of a field's file, for error messages: "loras/<file>"."""
        return f"{MODEL_FOLDERS[name]}/{getattr(self, name)}"

    def fetch_list(self, multi: bool | None = None, vocal_separation: bool = True) -> list[tuple[str, str]]:
        """(models/ subfolder, file name) of every file a deployment must install.

        multi=None lists both InfiniteTalk files; True/False only the one that mode needs.
        """
        names = [f.name for f in fields(self)]
        if multi is True:
            names.remove("infinitetalk_single")
        elif multi is False:
            names.remove("infinitetalk_multi")
        if not vocal_separation:
            names.remove("vocal_model")
        return [(MODEL_FOLDERS[n], getattr(self, n)) for n in names]


@dataclass(frozen=True)
class SamplerSettings:
    """How each window is sampled; one value for the whole render (loaders stay cached)."""

    steps: int = 6  # I2V: full schedule
    cfg: float = 1.0  # the lightx2v LoRA is cfg-distilled
    shift: float = 11.0
    scheduler: str = "dpm++_sde"
    v2v_steps: int = 4  # V2V: the schedule starts at v2v_start_step from the source latents
    v2v_start_step: int = 2
    blocks_to_swap: int = 20
    prefetch_blocks: int = 1
    attention_mode: str = "sdpa"
    base_precision: str = "fp16_fast"
    quantization: str = "fp8_e4m3fn"
    lora_strength: float = 1.0
    multi_audio_type: str = "para"
    audio_scale: float = 1.0  # I2V
    v2v_audio_scale: float = 1.5  # V2V (the old V2V graphs)
    audio_cfg_scale: float = 1.0  # != 1 adds a pass without audio per step
    color_match: str = "meanstd"  # applied by the backend toward the reference; "disabled" = off
    vocal_separation: bool = True  # MelBandRoFormer vocals before wav2vec, as the old graphs
    speaker_masks: bool = True  # multi: ref_target_masks from uploaded mask PNGs

    def __post_init__(self) -> None:
        for name, allowed in (("scheduler", SCHEDULERS), ("attention_mode", ATTENTION_MODES),
                              ("base_precision", BASE_PRECISIONS), ("quantization", QUANTIZATIONS),
                              ("color_match", COLOR_MATCH_METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{env_name(name)}: {name} {getattr(self, name)!r} is not one of "
                                 f"{', '.join(allowed)}")
        if self.scheduler == "multitalk":
            raise ValueError("scheduler 'multitalk' only works inside WanVideoImageToVideoMultiTalk's "
                             "own loop (WanVideoSampler rejects it otherwise); per-window graphs need "
                             "another scheduler, e.g. dpm++_sde")
        if not self.scheduler.strip():
            raise ValueError("scheduler must not be empty")
        for name in ("steps", "v2v_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.v2v_start_step < self.v2v_steps:
            raise ValueError(f"v2v_start_step must be in 0..{self.v2v_steps - 1}, got {self.v2v_start_step}")
        if not 0 <= self.blocks_to_swap <= 48:
            raise ValueError(f"blocks_to_swap must be in 0..48, got {self.blocks_to_swap}")
        if not 0 <= self.prefetch_blocks <= 40:
            raise ValueError(f"prefetch_blocks must be in 0..40, got {self.prefetch_blocks}")
        if self.multi_audio_type not in MULTI_AUDIO_TYPES:
            raise ValueError(
                f"multi_audio_type must be 'para', got {self.multi_audio_type!r}: each window gets "
                "both speakers' slices of one shared timeline, and 'add' would chain the two slices "
                "(2W frames of audio, the second speaker never heard in the window). For turn-taking, "
                "give each speaker a track with silence where the other one talks")
        for name in ("cfg", "shift", "audio_scale", "v2v_audio_scale", "audio_cfg_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "SamplerSettings":
        """From the given variables (GraphConfig.from_env passes the environment)."""
        return cls(**_values_from_env(cls, environ))

    @property
    def color_correction(self) -> bool:
        return self.color_match != "disabled"


@dataclass(frozen=True)
class GraphConfig:
    """Everything the comfyui backend needs to build prompts, read from one environment."""

    models: ModelFiles = field(default_factory=ModelFiles)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    graphs_dir: Path | None = None  # operator overrides: <dir>/<mode>.json (API format)
    # the modes this deployment serves: doctor checks them (and their model files) only
    modes: tuple[str, ...] = MODES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "GraphConfig":
        env = os.environ if environ is None else environ
        raw = env.get(GRAPHS_DIR_ENV, "").strip()
        modes = env.get(MODES_ENV, "").strip()
        return cls(ModelFiles.from_env(env), SamplerSettings.from_env(env), Path(raw) if raw else None,
                   **({"modes": parse_modes(modes, MODES_ENV)} if modes else {}))


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _values_from_env(cls, environ: Mapping[str, str]) -> dict:
    if environ is None:
        raise TypeError("pass the variables to read (only GraphConfig.from_env reads the environment)")
    return values_from_env(cls, ENV_PREFIX, environ)
