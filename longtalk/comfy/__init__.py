"""ComfyUI protocol: `ComfyClient` (HTTP + websocket, ComfyUI 0.8.0) and `OutputFile`."""

from .client import MODEL_INPUTS, ComfyClient, OutputFile, ProgressCallback

__all__ = ["ComfyClient", "OutputFile", "MODEL_INPUTS", "ProgressCallback"]
