"""The HTTP API: RunPod-compatible serverless routes in front of the render workflows."""
