"""`kustomize build` for the subset deploy/kubernetes/ uses, in Python, so the tests render the
manifests without a kustomize binary: resources (files and folders), patches (strategic merge
by kind and name: maps merge, lists of named items merge by name, other lists are replaced),
namespace, labels (metadata only), images, and a secretGenerator from env files without the
name hash. A kustomization that uses anything else is refused, not rendered half right."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images",
             "secretGenerator", "generatorOptions"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


class Unsupported(ValueError):
    pass


def load_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise Unsupported(f"{path}: not KEY=value: {line!r}")
            pairs[key] = value
    return pairs


def merge(base, patch):
    """A strategic merge patch of the kinds used here."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
            if at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = merge(out[at], item)
        return out
    return copy.deepcopy(patch)


def _named(items: list) -> bool:
    return all(isinstance(i, dict) and "name" in i for i in items)


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    return pod.get("containers", []) + pod.get("initContainers", [])


def build(folder: Path, env_files: dict[str, Path] | None = None) -> list[dict]:
    """The objects `kustomize build folder` makes. `env_files` stands in for a generator's env
    file that is not there (secrets.env, which only an operator writes): name -> file."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise Unsupported(f"{folder}/kustomization.yaml: {sorted(unknown)} not rendered by tests/kustomize.py")
    objects: list[dict] = []
    for entry in k.get("resources", []):
        path = folder / entry
        objects += build(path, env_files) if path.is_dir() else load_documents(path)
    for gen in k.get("secretGenerator", []):
        if not (k.get("generatorOptions") or {}).get("disableNameSuffixHash"):
            raise Unsupported("secretGenerator without disableNameSuffixHash: true")
        if set(gen) - {"name", "envs"}:
            raise Unsupported(f"secretGenerator {gen['name']}: only name and envs")
        data = {}
        for env in gen["envs"]:
            path = folder / env
            data.update(read_env_file(path if path.exists() else (env_files or {})[env]))
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
                        "type": "Opaque", "stringData": data})
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"patch {patch}: only path")
        for doc in load_documents(folder / patch["path"]):
            at = [i for i, o in enumerate(objects) if _key(o) == _key(doc)]
            if len(at) != 1:
                raise Unsupported(f"patch {patch['path']}: {_key(doc)} matches {len(at)} objects")
            objects[at[0]] = merge(objects[at[0]], doc)
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if k.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            if set(label) != {"pairs"}:
                raise Unsupported(f"labels {label}: only pairs (metadata labels)")
            meta["labels"] = {**meta.get("labels", {}), **label["pairs"]}
        for image in k.get("images", []):
            for container in _containers(obj):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return objects
