#!/usr/bin/env bash
# Download the model files the ComfyUI graphs load, by name, into a ComfyUI models/ folder.
#
#   scripts/fetch_models.sh [--only single|multi] [--no-vocal-model] MODELS_DIR
#   scripts/fetch_models.sh --list [--only single|multi] [--no-vocal-model]
#
#   --only single     skip the InfiniteTalk Multi file (one-speaker jobs only)
#   --only multi      skip the InfiniteTalk Single file (two-speaker jobs only)
#   --no-vocal-model  skip MelBandRoFormer (only with LONGTALK_COMFY_VOCAL_SEPARATION=false)
#   --list            print FOLDER/FILE of each selected file and exit (downloads nothing)
#
# Environment: HF_TOKEN (optional, sent as a bearer token), HF_ENDPOINT (optional mirror,
# default https://huggingface.co).
#
# Idempotent: a file already present with a non-zero size is skipped. A download goes to
# FILE.part (resumed on the next run) and is renamed to FILE only when complete.
# Standalone on purpose (bash, curl, coreutils): it runs in a bare container. The list
# below must equal longtalk.comfy.config.ModelFiles().fetch_list(); tests/test_deployment.py
# checks that. If you override a model file with LONGTALK_COMFY_<NAME>, place that file
# yourself.
set -euo pipefail

HF="${HF_ENDPOINT:-https://huggingface.co}"

# which|folder|file|url   (which: all = always, single/multi = InfiniteTalk variant,
# vocal = vocal separation; the file name is the URL's last path segment)
MODELS=(
  "all|diffusion_models|Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors|$HF/Kijai/WanVideo_comfy/resolve/main/Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors"
  "single|diffusion_models|Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors|$HF/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/InfiniteTalk/Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors"
  "multi|diffusion_models|Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors|$HF/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/InfiniteTalk/Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors"
  "all|loras|lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors|$HF/Kijai/WanVideo_comfy/resolve/main/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
  "all|vae|Wan2_1_VAE_bf16.safetensors|$HF/Kijai/WanVideo_comfy/resolve/main/Wan2_1_VAE_bf16.safetensors"
  "all|text_encoders|umt5-xxl-enc-fp8_e4m3fn.safetensors|$HF/Kijai/WanVideo_comfy/resolve/main/umt5-xxl-enc-fp8_e4m3fn.safetensors"
  "all|clip_vision|clip_vision_h.safetensors|$HF/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/clip_vision/clip_vision_h.safetensors"
  "all|wav2vec2|wav2vec2-chinese-base_fp16.safetensors|$HF/Kijai/wav2vec2_safetensors/resolve/main/wav2vec2-chinese-base_fp16.safetensors"
  "vocal|diffusion_models|MelBandRoformer_fp16.safetensors|$HF/Kijai/MelBandRoFormer_comfy/resolve/main/MelBandRoformer_fp16.safetensors"
)

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

list_only=0
only=""
vocal=1
models_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --list) list_only=1 ;;
    --only)
      [[ $# -ge 2 ]] || usage
      only="$2"
      shift
      ;;
    --only=*) only="${1#--only=}" ;;
    --no-vocal-model) vocal=0 ;;
    -h | --help) usage ;;
    -*) echo "fetch_models.sh: unknown option $1" >&2; usage ;;
    *)
      [[ -z "$models_dir" ]] || usage
      models_dir="$1"
      ;;
  esac
  shift
done
case "$only" in
  "" | single | multi) ;;
  *) echo "fetch_models.sh: --only takes single or multi, got '$only'" >&2; exit 2 ;;
esac
if [[ $list_only -eq 0 && -z "$models_dir" ]]; then
  usage
fi

selected() { # which -> 0 when this entry is wanted
  case "$1" in
    all) return 0 ;;
    single) [[ "$only" != multi ]] ;;
    multi) [[ "$only" != single ]] ;;
    vocal) [[ $vocal -eq 1 ]] ;;
    *) echo "fetch_models.sh: bad entry kind $1" >&2; exit 3 ;;
  esac
}

fetch() { # folder file url
  local folder="$1" file="$2" url="$3"
  local dest="$models_dir/$folder/$file"
  local part="$dest.part"
  if [[ -s "$dest" ]]; then
    echo "present  $folder/$file"
    return 0
  fi
  mkdir -p "$models_dir/$folder"
  local auth=()
  if [[ -n "${HF_TOKEN:-}" ]]; then
    auth=(-H "Authorization: Bearer $HF_TOKEN")
  fi
  local attempt
  for attempt in 1 2 3; do
    echo "download $folder/$file (attempt $attempt)"
    # -C - resumes FILE.part; curl drops the Authorization header on the redirect to the CDN.
    if curl --fail --location --show-error --connect-timeout 30 \
        --retry 5 --retry-delay 10 --retry-all-errors \
        --continue-at - ${auth[@]+"${auth[@]}"} --output "$part" "$url"; then
      if [[ -s "$part" ]]; then
        mv -f "$part" "$dest"
        return 0
      fi
      echo "  empty download" >&2
      rm -f "$part"
    fi
    sleep $((attempt * 10))
  done
  echo "fetch_models.sh: could not download $url (a partial file stays in $part; run again to resume)" >&2
  return 1
}

for entry in "${MODELS[@]}"; do
  IFS='|' read -r which folder file url <<<"$entry"
  if [[ "${url##*/}" != "$file" ]]; then
    echo "fetch_models.sh: entry for $file has a URL with another file name: $url" >&2
    exit 3
  fi
  selected "$which" || continue
  if [[ $list_only -eq 1 ]]; then
    echo "$folder/$file"
  else
    fetch "$folder" "$file" "$url"
  fi
done

if [[ $list_only -eq 0 ]]; then
  echo "all model files present in $models_dir"
fi
