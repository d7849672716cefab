#!/bin/sh
# The RunPod worker container: ComfyUI on loopback in the background, with the network
# volume's model folders as extra model paths, then the handler in the foreground (it waits
# for ComfyUI). ComfyUI's log goes to the container log too.
set -eu
models="${RUNPOD_MODELS_DIR:-/runpod-volume/models}"
extra=/tmp/extra_model_paths.yaml
{
    echo "runpod_volume:"
    echo "  base_path: ${models}"
    for folder in "${models}"/*/; do
        [ -d "$folder" ] || continue
        name=$(basename "$folder")
        echo "  ${name}: ${name}/"
    done
} > "$extra"
cd "${COMFYUI_DIR:-/opt/ComfyUI}"
python main.py --listen 127.0.0.1 --port 8188 --extra-model-paths-config "$extra" &
exec /opt/longtalk/venv/bin/python -m longtalk.serverless
