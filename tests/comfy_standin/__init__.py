"""A ComfyUI 0.8.0 stand-in for the tests: same endpoints, status codes, error bodies,
websocket messages and history shape as the real server (plus WanVideoWrapper, VHS, KJNodes
and MelBandRoFormer node classes), rendering with the CPU preview renderer.

- `validation`: ComfyUI's POST /prompt validation against tests/fixtures/comfy_schema.json.
- `server`: the aiohttp app (`create_app`, `StandIn`, `start_standin`), fault injection.

Run it by hand: ``python -m tests.comfy_standin --port 8188 --root /tmp/standin``.
"""
