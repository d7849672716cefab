"""Everything this project knows about ComfyUI, in one package:

- `client`: ComfyUI's HTTP + websocket protocol (`ComfyClient`, ComfyUI 0.8.0);
- `config`: the graphs' settings (`GraphConfig`: model files, sampler, override folder, modes),
  read from LONGTALK_COMFY_* by the entry points only;
- `modes`: the four graph modes;
- `binder`: a window's values bound into a mode's API-format graph (the shipped graphs are
  the JSON files of the comfy_graphs folder: data, read here);
- `doctor`: can a running ComfyUI run those graphs (the GPU worker's start-up check).

The comfyui render backend (longtalk.backends.comfyui) drives a window through these; the
operator commands (`python -m comfy_graphs show|list|check|doctor`) print them.
"""
