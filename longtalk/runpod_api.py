"""A small client of RunPod Serverless's public endpoint API (what the dispatcher calls):

    POST {base}/{endpoint}/run            {"input", "policy"} -> {"id", "status"}
    GET  {base}/{endpoint}/status/{id}    -> {"id", "status", "delayTime", "executionTime", "output", "error"}
    POST {base}/{endpoint}/cancel/{id}    -> {"id", "status": "CANCELLED"}
    GET  {base}/{endpoint}/health         -> {"jobs": {...}, "workers": {...}}

base is https://api.runpod.ai/v2 (LONGTALK_RUNPOD_BASE_URL: the tests' stand-in). A status
of an id RunPod no longer knows (its result expired, or never submitted) is None.
"""

from __future__ import annotations

import aiohttp

from .errors import InputError, TransientError

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
FAILED, CANCELLED, TIMED_OUT = "FAILED", "CANCELLED", "TIMED_OUT"
FINAL = (COMPLETED, FAILED, CANCELLED, TIMED_OUT)


class RunPodEndpoint:
    def __init__(self, base_url: str, endpoint_id: str, api_key: str, timeout_s: float = 30.0) -> None:
        if not endpoint_id:
            raise InputError("LONGTALK_RUNPOD_ENDPOINT_ID", "not set: the RunPod pool needs the endpoint's id")
        if not api_key:
            raise InputError("LONGTALK_RUNPOD_API_KEY", "not set: the RunPod pool needs an API key")
        self.url = f"{base_url.rstrip('/')}/{endpoint_id}"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, body: dict | None = None, missing_ok: bool = False) -> dict | None:
        try:
            async with self._http().request(method, self.url + path, json=body) as resp:
                if resp.status == 404 and missing_ok:
                    return None
                if resp.status in (401, 403):
                    raise InputError("LONGTALK_RUNPOD_API_KEY", f"RunPod refused it (HTTP {resp.status} on {path})")
                if resp.status >= 300:
                    raise TransientError(f"RunPod {method} {path}: HTTP {resp.status}")
                return await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise TransientError(f"RunPod unreachable ({method} {path}): {type(exc).__name__}") from None

    async def run(self, job_input: dict, execution_timeout_s: int = 0) -> str:
        policy = {"executionTimeout": execution_timeout_s * 1000} if execution_timeout_s else {}
        answer = await self._call("POST", "/run", {"input": job_input, **({"policy": policy} if policy else {})})
        if not isinstance(answer, dict) or not answer.get("id"):
            raise TransientError(f"RunPod /run answered no job id: {str(answer)[:200]}")
        return str(answer["id"])

    async def status(self, job_id: str) -> dict | None:
        return await self._call("GET", f"/status/{job_id}", missing_ok=True)

    async def cancel(self, job_id: str) -> dict | None:
        return await self._call("POST", f"/cancel/{job_id}", missing_ok=True)

    async def health(self) -> dict:
        return await self._call("GET", "/health") or {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
