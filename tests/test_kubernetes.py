"""The Kubernetes deployment (deploy/kubernetes/), checked without a cluster: every manifest
parses, the kustomize base and overlays render (tests/kustomize.py), every object validates
against the Kubernetes and KEDA schemas vendored in tests/k8s_schemas/ (unknown fields
refused, as the API server's strict field validation does), the settings are wired to the
Settings table, and the GPU pod, its probes, grace period and scaler fit together."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from longtalk.comfy.config import GraphConfig
from longtalk.settings import PREFIX, Settings
from tests import kustomize
from tests.test_deployment import allowed_longtalk_names, load_yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAYS = sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
STANDALONE = [DEPLOY / "fetch-models.yaml"]  # applied on their own, not by kustomize
CHARTS = DEPLOY / "charts"  # values for the Temporal and MinIO charts, not manifests
SCHEMAS = Path(__file__).resolve().parent / "k8s_schemas"
SECRETS = {"secrets.env": BASE / "secrets.env.example"}  # an operator's secrets.env, in the tests
LEFT_AT_DEFAULT = "longtalk/left-at-default"


def render(folder: Path) -> list[dict]:
    return kustomize.build(folder, SECRETS)


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def container(obj: dict, name: str) -> dict:
    found = [c for c in pod_spec(obj)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{obj['metadata']['name']}: container {name}"
    return found[0]


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

def _strict(schema):
    """A CRD schema as the API server applies it with strict field validation: an object that
    lists its properties and does not keep unknown fields refuses the others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class Schemas:
    def __init__(self) -> None:
        (k8s_file,) = SCHEMAS.glob("kubernetes-*.json")
        (keda_file,) = SCHEMAS.glob("keda-*.json")
        k8s, keda = json.loads(k8s_file.read_text()), json.loads(keda_file.read_text())
        self.defs = k8s["$defs"]
        self.kinds = {kind: {"$defs": self.defs, "$ref": f"#/$defs/{d}"} for kind, d in k8s["kinds"].items()}
        self.crds = {kind: _strict(s) for kind, s in keda["kinds"].items()}
        self.trigger_metadata = keda["trigger_metadata"]
        self.object_meta = {"$defs": self.defs, "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}

    def errors(self, obj: dict) -> list[str]:
        kind = f"{obj.get('apiVersion')} {obj.get('kind')}"
        if kind in self.kinds:
            checks = [(self.kinds[kind], obj)]
        elif kind in self.crds:  # a CRD's schema leaves metadata to the API server: ObjectMeta
            checks = [(self.crds[kind], obj), (self.object_meta, obj.get("metadata"))]
        else:
            return [f"{kind}: no schema vendored in tests/k8s_schemas"]
        out = []
        for schema, instance in checks:
            validator = jsonschema.Draft202012Validator(schema)
            for e in validator.iter_errors(instance):
                out.append(f"{kind} {obj.get('metadata', {}).get('name')}: "
                           f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:200]}")
        return out


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas()


# ---------------------------------------------------------------------------------------------
# Parsing, rendering, validating
# ---------------------------------------------------------------------------------------------

def test_every_manifest_parses():
    files = sorted(p for p in DEPLOY.rglob("*.yaml") if CHARTS not in p.parents)
    assert len(files) >= 10, files
    for path in files:
        docs = [d for d in load_yaml_all(path) if d is not None]
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
            assert doc.get("metadata", {}).get("name") or doc["kind"] == "Kustomization", path


def load_yaml_all(path: Path):
    """Every document of a file, refusing duplicate keys (as kubectl does)."""
    return [load_yaml(text) for text in re.split(r"(?m)^---\s*$", path.read_text())]


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_renders_and_validates(folder, schemas):
    objects = render(folder) + [d for p in STANDALONE for d in kustomize.load_documents(p)]
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), keys
    problems = [e for obj in objects for e in schemas.errors(obj)]
    assert not problems, "\n".join(problems)
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ScaledObject", "TriggerAuthentication"} \
        <= {o["kind"] for o in objects}
    assert all(o["metadata"].get("namespace") == "longtalk" for o in render(folder) if o["kind"] != "Namespace")


def test_the_schemas_refuse_what_kubectl_refuses(base, schemas):
    """The check can fail: a misspelt field, a wrong type, an unknown kind, a ScaledObject field
    that does not exist, each is an error naming where."""
    gpu = copy.deepcopy(one(base, "Deployment", "longtalk-gpu-worker"))
    container(gpu, "gpu-worker")["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in e for e in schemas.errors(gpu))
    gpu = copy.deepcopy(one(base, "Deployment", "longtalk-gpu-worker"))
    pod_spec(gpu)["terminationGracePeriodSeconds"] = "660"
    assert any("terminationGracePeriodSeconds" in e for e in schemas.errors(gpu))
    scaler = copy.deepcopy(one(base, "ScaledObject", "longtalk-gpu-worker"))
    scaler["spec"]["minReplicas"] = 0
    assert any("minReplicas" in e for e in schemas.errors(scaler))
    scaler = copy.deepcopy(one(base, "ScaledObject", "longtalk-gpu-worker"))
    scaler["metadata"]["labelz"] = {}
    assert any("labelz" in e for e in schemas.errors(scaler))
    assert schemas.errors({"apiVersion": "v9", "kind": "Nothing", "metadata": {"name": "x"}})


def test_overlay_patches_reach_the_objects():
    for folder in OVERLAYS:
        objects = render(folder)
        gpu = one(objects, "Deployment", "longtalk-gpu-worker")
        assert pod_spec(gpu).get("nodeSelector"), folder  # a GPU kind is a node selector
        assert len(pod_spec(gpu)["containers"]) == 2  # a patch merges, it does not replace the pod


def test_the_renderer_refuses_what_it_does_not_render(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nhelmCharts:\n  - name: temporal\n")
    with pytest.raises(kustomize.Unsupported, match="helmCharts"):
        kustomize.build(tmp_path)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

def settings_map(objects: list[dict]) -> dict:
    return one(objects, "ConfigMap", "longtalk-settings")


def environment(objects: list[dict], obj: dict, name: str) -> dict[str, str]:
    """A container's variables: envFrom (ConfigMap, Secret) then env, as the kubelet builds them."""
    c = container(obj, name)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(one(objects, "Secret", source["secretRef"]["name"])["stringData"])
    for item in c.get("env", []):
        assert "value" in item, f"{name}: {item['name']} without a value"
        env[item["name"]] = item["value"]
    return env


def longtalk_containers(objects: list[dict]):
    for obj in objects:
        if obj["kind"] == "Deployment":
            for c in pod_spec(obj)["containers"]:
                if any("configMapRef" in s for s in c.get("envFrom", [])):
                    yield obj, c["name"]


def test_every_setting_is_wired_or_left_at_default(base):
    """A new Settings field fails here until it is set in the ConfigMap, the Secret or a
    container's env, or named in the ConfigMap's left-at-default list."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    cm = settings_map(base)
    left = {n.strip() for n in cm["metadata"]["annotations"][LEFT_AT_DEFAULT].split(",") if n.strip()}
    set_somewhere = set(cm["data"]) | set(one(base, "Secret", "longtalk-secrets")["stringData"])
    for obj, name in longtalk_containers(base):
        set_somewhere |= {e["name"] for e in container(obj, name).get("env", [])}
    wired = {k[len(PREFIX):].lower() for k in set_somewhere if k.startswith(PREFIX)}
    assert not left - fields, f"left-at-default names that are not settings: {sorted(left - fields)}"
    assert not left & wired, f"both set and left at default: {sorted(left & wired)}"
    missing = fields - wired - left
    assert not missing, f"settings neither set in deploy/kubernetes nor in {LEFT_AT_DEFAULT}: {sorted(missing)}"


def test_longtalk_variables_are_real_settings(base):
    allowed = allowed_longtalk_names()
    names = set(settings_map(base)["data"]) | set(one(base, "Secret", "longtalk-secrets")["stringData"])
    for obj, name in longtalk_containers(base):
        names |= {e["name"] for e in container(obj, name).get("env", [])}
    unknown = {n for n in names if n.startswith(PREFIX) and n not in allowed}
    assert not unknown, f"not a Settings or GraphConfig field: {sorted(unknown)}"
    assert "LONGTALK_WORKER_ROLES" in names and "LONGTALK_NOT_A_SETTING" not in allowed


def test_each_container_reads_its_settings(base):
    roles = {}
    for obj, name in longtalk_containers(base):
        env = environment(base, obj, name)
        settings = Settings.from_env(env)  # a bad value names its variable
        GraphConfig.from_env(env)
        roles[obj["metadata"]["name"]] = settings
    assert roles["longtalk-gpu-worker"].worker_roles == "gpu"
    assert roles["longtalk-cpu-worker"].worker_roles == "cpu"
    assert roles["longtalk-api"].api_address.startswith("0.0.0.0:")
    for s in roles.values():
        assert s.backend == "comfyui" and s.health_host == "0.0.0.0" and s.metrics_host == "0.0.0.0"


# ---------------------------------------------------------------------------------------------
# Pods: probes, grace, the GPU pod
# ---------------------------------------------------------------------------------------------

def _port(c: dict, ref) -> int:
    if isinstance(ref, int):
        return ref
    (port,) = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == ref]
    return port


def test_probes_reach_the_endpoints(base):
    for obj, name in longtalk_containers(base):
        c, env = container(obj, name), environment(base, obj, name)
        settings = Settings.from_env(env)
        port = int(settings.api_address.rsplit(":", 1)[1]) if name == "api" else settings.health_port
        assert port, name
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path and _port(c, get["port"]) == port, (obj["metadata"]["name"], probe)


def test_grace_periods_outlast_the_workers_shutdown(base):
    """Kubernetes kills a pod terminationGracePeriodSeconds after SIGTERM: longer than the
    worker's graceful shutdown, which lets the window in flight finish."""
    for obj, name in longtalk_containers(base):
        settings = Settings.from_env(environment(base, obj, name))
        grace = pod_spec(obj)["terminationGracePeriodSeconds"]
        roles = settings.worker_roles.split(",") if name != "api" else []
        needed = max([0] + [settings.gpu_shutdown_grace_s for r in roles if r == "gpu"]
                     + [settings.cpu_shutdown_grace_s for r in roles if r == "cpu"])
        assert grace >= needed + 20, f"{obj['metadata']['name']}: {grace} s for a {needed} s shutdown"


def test_gpu_pod(base):
    gpu = one(base, "Deployment", "longtalk-gpu-worker")
    spec = pod_spec(gpu)
    comfy, worker = container(gpu, "comfyui"), container(gpu, "gpu-worker")
    assert comfy["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in worker.get("resources", {}).get("limits", {})
    env = environment(base, gpu, "gpu-worker")
    assert env["LONGTALK_COMFY_URL"] == f"http://127.0.0.1:{_port(comfy, 'comfyui')}"
    # models: a read-only mount of a read-only claim
    (mount,) = [m for m in comfy["volumeMounts"] if m["mountPath"] == "/opt/ComfyUI/models"]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    one(base, "PersistentVolumeClaim", claim["claimName"])
    # ComfyUI stays until the worker has finished its window and exited
    stop = " ".join(comfy["lifecycle"]["preStop"]["exec"]["command"])
    assert f"127.0.0.1:{Settings.from_env(env).health_port}/livez" in stop
    # readiness gates a rollout: the new pod passes the doctor check before an old one stops
    assert gpu["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert Settings.from_env(env).comfy_doctor
    assert "replicas" not in gpu["spec"]  # KEDA owns the count: an apply must not reset it


def test_gpu_scaler(base, schemas):
    so = one(base, "ScaledObject", "longtalk-gpu-worker")
    spec = so["spec"]
    gpu = one(base, "Deployment", "longtalk-gpu-worker")
    assert spec["scaleTargetRef"]["name"] == gpu["metadata"]["name"]
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    triggers = {t["name"]: t for t in spec["triggers"]}
    cm = settings_map(base)["data"]
    temporal = [t for t in spec["triggers"] if t["type"] == "temporal"]
    assert len(temporal) == 1
    meta = temporal[0]["metadata"]
    assert meta["taskQueue"] == cm["LONGTALK_GPU_QUEUE"]
    assert meta["endpoint"] == cm["LONGTALK_TEMPORAL_ADDRESS"]
    assert meta["namespace"] == cm["LONGTALK_TEMPORAL_NAMESPACE"]
    assert meta["queueTypes"] == "activity"  # windows are activities
    assert meta["activationTargetQueueSize"] == "0" and meta["targetQueueSize"] == "1"
    for t in spec["triggers"]:  # KEDA reads these names only: a misspelt one is silently ignored
        unknown = set(t["metadata"]) - set(schemas.trigger_metadata[t["type"]])
        assert not unknown, f"{t['type']}: unknown metadata {sorted(unknown)}"
        assert all(isinstance(v, str) for v in t["metadata"].values()), t["name"]
    # replicas = windows queued + windows rendering, one per worker
    mod = spec["advanced"]["scalingModifiers"]
    assert set(re.findall(r"[a-z_]+", mod["formula"])) == set(triggers)
    assert mod["target"] == "1" and mod["activationTarget"] == "0"
    rendering = [t for t in spec["triggers"] if t["type"] == "metrics-api"]
    assert len(rendering) == 1
    url = rendering[0]["metadata"]["url"]
    api = one(base, "Service", "longtalk-api")
    assert url.startswith(f"http://{api['metadata']['name']}.{api['metadata']['namespace']}.svc.cluster.local:"
                          f"{api['spec']['ports'][0]['port']}/v2/") and url.endswith("/health")
    assert rendering[0]["metadata"]["valueLocation"] == "workers.running"
    auth = one(base, "TriggerAuthentication", rendering[0]["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    secret = one(base, "Secret", ref["name"])["stringData"]
    assert ref["parameter"] == "apiKey"
    keys = dict(pair.split(":", 1) for pair in secret["LONGTALK_API_KEYS"].split(","))
    assert secret[ref["key"]] in keys.values(), "the scaler's key is not one of the API's keys"


def test_services_are_not_copied_in():
    """Temporal and MinIO come from their own charts: referenced by address, not copied."""
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*.yaml") if CHARTS not in p.parents)
    assert "temporalio/" not in text and "minio/minio" not in text
    assert "temporal-frontend.temporal.svc" in text and "minio.minio.svc" in text


def test_chart_values_match_what_longtalk_needs(base):
    """The Temporal chart gets the compose stack's dynamic config; MinIO the bucket and user
    the pods use."""
    temporal = yaml.safe_load((CHARTS / "temporal-values.yaml").read_text())
    compose = yaml.safe_load((ROOT / "docker" / "temporal" / "dynamicconfig.yaml").read_text())
    assert temporal["server"]["dynamicConfig"] == compose
    minio = yaml.safe_load((CHARTS / "minio-values.yaml").read_text())
    cm, secret = settings_map(base)["data"], one(base, "Secret", "longtalk-secrets")["stringData"]
    assert [b["name"] for b in minio["buckets"]] == [cm["LONGTALK_BUCKET"]]
    assert [u["accessKey"] for u in minio["users"]] == [secret["LONGTALK_S3_ACCESS_KEY"]]
