"""The docker compose deployment, checked by parsing (no Docker engine, no `docker compose`).

Covers docker-compose.yml, docker/*/Dockerfile, .dockerignore, .env.example and
scripts/fetch_models.sh: every path they name exists, images and commits are pinned, every
LONGTALK_* variable is a real setting, each GPU worker feeds its own GPU-reserving ComfyUI
over the network, and the model download list is ModelFiles.fetch_list().

The compose file is read with PyYAML (a test dependency), refusing duplicate keys as
Docker Compose does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

from longtalk.comfy.config import (
    GRAPHS_DIR_ENV,
    MODES_ENV,
    MODEL_FOLDERS,
    GraphConfig,
    ModelFiles,
    SamplerSettings,
    env_name,
)
from longtalk.settings import PREFIX, RENAMED, Settings
from tests.test_install import content_lines, read_pins

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMFY_DOCKERFILE = ROOT / "docker" / "comfyui" / "Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker" / "Dockerfile"
RUNPOD_DOCKERFILE = ROOT / "docker" / "runpod" / "Dockerfile"
CONSTRAINTS = ROOT / "docker" / "comfyui" / "constraints.txt"
FETCH_SCRIPT = ROOT / "scripts" / "fetch_models.sh"
GPU_DOC = ROOT / "README.md"  # its "Run on GPUs" section

PINNED_COMMITS = {
    "COMFYUI_COMMIT": "3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce",
    "WANVIDEOWRAPPER_COMMIT": "60a387579e2e1c96591598e4caf3465a7aaaf443",
    "KJNODES_COMMIT": "955a93b230c5e2130316beb5d502fc46685b6670",
    "VIDEOHELPERSUITE_COMMIT": "993082e4f2473bf4acaf06f51e33877a7eb38960",
    "MELBANDROFORMER_COMMIT": "b40e263224778ec417114d91d8b3b39934e30de5",
}


# ---------------------------------------------------------------------------------------------
# docker-compose.yml is read with PyYAML, refusing duplicate keys as Docker Compose does
# ---------------------------------------------------------------------------------------------

class _ComposeLoader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader, node, deep=False):
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value != "<<"]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key(s) {duplicates}", node.start_mark)
    return loader.construct_mapping(node, deep)


_ComposeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str):
    return yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------------------------------------
# Compose interpolation, .env files
# ---------------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(ValueError):
    pass


def compose_variables(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every ${...} / $NAME in `text` ($$ is a literal $)."""
    found = []
    for m in _VAR_RE.finditer(text):
        if m.group(0) == "$$":
            continue
        if m.group("plain"):
            found.append((m.group("plain"), "", ""))
            continue
        body = m.group("braced")
        v = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", body, re.DOTALL)
        if not v:
            raise ValueError(f"bad variable reference ${{{body}}}")
        found.append((v.group(1), v.group(2) or "", v.group(3) or ""))
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME:?error}, ..."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("plain"):
            return env.get(m.group("plain"), "")
        (name, op, arg), = compose_variables(m.group(0))
        value = env.get(name)
        if op == ":-":
            return value if value else interpolate(arg, env)
        if op == "-":
            return value if value is not None else interpolate(arg, env)
        if op == ":?":
            if not value:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op == "?":
            if value is None:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op == ":+":
            return interpolate(arg, env) if value else ""
        if op == "+":
            return interpolate(arg, env) if value is not None else ""
        return value or ""
    return _VAR_RE.sub(sub, text)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for n, line in content_lines(path):
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        assert m, f"{path.name}:{n}: not NAME=value: {line!r}"
        env[m.group(1)] = m.group(2)
    return env


def all_strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from all_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from all_strings(v)
    elif isinstance(node, str):
        yield node


# ---------------------------------------------------------------------------------------------
# Dockerfiles and .dockerignore
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (no heredocs)."""
    out: list[Instruction] = []
    escape = "\\"
    lines = text.splitlines()
    pending, start = "", 0
    in_header = True
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if in_header and (m := re.match(r"#\s*escape\s*=\s*(\S)", stripped)):
            escape = m.group(1)
            continue
        if stripped.startswith("#"):
            continue  # comment lines, also inside a continued instruction
        if not stripped and not pending:
            continue
        in_header = False
        if not pending:
            start = n
        if stripped.endswith(escape):
            pending += stripped[:-1].rstrip() + " "
            continue
        pending += stripped
        keyword, _, args = pending.strip().partition(" ")
        if re.search(r"<<-?\s*['\"]?[A-Za-z_]", args) and keyword.upper() in ("RUN", "COPY", "ADD"):
            raise ValueError(f"line {start}: heredocs are not supported by this parser")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    if pending:
        raise ValueError("Dockerfile ends inside a continued line")
    return out


def dockerfile_args(instructions: list[Instruction]) -> dict[str, str]:
    values = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            values[name.strip()] = default.strip().strip('"')
    return values


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def copy_sources(ins: Instruction, args: dict[str, str]) -> list[str] | None:
    """Build-context sources of a COPY/ADD; None for COPY --from (another stage or image)."""
    rest = ins.args
    flags = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    if any(f.startswith("--from=") for f in flags):
        return None
    if rest.startswith("["):
        parts = json.loads(rest)
    else:
        parts = shlex.split(rest)
    if len(parts) < 2:
        raise ValueError(f"line {ins.line}: {ins.keyword} needs a source and a destination")
    sources = [_substitute(p, args) for p in parts[:-1]]
    if ins.keyword == "ADD":
        sources = [s for s in sources if not re.match(r"(https?|git)://|git@", s)]
    return sources


def copy_destinations(instructions: list[Instruction]) -> dict[str, str]:
    """Destination path -> context source of each single-source COPY."""
    args = dockerfile_args(instructions)
    out = {}
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        sources = copy_sources(ins, args)
        if not sources or len(sources) != 1:
            continue
        rest = ins.args
        while rest.startswith("--"):
            rest = rest.partition(" ")[2].lstrip()
        parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        out[_substitute(parts[-1], args)] = sources[0]
    return out


class DockerIgnore:
    """.dockerignore matching: patterns relative to the context, `**`, `!` exceptions, last
    match wins, and a pattern that matches a folder excludes what is inside it."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.find("]", i)
                if end < 0:
                    out += re.escape(pattern[i:])
                    break
                out += pattern[i:end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return out + r"\Z"

    def excluded(self, relpath: str) -> bool:
        relpath = os.path.normpath(relpath).lstrip("/")
        if relpath in (".", ""):
            return False
        parts = relpath.split("/")
        candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        result = False
        for negate, rx in self.rules:
            if any(rx.match(c) for c in candidates):
                result = not negate
        return result


def check_dockerfile(dockerfile: Path, context: Path) -> list[str]:
    """Problems with the context sources of a Dockerfile's COPY/ADD instructions."""
    ignore_file = context / ".dockerignore"
    ignore = DockerIgnore(ignore_file.read_text() if ignore_file.exists() else "")
    instructions = parse_dockerfile(dockerfile.read_text())
    args = dockerfile_args(instructions)
    problems = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(ins, args) or []:
            if "$" in source:
                problems.append(f"{dockerfile.name}:{ins.line}: unresolved variable in {source!r}")
                continue
            rel = os.path.normpath(source).lstrip("/")
            if rel.startswith(".."):
                problems.append(f"{dockerfile.name}:{ins.line}: {source!r} is outside the build context")
                continue
            matches = [rel] if not any(c in rel for c in "*?[") else \
                [str(p.relative_to(context)) for p in context.glob(rel)]
            if rel == ".":
                continue
            if not matches or not all((context / m).exists() for m in matches):
                problems.append(f"{dockerfile.name}:{ins.line}: {source!r} does not exist in {context}")
                continue
            if all(ignore.excluded(m) for m in matches):
                problems.append(f"{dockerfile.name}:{ins.line}: {source!r} is excluded by .dockerignore")
    return problems


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw_compose() -> dict:
    text = COMPOSE_FILE.read_text()
    data = load_yaml(text)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw_compose, example_env) -> dict:
    """The compose file as `docker compose --env-file .env.example config` would see it."""
    try:
        return interpolate_tree(raw_compose, example_env)
    except MissingVariable as exc:
        pytest.fail(f"docker-compose.yml needs a variable .env.example does not set: {exc}")


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def is_comfyui(service: dict) -> bool:
    return (service.get("build") or {}).get("dockerfile") == "docker/comfyui/Dockerfile" \
        and "setup" not in (service.get("profiles") or [])


def gpu_workers(services: dict) -> dict[str, dict]:
    return {name: s for name, s in services.items()
            if "gpu" in env_of(s).get("LONGTALK_WORKER_ROLES", "").split(",")}


def allowed_longtalk_names() -> set[str]:
    names = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    names |= {env_name(f.name) for cls in (ModelFiles, SamplerSettings) for f in dataclasses.fields(cls)}
    names |= {GRAPHS_DIR_ENV, MODES_ENV}
    names |= set(RENAMED)  # old names still read (as their new ones)
    return names


# ---------------------------------------------------------------------------------------------
# Reading YAML
# ---------------------------------------------------------------------------------------------

def test_yaml_reading_handles_anchors_merges_and_blocks():
    text = textwrap.dedent("""\
        x-base: &base
          image: "a:1"   # comment
          env: &env
            A: "1"
            B: two
        s:
          one:
            <<: *base
            env:
              <<: *env
              B: three
            list: ["x", 'y', z]
            ports:
              - "127.0.0.1:80:80"
            cmd:
              - |
                echo "$$HOME" # kept
                exit 0
            nested:
              - name: n
                value: 5
            empty:
        """)
    data = load_yaml(text)
    one = data["s"]["one"]
    assert one["image"] == "a:1"
    assert one["env"] == {"A": "1", "B": "three"}
    assert data["x-base"]["env"] == {"A": "1", "B": "two"}
    assert one["list"] == ["x", "y", "z"]
    assert one["ports"] == ["127.0.0.1:80:80"]
    assert one["cmd"] == ['echo "$$HOME" # kept\nexit 0\n']
    assert one["nested"] == [{"name": "n", "value": 5}]
    assert one["empty"] is None


def test_duplicate_keys_are_refused():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        load_yaml("a: 1\nb: 2\na: 3\n")


# ---------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------

def test_expected_services_exist(services):
    for name in ("postgresql", "temporal", "temporal-ui", "minio", "minio-init", "comfyui-0",
                 "gpu-worker-0", "cpu-worker", "fetch-models"):
        assert name in services, f"docker-compose.yml has no service {name}"


def test_required_variables_are_in_env_example(raw_compose, example_env):
    text = COMPOSE_FILE.read_text()
    problems = []
    for name, op, _arg in compose_variables("\n".join(all_strings(raw_compose))):
        if op in (":?", "?") and not example_env.get(name):
            problems.append(f"{name} is required by docker-compose.yml but has no value in .env.example")
        if op == "" and name not in example_env:
            problems.append(f"${{{name}}} has no default and is not in .env.example")
    assert not problems, problems
    # every variable .env.example sets is used somewhere (a stale name would mislead)
    used = {name for name, _, _ in compose_variables(text)}
    assert not set(example_env) - used, f"unused in docker-compose.yml: {sorted(set(example_env) - used)}"


def test_compose_refuses_to_start_without_secrets(raw_compose):
    with pytest.raises(MissingVariable):
        interpolate_tree(raw_compose, {})


def test_build_contexts_and_dockerfiles_exist(services):
    built = 0
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        built += 1
        if isinstance(build, str):
            build = {"context": build}
        context = (ROOT / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert ROOT in (context, *context.parents), f"{name}: build context outside the repository"
    assert built >= 4


def test_dockerfile_copy_sources_exist_and_are_not_ignored(services):
    seen = set()
    for name, service in services.items():
        build = service.get("build")
        if not build:
            continue
        context = (ROOT / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        if dockerfile in seen:
            continue
        seen.add(dockerfile)
        assert check_dockerfile(dockerfile, context) == [], name
    assert seen == {COMFY_DOCKERFILE, WORKER_DOCKERFILE}


def test_a_missing_or_ignored_copy_source_is_caught(tmp_path):
    """The check above can fail: a copy of the worker Dockerfile with bad sources."""
    context = tmp_path / "ctx"
    good = context / "docker" / "worker" / "Dockerfile"
    good.parent.mkdir(parents=True)
    shutil.copy(WORKER_DOCKERFILE, good)
    shutil.copy(ROOT / ".dockerignore", context / ".dockerignore")
    for ins in parse_dockerfile(WORKER_DOCKERFILE.read_text()):
        for source in (copy_sources(ins, {}) or []) if ins.keyword in ("COPY", "ADD") else []:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, context / source)
    assert check_dockerfile(good, context) == []

    bad = context / "docker" / "worker" / "Dockerfile.bad"
    bad.write_text(good.read_text()
                   + "COPY does_not_exist.py ./\n"
                   + "COPY --chown=1:1 [\"longtalk\", \"missing_dir\", \"/app/\"]\n"
                   + "COPY .ci ./ci\n")
    (context / ".ci").mkdir(exist_ok=True)
    problems = check_dockerfile(bad, context)
    assert any("does_not_exist.py" in p and "does not exist" in p for p in problems), problems
    assert any("missing_dir" in p for p in problems), problems
    assert any("'.ci'" in p and ".dockerignore" in p for p in problems), problems
    assert not any("'longtalk'" in p for p in problems), problems

    # removing a file the real Dockerfile copies is caught too
    (context / "requirements.lock").unlink()
    assert any("requirements.lock" in p for p in check_dockerfile(good, context))


def test_dockerignore_keeps_what_the_images_need_and_drops_secrets():
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    for kept in ("pyproject.toml", "README.md", "requirements.lock", "worker.py", "longtalk/settings.py",
                 "comfy_graphs/i2v_single.json", "scripts/fetch_models.sh", "docker/comfyui/constraints.txt",
                 "examples/demo.json", ".env.example"):
        assert not ignore.excluded(kept), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "data/s3/x", "out/demo.mp4", ".env", ".env.local",
                    "longtalk/__pycache__/x.pyc", "tests/fixtures/comfy_schema.json", "longtalk.egg-info/PKG-INFO"):
        assert ignore.excluded(dropped), dropped


def test_bind_mounts_from_the_repository_exist(services):
    problems = []
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                if volume.get("type") != "bind":
                    continue
                source = volume["source"]
            else:
                source = volume.split(":", 1)[0]
                if not source.startswith((".", "/", "~")):
                    continue  # a named volume
                assert source.startswith("."), f"{name}: absolute host path {source} assumes one machine's layout"
            if not (ROOT / source).exists():
                problems.append(f"{name}: bind mount source {source} does not exist")
    assert not problems, problems


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared under volumes:"


def test_scripts_referenced_exist_and_are_executable(services):
    """A command that names a file copied into the image: the file exists and is executable."""
    checked = 0
    for name, service in services.items():
        build = service.get("build")
        argv = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
        if isinstance(service.get("entrypoint"), str) or isinstance(service.get("command"), str):
            pytest.fail(f"{name}: use the list form for entrypoint/command")
        if build:
            destinations = copy_destinations(parse_dockerfile((ROOT / build["dockerfile"]).read_text()))
            for arg in argv:
                if arg in destinations:
                    source = ROOT / destinations[arg]
                    assert source.is_file(), f"{name}: {arg} comes from {source}, which does not exist"
                    assert os.access(source, os.X_OK), f"{name}: {source} is not executable (chmod +x)"
                    checked += 1
                elif arg.startswith("/opt/longtalk/"):
                    raise AssertionError(f"{name}: {arg} is not copied into the image")
    assert checked >= 1
    assert os.access(FETCH_SCRIPT, os.X_OK)
    # the worker image runs worker.py and starter.py from its working directory
    worker_copies = {s for ins in parse_dockerfile(WORKER_DOCKERFILE.read_text()) if ins.keyword == "COPY"
                     for s in copy_sources(ins, {}) or []}
    assert {"worker.py", "starter.py"} <= worker_copies


def test_images_are_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service names its image too)"
        assert image_is_pinned(image), f"{name}: image {image!r} is not pinned to a tag"
    for dockerfile in (COMFY_DOCKERFILE, WORKER_DOCKERFILE):
        instructions = parse_dockerfile(dockerfile.read_text())
        args = dockerfile_args(instructions)
        for ins in instructions:
            if ins.keyword == "FROM":
                image = _substitute(ins.args.split()[0], args)
                assert image_is_pinned(image), f"{dockerfile}: FROM {image} is not pinned"


def test_longtalk_variables_are_real_settings(services):
    allowed = allowed_longtalk_names()
    problems = []
    for name, service in services.items():
        for key in env_of(service):
            if key.startswith(PREFIX) and key not in allowed:
                problems.append(f"{name}: {key} is not a Settings or GraphConfig field")
    for dockerfile in (COMFY_DOCKERFILE, WORKER_DOCKERFILE):
        for key in re.findall(r"\b(LONGTALK_[A-Z0-9_]+)=", dockerfile.read_text()):
            if key not in allowed:
                problems.append(f"{dockerfile}: {key} is not a Settings or GraphConfig field")
    assert not problems, problems
    assert "LONGTALK_NOT_A_SETTING" not in allowed and "LONGTALK_COMFY_URL" in allowed \
        and "LONGTALK_COMFY_BLOCKS_TO_SWAP" in allowed and "LONGTALK_COMFY_GRAPHS_DIR" in allowed


def test_worker_settings_read_cleanly(services):
    """Each worker's environment (with .env.example) is what Settings/GraphConfig accept."""
    workers = {n: s for n, s in services.items() if "LONGTALK_WORKER_ROLES" in env_of(s)}
    assert {"cpu-worker", "gpu-worker-0"} <= set(workers)
    for name, service in workers.items():
        env = env_of(service)
        settings = Settings.from_env(env)
        config = GraphConfig.from_env(env)
        assert settings.backend == "comfyui", name
        assert settings.temporal_address == "temporal:7233", name
        assert settings.s3_endpoint == "minio:9000", name
        assert settings.metrics_host == "0.0.0.0" and settings.metrics_port > 0, name
        assert config.graphs_dir is not None, name
        # nothing on a worker may assume it shares a machine with the stack
        for key, value in env.items():
            if key == "LONGTALK_S3_PUBLIC_ENDPOINT":
                continue  # the address users' video_url points at; workers never connect to it
            assert not re.search(r"\b(localhost|127\.0\.0\.1)\b", value), f"{name}: {key}={value}"
        assert "network_mode" not in service, name


def test_cpu_worker(services):
    env = env_of(services["cpu-worker"])
    assert env["LONGTALK_WORKER_ROLES"] == "cpu"
    assert env["LONGTALK_METRICS_HOST"] == "0.0.0.0" and int(env["LONGTALK_METRICS_PORT"]) > 0
    assert services["cpu-worker"]["build"]["dockerfile"] == "docker/worker/Dockerfile"
    assert services["cpu-worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_gpu_services_reserve_a_gpu_each(services):
    comfy = {n: s for n, s in services.items() if is_comfyui(s)}
    assert "comfyui-0" in comfy
    seen_ids = {}
    for name, service in comfy.items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia", name
        assert device["capabilities"] == ["gpu"], name
        ids = device["device_ids"]
        assert isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], str), f"{name}: device_ids {ids}"
        assert ids[0] not in seen_ids, f"{name} and {seen_ids.get(ids[0])} reserve the same GPU"
        seen_ids[ids[0]] = name
        suffix = name.rsplit("-", 1)[1]
        assert ids[0] == suffix, f"{name} reserves GPU {ids[0]}"
        assert "ports" not in service, f"{name}: ComfyUI must stay on the internal network"
        assert "/system_stats" in " ".join(service["healthcheck"]["test"]), name
        assert any(str(v).endswith(":/opt/ComfyUI/models") for v in service["volumes"]), name
    for name, service in services.items():
        if "deploy" in service and name not in comfy:
            raise AssertionError(f"{name} reserves devices but is not a ComfyUI server")


def test_each_gpu_worker_points_at_its_own_comfyui(services):
    workers = gpu_workers(services)
    comfy = {n for n, s in services.items() if is_comfyui(s)}
    assert "gpu-worker-0" in workers
    targets = {}
    for name, service in workers.items():
        env = env_of(service)
        assert env["LONGTALK_WORKER_ROLES"] == "gpu", name
        assert env["LONGTALK_BACKEND"] == "comfyui", name
        m = re.fullmatch(r"http://([a-z0-9-]+):8188/?", env["LONGTALK_COMFY_URL"])
        assert m, f"{name}: LONGTALK_COMFY_URL {env['LONGTALK_COMFY_URL']!r}"
        target = m.group(1)
        assert target in comfy, f"{name}: {target} is not a ComfyUI service"
        assert target.rsplit("-", 1)[1] == name.rsplit("-", 1)[1], f"{name} feeds {target}"
        assert target not in targets, f"{name} and {targets.get(target)} share {target}"
        targets[target] = name
        deps = service["depends_on"]
        assert deps[target]["condition"] == "service_healthy", name
        assert deps["temporal"]["condition"] == "service_healthy", name
        assert service["build"]["dockerfile"] == "docker/worker/Dockerfile", name
        # they talk over HTTP only: no volume shared with the ComfyUI service
        mine = {str(v).split(":", 1)[0] for v in service.get("volumes") or []}
        theirs = {str(v).split(":", 1)[0] for v in services[target].get("volumes") or []}
        assert not mine & theirs, f"{name} shares {mine & theirs} with {target}"
    assert set(targets) == comfy, f"ComfyUI services without a worker: {comfy - set(targets)}"


def compose_duration_s(value) -> float:
    """A compose duration ("90s", "11m", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def test_workers_stop_after_their_graceful_shutdown(services):
    """Compose kills a container stop_grace_period after SIGTERM: it must outlast the worker's
    own graceful shutdown, or a GPU worker is killed in the middle of the window it finishes."""
    workers = {n: s for n, s in services.items() if "LONGTALK_WORKER_ROLES" in env_of(s)}
    assert {"cpu-worker", "gpu-worker-0"} <= set(workers)
    for name, service in workers.items():
        settings = Settings.from_env(env_of(service))
        roles = env_of(service)["LONGTALK_WORKER_ROLES"].split(",")
        grace = max(settings.gpu_shutdown_grace_s if "gpu" in roles else 0,
                    settings.cpu_shutdown_grace_s if "cpu" in roles else 0)
        stop = compose_duration_s(service.get("stop_grace_period", "10s"))
        assert stop > grace, f"{name}: stop_grace_period {stop:g}s is not longer than its graceful shutdown {grace:g}s"
    assert Settings().gpu_shutdown_grace_s >= 300  # a real window, not seconds
    assert compose_duration_s("1m30s") == 90


def test_commented_example_for_another_gpu_is_valid():
    """The commented comfyui-1/gpu-worker-1 blocks, uncommented, are a valid second GPU."""
    text = COMPOSE_FILE.read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# comfyui-1:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append(line)
    assert block, "no commented example for a second GPU"
    uncommented = "\n".join(re.sub(r"^  # ?", "  ", line) if line.strip() != "#" else "" for line in block)
    services_at = text.index("\nservices:\n") + len("\nservices:\n")
    text2 = text[:services_at] + uncommented + "\n\n" + text[services_at:]
    data = interpolate_tree(load_yaml(text2), read_env_file(ENV_EXAMPLE))
    services = data["services"]
    assert services["comfyui-1"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["1"]
    test_gpu_services_reserve_a_gpu_each(services)
    test_each_gpu_worker_points_at_its_own_comfyui(services)
    assert set(gpu_workers(services)) == {"gpu-worker-0", "gpu-worker-1"}
    test_workers_stop_after_their_graceful_shutdown(services)


def test_stack_services(services):
    pg = services["postgresql"]
    assert pg["image"].startswith("postgres:16")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])

    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:1.29.")  # fairness keys
    assert env_of(temporal)["DYNAMIC_CONFIG_FILE_PATH"] == "config/dynamicconfig/longtalk.yaml"
    mount = next(v for v in temporal["volumes"] if v.endswith("longtalk.yaml:ro"))
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    assert config["matching.enableFairness"][0]["value"] is True
    assert env_of(temporal)["DB"] == "postgres12"
    assert env_of(temporal)["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert "cluster health" in " ".join(temporal["healthcheck"]["test"])

    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert ui["ports"] == ["127.0.0.1:8080:8080"]

    minio = services["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")
    assert "--console-address" in minio["command"]
    assert any(str(v).endswith(":/data") for v in minio["volumes"])
    assert minio["healthcheck"]["test"]

    init = services["minio-init"]
    assert init["image"].startswith("minio/mc:RELEASE.")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert env_of(init)["LONGTALK_BUCKET"] == "renders"
    script = "\n".join(init["command"])
    assert "mc mb --ignore-existing" in script and "$LONGTALK_BUCKET" in script

    # everything published defaults to loopback
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not bound to 127.0.0.1 by default"


def test_fetch_models_service(services):
    fetch = services["fetch-models"]
    assert fetch["profiles"] == ["setup"]
    assert fetch["entrypoint"] == ["/opt/longtalk/fetch_models.sh"]
    assert fetch["command"] == ["/opt/ComfyUI/models"]
    comfy_models = {v for v in services["comfyui-0"]["volumes"]}
    assert set(fetch["volumes"]) == comfy_models, "fetch-models must fill the volume ComfyUI reads"
    assert "deploy" not in fetch


# ---------------------------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------------------------

def test_comfyui_dockerfile_pins_every_commit():
    text = COMFY_DOCKERFILE.read_text()
    instructions = parse_dockerfile(text)
    args = dockerfile_args(instructions)
    commits = {k: v for k, v in args.items() if k.endswith("_COMMIT")}
    assert commits == PINNED_COMMITS
    for name, value in commits.items():
        assert re.fullmatch(r"[0-9a-f]{40}", value), f"{name}={value} is not a 40-hex commit"
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    for name in commits:
        assert "${" + name + "}" in runs, f"{name} is declared but not checked out"
    for repo in ("comfyanonymous/ComfyUI", "kijai/ComfyUI-WanVideoWrapper", "kijai/ComfyUI-KJNodes",
                 "Kosinkadink/ComfyUI-VideoHelperSuite", "kijai/ComfyUI-MelBandRoFormer"):
        assert f"https://github.com/{repo}.git" in runs, repo
    assert "git clone" not in runs, "clone by commit (fetch + checkout), not a branch"
    assert 'rev-parse HEAD)" = "$3"' in runs, "the checkout is verified against the commit"


def test_comfyui_dockerfile_runtime():
    instructions = parse_dockerfile(COMFY_DOCKERFILE.read_text())
    froms = [ins.args for ins in instructions if ins.keyword == "FROM"]
    assert froms and re.match(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.04$", froms[0])
    env = " ".join(ins.args for ins in instructions if ins.keyword == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    cmd = [json.loads(ins.args) for ins in instructions if ins.keyword == "CMD"]
    assert cmd[-1] == ["python", "main.py", "--listen", "0.0.0.0", "--port", "8188"]
    health = [ins.args for ins in instructions if ins.keyword == "HEALTHCHECK"]
    assert health and "curl" in health[0] and "/system_stats" in health[0]
    volumes = [ins.args for ins in instructions if ins.keyword == "VOLUME"]
    assert volumes and "/opt/ComfyUI/models" in volumes[0]
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    assert "-c /opt/longtalk/constraints.txt" in runs
    args = dockerfile_args(instructions)
    assert args["TORCH_INDEX_URL"].endswith("/cu128")
    assert "sageattention" not in runs.lower()
    # the torch versions installed from the CUDA index are the ones the constraints pin
    pins = constraint_pins()
    assert pins["torch"] == args["TORCH_VERSION"]
    assert pins["torchvision"] == args["TORCHVISION_VERSION"]
    assert pins["torchaudio"] == args["TORCHAUDIO_VERSION"]


def constraint_pins() -> dict[str, str]:
    """constraints.txt: canonical name (huggingface-hub) -> version, every line NAME==VERSION."""
    return read_pins(CONSTRAINTS)


def test_constraints_pin_torch_and_key_packages():
    pins = constraint_pins()
    for name in ("torch", "torchvision", "torchaudio", "transformers", "diffusers", "accelerate", "peft",
                 "numpy", "av", "librosa", "opencv-python", "comfy-kitchen"):
        assert name in pins, f"constraints.txt does not pin {name}"
    # no requirements file asks for onnxruntime (only FantasyPortrait, unused, needs it): a
    # constraint nobody requests installs nothing and only reads as if it did
    assert "onnxruntime" not in pins and "onnx" not in pins


# Facts checked by hand (docker/comfyui/README.md, "Pins"), keyed by what they depend on.
# With torch 2.7.1 (triton 3.3.1) on a machine without a GPU driver, `import comfy_kitchen`
# raises "0 active drivers" from this comfy-kitchen version on: its triton backend runs
# @triton.autotune at import, and triton 3.3's Autotuner asks for the active driver.
KITCHEN_RAISES_WITHOUT_DRIVER_FROM = {"2.7.1": (0, 2, 11)}
# For a ComfyUI commit: the first ComfyUI-KJNodes commit it rejects, with its date.
# 40a37df "SimpleCalculatorKJ: Add autogrow" passes io.Schema(search_aliases=...), which
# ComfyUI 0.8.0's Schema does not take: every /object_info logs an [ERROR] traceback.
KJNODES_FIRST_REJECTED = {
    "3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce": ("40a37dfea5976ef2f744556280e9b34f6c8670f4", "2026-01-30T18:44:58+02:00"),
}
# Commit dates of KJNodes commits that were pins (git log -1 --format=%cI COMMIT).
KJNODES_COMMIT_DATES = {
    "955a93b230c5e2130316beb5d502fc46685b6670": "2026-01-30T17:27:04+02:00",  # 40a37df's parent
    "16a335c8c40b1b3eef8b770022276004d5bea66b": "2026-02-01T14:50:27+02:00",  # raised on /object_info
}


def test_comfy_kitchen_pin_imports_without_a_gpu_driver():
    pins = constraint_pins()
    torch_version = pins["torch"]
    assert torch_version in KITCHEN_RAISES_WITHOUT_DRIVER_FROM, (
        f"torch {torch_version}: check which comfy-kitchen versions import without a GPU driver "
        "under its triton, then record it in KITCHEN_RAISES_WITHOUT_DRIVER_FROM")
    kitchen = tuple(int(part) for part in pins["comfy-kitchen"].split("."))
    assert kitchen < KITCHEN_RAISES_WITHOUT_DRIVER_FROM[torch_version], \
        f"comfy-kitchen {pins['comfy-kitchen']} raises at import without a GPU driver: main.py --cpu cannot start"
    # and the image build checks it with no GPU visible, whatever the build host has
    runs = " ".join(ins.args for ins in parse_dockerfile(COMFY_DOCKERFILE.read_text()) if ins.keyword == "RUN")
    assert re.search(r"CUDA_VISIBLE_DEVICES= python -c \"import comfy_kitchen\b", runs)


def test_kjnodes_pin_is_older_than_what_the_comfyui_pin_rejects():
    args = dockerfile_args(parse_dockerfile(COMFY_DOCKERFILE.read_text()))
    comfyui, kjnodes = args["COMFYUI_COMMIT"], args["KJNODES_COMMIT"]
    assert comfyui in KJNODES_FIRST_REJECTED, \
        f"ComfyUI {comfyui}: find the first KJNodes commit it rejects and record it in KJNODES_FIRST_REJECTED"
    assert kjnodes in KJNODES_COMMIT_DATES, f"KJNodes {kjnodes}: record its commit date in KJNODES_COMMIT_DATES"
    first_rejected, rejected_date = KJNODES_FIRST_REJECTED[comfyui]
    pinned = dt.datetime.fromisoformat(KJNODES_COMMIT_DATES[kjnodes])
    assert kjnodes != first_rejected and pinned < dt.datetime.fromisoformat(rejected_date), \
        f"KJNodes {kjnodes[:7]} is not older than {first_rejected[:7]}, which ComfyUI {comfyui[:7]} rejects"


def test_constraints_pin_the_set_that_runs_every_node():
    """transformers 5.x returns no per-layer hidden states to the wrapper's Wav2Vec2 subclass,
    so MultiTalkWav2VecEmbeds fails in every mode; the set below ran every node of every graph
    (docker/comfyui/README.md, "Pins"). Move it only together with a doctor --smoke run."""
    pins = constraint_pins()
    working = {"transformers": "4.57.3", "tokenizers": "0.22.2", "huggingface_hub": "0.36.2", "diffusers": "0.35.2"}
    assert {name: pins.get(canonicalize_name(name)) for name in working} == working
    assert int(pins["transformers"].split(".")[0]) < 5
    readme = (ROOT / "docker" / "comfyui" / "README.md").read_text()
    for name, version in working.items():
        assert f"`{name}=={version}`" in readme, f"docker/comfyui/README.md does not say why {name} is pinned"


def test_torch_is_not_a_project_dependency():
    for where in ("pyproject.toml", "requirements.lock", "requirements-dev.lock"):
        text = (ROOT / where).read_text()
        assert not re.search(r"""(^|["'\s])torch(vision|audio)?\s*([=<>!~\[;"']|$)""", text, re.MULTILINE), \
            f"torch belongs in docker/comfyui/Dockerfile, not {where}"


def test_worker_dockerfile():
    instructions = parse_dockerfile(WORKER_DOCKERFILE.read_text())
    assert instructions[0].keyword == "FROM" and instructions[0].args.startswith("python:3.11-slim")
    runs = [ins.args for ins in instructions if ins.keyword == "RUN"]
    assert any("pip install -r requirements.lock" in r for r in runs)
    assert any("pip install --no-deps ." in r for r in runs)
    # the runtime set only: pytest, selenium, the runpod SDK ... stay out of the image
    assert not any("requirements-dev" in ins.args for ins in instructions), "the worker image installs the test tools"
    users = [ins.args for ins in instructions if ins.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the worker runs as an unprivileged user"
    cmd = [json.loads(ins.args) for ins in instructions if ins.keyword == "CMD"]
    assert cmd[-1] == ["python", "worker.py"]
    # the lock is installed before the code is copied (its layer survives code changes)
    order = [ins.args for ins in instructions if ins.keyword in ("COPY", "RUN")]
    lock_install = next(i for i, a in enumerate(order) if "requirements.lock" in a and "pip" in a)
    code_copy = next(i for i, a in enumerate(order) if a.startswith("longtalk"))
    assert lock_install < code_copy


def test_runpod_dockerfile():
    """The RunPod Serverless worker: FROM the ComfyUI image, longtalk and the runpod SDK (the
    version the tests ran with) in a venv of their own, the handler behind start.sh."""
    assert not check_dockerfile(RUNPOD_DOCKERFILE, ROOT)
    instructions = parse_dockerfile(RUNPOD_DOCKERFILE.read_text())
    assert dockerfile_args(instructions)["BASE_IMAGE"] == "longtalk-comfyui"
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    assert "^runpod==" in runs and "-c /opt/longtalk/requirements-dev.lock" in runs
    assert "import runpod, longtalk.serverless.handler" in runs
    users = [ins.args for ins in instructions if ins.keyword == "USER"]
    assert users[-1] not in ("root", "0")
    env = " ".join(ins.args for ins in instructions if ins.keyword == "ENV")
    assert not set(re.findall(r"\b(LONGTALK_[A-Z0-9_]+)=", env)) - allowed_longtalk_names()
    assert "LONGTALK_BACKEND=comfyui" in env
    start = ROOT / "docker" / "runpod" / "start.sh"
    assert os.access(start, os.X_OK)
    assert [json.loads(ins.args) for ins in instructions if ins.keyword == "CMD"][-1] == ["/opt/longtalk/start.sh"]
    assert "exec /opt/longtalk/venv/bin/python -m longtalk.serverless" in start.read_text()
    assert "runpod" in read_pins(ROOT / "requirements-dev.lock")


def test_dockerfile_parser_joins_continuations_and_skips_comments():
    parsed = parse_dockerfile("FROM a:1\n# c\nRUN one \\\n    # inner comment\n    two\nCOPY [\"x y\", \"/d/\"]\n")
    assert [(i.keyword, i.args) for i in parsed] == [("FROM", "a:1"), ("RUN", "one two"), ("COPY", '["x y", "/d/"]')]
    assert copy_sources(parsed[2], {}) == ["x y"]
    assert copy_sources(Instruction("COPY", "--from=build /a /b", 1), {}) is None
    assert not image_is_pinned("postgres") and not image_is_pinned("minio/minio:latest")
    assert image_is_pinned("postgres:16.6") and image_is_pinned("localhost:5000/img:1")
    assert not image_is_pinned("localhost:5000/img")


# ---------------------------------------------------------------------------------------------
# scripts/fetch_models.sh
# ---------------------------------------------------------------------------------------------

def script_list(*args: str) -> list[tuple[str, str]]:
    out = subprocess.run(["bash", str(FETCH_SCRIPT), "--list", *args], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return [tuple(line.split("/", 1)) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("args, multi, vocal", [
    ((), None, True),
    (("--only", "single"), False, True),
    (("--only", "multi"), True, True),
    (("--no-vocal-model",), None, False),
    (("--only", "single", "--no-vocal-model"), False, False),
])
def test_fetch_list_is_model_files_fetch_list(args, multi, vocal):
    listed = script_list(*args)
    expected = ModelFiles().fetch_list(multi=multi, vocal_separation=vocal)
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(expected)


def test_fetch_script_folders_are_model_folders():
    assert {folder for folder, _ in script_list()} == set(MODEL_FOLDERS.values())


def test_fetch_script_urls_name_their_files():
    text = FETCH_SCRIPT.read_text()
    entries = re.findall(r'^\s*"(all|single|multi|vocal)\|([^|]+)\|([^|]+)\|([^"]+)"\s*$', text, re.MULTILINE)
    assert len(entries) == len(ModelFiles().fetch_list())
    for _which, _folder, file, url in entries:
        assert url.startswith("$HF/") and url.rsplit("/", 1)[1] == file, url
        assert "/resolve/main/" in url


def write_fake_curl(bindir: Path, log: Path) -> None:
    """A curl that writes the URL into the --output file and logs each call."""
    bindir.mkdir()
    fake = bindir / "curl"
    fake.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        all="$*"; out=""; url=""
        while [ $# -gt 0 ]; do
          case "$1" in
            --output) out="$2"; shift ;;
            -H|--continue-at|--connect-timeout|--retry|--retry-delay) shift ;;
            -*) ;;
            *) url="$1" ;;
          esac
          shift
        done
        echo "$all" >> "{log}"
        case "$url" in *FAIL*) exit 22 ;; esac
        printf '%s' "$url" >> "$out"
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_fetch_script_downloads_by_name_and_is_idempotent(tmp_path):
    log = tmp_path / "curl.log"
    write_fake_curl(tmp_path / "bin", log)
    models = tmp_path / "models"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HF_ENDPOINT": "https://hf.test"}
    env.pop("HF_TOKEN", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(FETCH_SCRIPT), *args, str(models)], env=env, check=False,
                              capture_output=True, text=True, timeout=60)

    first = run()
    assert first.returncode == 0, first.stderr
    expected = ModelFiles().fetch_list()
    for folder, file in expected:
        path = models / folder / file
        assert path.is_file() and path.read_text().endswith("/" + file)
        assert path.read_text().startswith("https://hf.test/")
    assert not list(models.rglob("*.part"))
    assert len(log.read_text().splitlines()) == len(expected)

    # a second run downloads nothing; an empty file is fetched again
    (models / "vae" / ModelFiles().vae).write_bytes(b"")
    second = run()
    assert second.returncode == 0, second.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == len(expected) + 1 and ModelFiles().vae in calls[-1]
    assert (models / "vae" / ModelFiles().vae).stat().st_size > 0


def test_fetch_script_keeps_partial_downloads_out_of_place(tmp_path):
    log = tmp_path / "curl.log"
    write_fake_curl(tmp_path / "bin", log)
    models = tmp_path / "models"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "HF_ENDPOINT": "https://FAIL.test", "HF_TOKEN": "secret-token"}
    # no sleeping between attempts in the test: a failing curl makes the script give up
    script = FETCH_SCRIPT.read_text().replace("sleep $((attempt * 10))", ":")
    assert script != FETCH_SCRIPT.read_text(), "the retry pause moved: update this test"
    fast = tmp_path / "fetch_models.sh"
    fast.write_text(script)
    result = subprocess.run(["bash", str(fast), "--only", "single", str(models)], env=env, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "could not download" in result.stderr
    assert not [p for p in models.rglob("*") if p.is_file() and not p.name.endswith(".part")]
    assert "Authorization: Bearer secret-token" in log.read_text()
    assert "secret-token" not in result.stdout + result.stderr


def test_fetch_script_refuses_bad_arguments():
    for args in (["--only", "both", "/tmp/x"], [], ["--bogus", "/tmp/x"]):
        result = subprocess.run(["bash", str(FETCH_SCRIPT), *args], check=False, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 2, args


# ---------------------------------------------------------------------------------------------
# README: Run on GPUs
# ---------------------------------------------------------------------------------------------

def test_gpu_doc_names_real_things(services):
    doc = GPU_DOC.read_text()
    for _folder, file in ModelFiles().fetch_list():
        assert file in doc, f"README does not list {file}"
    for cmd in ("cp .env.example .env", "docker compose --profile setup run --rm fetch-models",
                "docker compose up -d", "python -m comfy_graphs check"):
        assert cmd in doc, cmd
    for name in re.findall(r"docker compose (?:[a-z-]+ )*?(?:run --rm|up -d --no-deps|logs -f|exec) ([a-z][a-z0-9-]*)", doc):
        assert name in services or re.fullmatch(r"(comfyui|gpu-worker)-\d+", name), name
    for var in set(re.findall(r"\bLONGTALK_[A-Z0-9_]+\b", doc)):
        if var.endswith("_"):
            continue  # a prefix, e.g. LONGTALK_COMFY_<NAME>
        assert var in allowed_longtalk_names(), var


def test_api_service(services):
    """The HTTP API: the worker image with another command, keys and webhook secret required,
    published on loopback by default, the input volume mounted like RunPod's /runpod-volume."""
    from api.auth import Keys

    api = services["api"]
    assert api["build"]["dockerfile"] == "docker/worker/Dockerfile" and api["command"] == ["python", "-m", "api"]
    env = env_of(api)
    settings = Settings.from_env(env)
    assert settings.api_address == "0.0.0.0:8000" and len(Keys.from_settings(settings)) >= 1
    assert settings.api_webhook_secret and settings.temporal_address == "temporal:7233"
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    assert "/runpod-volume" in settings.input_roots.split(":")
    assert any(v.endswith(":/runpod-volume") for v in api["volumes"])
    assert api["depends_on"]["temporal"]["condition"] == "service_healthy"
    copies = {s for ins in parse_dockerfile(WORKER_DOCKERFILE.read_text()) if ins.keyword == "COPY"
              for s in copy_sources(ins, {}) or []}
    assert "api" in copies
