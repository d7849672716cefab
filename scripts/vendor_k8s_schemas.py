"""Write tests/k8s_schemas/: the JSON schemas tests/test_kubernetes.py validates the manifests
under deploy/kubernetes/ with, offline. Only what those manifests use is kept.

    python scripts/vendor_k8s_schemas.py KUBERNETES_VALIDATE_WHEEL KEDA_CHECKOUT

- Kubernetes: the strict schemas (unknown fields refused) of the oldest Kubernetes the
  manifests support, from the kubernetes-validate wheel (PyPI; its schemas come from the
  Kubernetes OpenAPI documents): the definitions the kinds below need, descriptions dropped.
- KEDA: the openAPIV3Schema of the ScaledObject and TriggerAuthentication CRDs of the oldest
  KEDA with the temporal scaler (config/crd/bases/ at tag KEDA_TAG of a kedacore/keda checkout).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

KUBERNETES = "v1.30.0"
KEDA_TAG = "v2.17.0"
KINDS = {  # (apiVersion, kind) -> definition
    ("v1", "Namespace"): "io.k8s.api.core.v1.Namespace",
    ("v1", "ConfigMap"): "io.k8s.api.core.v1.ConfigMap",
    ("v1", "Secret"): "io.k8s.api.core.v1.Secret",
    ("v1", "Service"): "io.k8s.api.core.v1.Service",
    ("v1", "PersistentVolumeClaim"): "io.k8s.api.core.v1.PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "io.k8s.api.apps.v1.Deployment",
    ("batch/v1", "Job"): "io.k8s.api.batch.v1.Job",
}
# the trigger metadata each scaler reads (KEDA ignores any other name without a word)
SCALERS = {"temporal": ("temporal.go", r'keda:"name=(\w+),\s*order=triggerMetadata'),
           "metrics-api": ("metrics_api_scaler.go", r'TriggerMetadata\["(\w+)"\]')}
CRDS = {"ScaledObject": "keda.sh_scaledobjects.yaml", "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}
OUT = Path(__file__).resolve().parent.parent / "tests" / "k8s_schemas"


def _strip(node):
    """Descriptions out, references local (#/$defs/NAME)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                continue
            if k == "$ref":
                v = "#/$defs/" + v.rsplit("/", 1)[1]
            out[k] = _strip(v)
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v.rsplit("/", 1)[1]
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def kubernetes(wheel: Path) -> dict:
    name = f"kubernetes_validate/kubernetes-json-schema/{KUBERNETES}-local-strict/_definitions.json"
    defs = json.loads(zipfile.ZipFile(wheel).read(name))["$defs"]
    keep, todo = {}, list(KINDS.values())
    while todo:
        d = todo.pop()
        if d not in keep:
            keep[d] = _strip(defs[d])
            todo += list(_refs(keep[d]))
    return {"kubernetes": KUBERNETES, "kinds": {f"{a} {k}": d for (a, k), d in KINDS.items()},
            "$defs": dict(sorted(keep.items()))}


def _show(checkout: Path, path: str) -> str:
    return subprocess.run(["git", "-C", str(checkout), "show", f"{KEDA_TAG}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def keda(checkout: Path) -> dict:
    out = {"keda": KEDA_TAG, "kinds": {}, "trigger_metadata": {}}
    for scaler, (source, pattern) in SCALERS.items():
        names = re.findall(pattern, _show(checkout, f"pkg/scalers/{source}"))
        out["trigger_metadata"][scaler] = sorted(set(names))
    for kind, path in CRDS.items():
        text = _show(checkout, f"config/crd/bases/{path}")
        crd = yaml.safe_load(text)
        version, = [v for v in crd["spec"]["versions"] if v.get("served")]
        out["kinds"][f"{crd['spec']['group']}/{version['name']} {kind}"] = \
            _strip(version["schema"]["openAPIV3Schema"])
    return out


def main() -> None:
    wheel, checkout = Path(sys.argv[1]), Path(sys.argv[2])
    OUT.mkdir(exist_ok=True)
    (OUT / f"kubernetes-{KUBERNETES}-strict.json").write_text(json.dumps(kubernetes(wheel), indent=1) + "\n")
    (OUT / f"keda-{KEDA_TAG}.json").write_text(json.dumps(keda(checkout), indent=1) + "\n")


if __name__ == "__main__":
    main()
