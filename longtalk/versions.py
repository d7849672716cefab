"""Which workflow release started each running render, and what may be retired.

    python -m longtalk.versions check      (make upgrade-check)

Every release that changed workflow commands added `workflow.patched` ids, and a run records
the ids it took as markers at its start (Temporal keeps them in the `TemporalChangeVersion`
search attribute). So the set of ids a running RenderVideo or RenderChain carries says which
release started it. `check` lists the running runs per release, and for every patch id how
many running runs lack it (its old branch is still needed) or carry it (its deprecate_patch
call is still needed). README, "Upgrading", has the policy this serves.

The table below is data: one row per release whose histories are stored under
tests/histories/<release>/ (tests/test_versions.py holds it against them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

CHANGE_VERSION = "TemporalChangeVersion"  # the search attribute Temporal keeps the patch ids in
MAYBE = {"chain-cancel-v1"}  # recorded only by a chain that met a cancel during a finishing window


@dataclass(frozen=True)
class Release:
    name: str  # the short commit its histories were captured from
    render_video: frozenset[str]  # the patch ids a RenderVideo it starts records
    render_chain: frozenset[str]  # ... and a RenderChain (each run, continue-as-new included)

    def patches(self, workflow_type: str) -> frozenset[str]:
        """The ids a run of this type records (none for the workflows that have no patch yet:
        PurgeQueue, DeliverWebhook)."""
        return {"RenderVideo": self.render_video, "RenderChain": self.render_chain}.get(workflow_type, frozenset())


def _release(name: str, video: set[str], chain: set[str]) -> Release:
    return Release(name, frozenset(video), frozenset(chain))


# oldest first; the releases the policy supports (README, "Upgrading")
SUPPORTED = (
    _release("f7b20a4", {"activity-options-v2", "visibility-v1", "audio-beside-windows-v1"},
             {"render-window-options-v2", "window-summary-v1", "chain-affinity-v1"}),
    _release("9cb397e", {"activity-options-v2", "visibility-v1", "audio-beside-windows-v1"},
             {"render-window-options-v2", "window-summary-v1", "chain-affinity-v1"}),
    _release("44f6b86", {"activity-options-v2", "visibility-v1", "gpu-start-v1", "progress-by-count-v1",
                         "audio-beside-windows-v1"},
             {"render-window-options-v2", "window-summary-v1", "chain-affinity-v1", "report-every-window-v1"}),
    # this code (deprecate_patch still records its id, marked deprecated: older code reading
    # such a history takes the new branch, and a later release may drop the call)
    _release("current", {"activity-options-v2", "visibility-v1", "gpu-start-v1", "progress-by-count-v1",
                         "audio-beside-windows-v1"},
             {"render-window-options-v2", "window-summary-v1", "chain-affinity-v1", "report-every-window-v1"}),
)
RETIRED = ("de3015c", "08e9364", "258bc8b")  # no longer replayed: their renders must not be running anywhere


def release_of(workflow_type: str, patches: set[str]) -> str:
    """The release whose runs of this type record exactly these ids (chain-cancel-v1 aside);
    "unknown" when none does (a release older than the supported ones, or a newer one)."""
    seen = set(patches) - MAYBE
    matches = [r.name for r in SUPPORTED if r.patches(workflow_type) == seen]
    return matches[-1] if matches else "unknown"


@dataclass
class Census:
    by_release: dict[tuple[str, str], int]  # (workflow type, release) -> running runs
    lacking: dict[str, int]  # patch id -> running runs that lack it (its old branch still runs)
    carrying: dict[str, int]  # patch id -> running runs that carry it


def census(runs: list[tuple[str, set[str]]]) -> Census:
    """Count (workflow type, recorded patch ids) of running runs."""
    by_release: dict[tuple[str, str], int] = {}
    every = {p for r in SUPPORTED for p in r.render_video | r.render_chain}
    lacking = {p: 0 for p in sorted(every)}
    carrying = dict(lacking)
    for workflow_type, patches in runs:
        key = (workflow_type, release_of(workflow_type, patches))
        by_release[key] = by_release.get(key, 0) + 1
        own = {p for r in SUPPORTED for p in r.patches(workflow_type)}
        for p in own:
            if p in patches:
                carrying[p] += 1
            else:
                lacking[p] += 1
    return Census(by_release, lacking, carrying)


async def running_runs(client) -> list[tuple[str, set[str]]]:
    """(workflow type, recorded patch ids) of every running RenderVideo and RenderChain."""
    out = []
    query = "ExecutionStatus = 'Running' AND (WorkflowType = 'RenderVideo' OR WorkflowType = 'RenderChain')"
    async for w in client.list_workflows(query):
        ids = w.search_attributes.get(CHANGE_VERSION) or []
        out.append((w.workflow_type, {str(i) for i in ids}))
    return out


def report(c: Census) -> list[str]:
    lines = ["running runs per release (type, release: count):"]
    lines += [f"  {t} {r}: {n}" for (t, r), n in sorted(c.by_release.items())] or ["  none"]
    lines.append("patch ids (running runs that lack it / that carry it):")
    for p in c.lacking:
        note = ""
        if c.lacking[p] == 0 and c.carrying[p] == 0:
            note = "  <- no running run needs either branch"
        elif c.lacking[p] == 0:
            note = "  <- its old branch can go (deprecate_patch)"
        lines.append(f"  {p}: {c.lacking[p]} / {c.carrying[p]}{note}")
    unknown = sum(n for (_, r), n in c.by_release.items() if r == "unknown")
    if unknown:
        lines.append(f"{unknown} running run(s) of a release this code does not support: do not upgrade "
                     f"the workers until they end (or keep a worker of their release running)")
    return lines


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m longtalk.versions")
    p.add_argument("command", choices=["check"])
    p.parse_args(argv)
    from .settings import Settings
    from .temporal_connect import connect

    c = census(await running_runs(await connect(Settings.from_env())))
    print("\n".join(report(c)))
    return 1 if any(r == "unknown" for _, r in c.by_release) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
