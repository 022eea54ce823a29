"""Preflight checks for `mlxctl doctor`: each returns pass, warn or fail with one line of detail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from mlxctl import paths
from mlxctl.doctor.check import FAIL, PASS, WARN, Check
from mlxctl.units import human_bytes

# Run in a subprocess so `mlxctl` itself never imports mlx (and a crash in it cannot hurt us).
_MLX_PROBE = """\
import json, mlx.core as mx
backend = "CPU"
if mx.metal.is_available():
    backend = "Metal"
elif getattr(mx, "cuda", None) is not None and mx.cuda.is_available():
    backend = "CUDA"
print(json.dumps({"version": mx.__version__, "backend": backend}))
"""


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 11)
    return Check("python", PASS if ok else FAIL, version + ("" if ok else " (3.11+ needed)"))


def probe_mlx() -> tuple[Check, str | None]:
    from server.edge.blas import worker_env

    try:
        result = subprocess.run(
            [sys.executable, "-c", _MLX_PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            env=worker_env(),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Check("mlx", FAIL, "importing mlx took over 120s"), None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return Check("mlx", FAIL, lines[-1] if lines else f"exit {result.returncode}"), None
    info = json.loads(result.stdout.strip().splitlines()[-1])
    return Check("mlx", PASS, f"mlx {info['version']}, backend {info['backend']}"), info["backend"]


def check_openblas(backend: str | None) -> Check:
    from server.edge.blas import find_openblas

    if not sys.platform.startswith("linux") or backend not in ("CPU", None):
        return Check("openblas", PASS, "not needed on this backend")
    found = find_openblas()
    if found:
        return Check("openblas", PASS, found)
    return Check(
        "openblas",
        WARN,
        "no system OpenBLAS: CPU matmuls are ~30x slower "
        "(Debian/Ubuntu: apt install libopenblas0-pthread)",
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(settings: dict) -> Check:
    free = shutil.disk_usage(_existing(paths.home())).free
    budget = settings["cache.disk_bytes"]
    detail = f"{human_bytes(free)} free, disk cache budget {human_bytes(budget)}"
    if free < 1024**3:
        return Check("disk", FAIL, detail)
    return Check("disk", PASS if free >= budget else WARN, detail)


def check_model(settings: dict, model: str | None) -> tuple[Check, int | None]:
    from mlxctl.errors import ModelError
    from mlxctl.models import registry

    name = model or settings["model"] or registry.DEMO_MODEL
    try:
        resolved = registry.resolve(name)
    except ModelError as exc:
        if name == registry.DEMO_MODEL:
            return Check("model", WARN, "demo model not installed yet; `start` pulls it"), None
        return Check("model", FAIL, f"{exc} ({exc.hint})" if exc.hint else str(exc)), None
    local = Path(resolved)
    if local.is_dir():
        info = registry.describe(local)
        return Check("model", PASS, f"{name}: {resolved} ({human_bytes(info.size_bytes)})"), (
            info.size_bytes
        )
    return Check("model", PASS, f"{name}: Hugging Face id, fetched by the worker"), None


def _chat_templates(folder: Path) -> list[str]:
    """The chat template texts a model folder ships (tokenizer_config.json, or beside it)."""
    texts: list[str] = []
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            texts.append(template)
        elif isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            texts += [t.get("template", "") for t in template if isinstance(t, dict)]
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        texts.append(jinja.read_text())
    return texts


def check_template(settings: dict, folder: str | None) -> Check | None:
    """Warn where the model's chat template has no tools: an agent's tools would be dropped
    from every prompt (None: no local folder to read)."""
    if folder is None:
        return None
    try:
        texts = _chat_templates(Path(folder))
    except (OSError, ValueError) as exc:
        return Check("template", WARN, f"chat template unreadable: {exc}")
    if not texts:
        return Check("template", WARN, "no chat template: the worker cannot render chats")
    if not any("tools" in text for text in texts):
        return Check(
            "template",
            WARN,
            "the chat template drops tools: tool requests are served without them "
            "(a forced tool_choice is refused); use a tool-calling model for agents",
        )
    return Check("template", PASS, "the chat template renders tools")


def check_port(settings: dict, port: int | None) -> Check:
    from mlxctl.status import status
    from mlxctl.system.processes import port_in_use, port_is_free

    port = port or settings["port"]
    if port_is_free(settings["host"], port):
        return Check("port", PASS, f"{settings['host']}:{port} is free")
    now = status(probe=False)
    if now.running and now.port == port:
        return Check("port", PASS, f"{port} is served by the running mlxctl worker")
    return Check("port", FAIL, str(port_in_use(port)))


def check_ram(model_bytes: int | None) -> Check:
    vm = psutil.virtual_memory()
    detail = f"{human_bytes(vm.available)} available of {human_bytes(vm.total)}"
    if model_bytes is None:
        return Check("ram", PASS, detail)
    detail += f", model {human_bytes(model_bytes)}"
    if model_bytes > vm.total:
        return Check("ram", FAIL, detail + ": the model is larger than RAM")
    if model_bytes > vm.available:
        return Check("ram", WARN, detail + ": less RAM free than the model needs")
    return Check("ram", PASS, detail)


def model_path(settings: dict, model: str | None) -> str | None:
    """The local folder the ranks load (None when it does not resolve to one)."""
    from mlxctl.errors import ModelError
    from mlxctl.models import registry

    try:
        resolved = registry.resolve(model or settings["model"] or registry.DEMO_MODEL)
    except ModelError:
        return None
    return resolved if Path(resolved).is_dir() else None
