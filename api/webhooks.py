"""Webhook deliveries: the activities of the DeliverWebhook workflow (run by the API's worker),
Standard Webhooks signatures, and the network guard for the target.

The URL is vetted by the same guard as URL inputs (longtalk.netguard.vet_url: no loopback,
private, link-local or metadata address unless LONGTALK_URL_ALLOW_HOSTS allows it) when the
job is accepted, and again at each delivery, which connects to the address just checked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from longtalk.errors import InputError
from longtalk.netguard import PinnedHTTPConnection, PinnedHTTPSConnection, vet_url
from longtalk.settings import Settings
from workflows.webhook import DeliverWebhook, WebhookInput, webhook_workflow_id

from .service import NotFound, Renders

USER_AGENT = "longtalk-webhook/0.1"


def webhook_key(render_id: str) -> str:
    """Beside, not under, renders/{id}/: a render refused at ingest deletes its objects, and
    its FAILED status is still delivered."""
    return f"webhooks/{render_id}.json"


def check_url(url, settings: Settings) -> str:
    """The webhook URL, vetted; InputError("webhook", ...) otherwise."""
    if not isinstance(url, str) or not url:
        raise InputError("webhook", "must be an http(s) URL string")
    if not settings.api_webhook_secret:
        raise InputError("webhook", "this service signs webhooks and has no LONGTALK_API_WEBHOOK_SECRET set")
    vet_url("webhook", url, settings)
    return url


def signing_key(secret: str) -> bytes:
    """Standard Webhooks secrets look like `whsec_<base64>`; any other string is used as is."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post(url: str, body: bytes, headers: dict, settings: Settings, timeout: float = 30.0) -> int:
    """POST to a vetted address (no redirects followed); the HTTP status."""
    target = vet_url("webhook", url, settings)
    conn_cls = PinnedHTTPSConnection if target.scheme == "https" else PinnedHTTPConnection
    conn = conn_cls(target, timeout)
    try:
        conn.request("POST", target.path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class WebhookActivities:
    def __init__(self, renders: Renders) -> None:
        self.renders = renders

    @activity.defn(name="await_render")
    async def await_render(self, inp: WebhookInput) -> str:
        """Until the render's run ends (heartbeating, so a lost API worker hands it on)."""
        handle = self.renders.client.get_workflow_handle(inp.render_id, run_id=inp.run_id)
        while True:
            activity.heartbeat()
            try:
                await asyncio.wait_for(handle.result(follow_runs=False), 20)
            except asyncio.TimeoutError:
                continue
            except Exception:  # failed, cancelled, timed out: ended all the same
                pass
            desc = await handle.describe()
            if desc.close_time is not None:
                return desc.status.name

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, inp: WebhookInput) -> int:
        settings = self.renders.settings
        spec = await asyncio.to_thread(self.renders.store.get_json_or_none, webhook_key(inp.render_id))
        if not spec:
            return 0
        try:
            desc = await self.renders.describe(inp.render_id, None)
        except NotFound:
            return 0  # past its ttl
        body = json.dumps(await self.renders.status_body(inp.render_id, desc), separators=(",", ":")).encode()
        msg_id = f"msg_{inp.run_id}"
        ts = int(time.time())
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
                   "webhook-signature": sign(settings.api_webhook_secret, msg_id, ts, body)}
        try:
            status = await asyncio.to_thread(post, spec["url"], body, headers, settings)
        except InputError:
            raise  # the guard refused the target now (not retried; a host not found, DownloadFailed, is)
        except OSError as exc:
            raise RuntimeError(f"webhook not reachable: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise RuntimeError(f"webhook answered HTTP {status}")
        return status


async def start_delivery(client: Client, settings: Settings, render_id: str, run_id: str) -> None:
    await client.start_workflow(
        DeliverWebhook.run,
        WebhookInput(render_id=render_id, run_id=run_id, retry_s=settings.api_webhook_retry_s,
                     backoff_s=settings.api_webhook_backoff_s),
        id=webhook_workflow_id(render_id), task_queue=settings.api_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        execution_timeout=timedelta(days=90))
