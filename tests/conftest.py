"""Shared fixtures: test models (built or pulled once, cached across runs) and a private home.

Every test runs with its own MLXCTL_HOME (autouse), so none can touch the user's ~/.mlxctl.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_worker", "tests.fixtures_supervisor"]

# A run started in the background (`cmd &` in a script) ignores SIGINT, and every child inherits
# that: the tests' Ctrl-C would reach no process. Children start from the default instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "claude-code-2.1.328" / "fix-notes-session"


def model_cache_dir() -> Path:
    """Where built and pulled test models persist between runs (not the user's mlxctl home)."""
    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def tiny_model(**kwargs) -> Path:
    """A cached tiny random-weight model; the arguments go to `build_tiny_model`."""
    from server.testing.tiny_model import build_tiny_model

    key = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items())) or "default"
    return build_tiny_model(model_cache_dir() / f"tiny-{key}", **kwargs)


def tiny_vlm(family: str = "gemma3", **kwargs) -> Path:
    """A cached tiny random-weight vision-language model of `family` (its builder's arguments)."""
    from server.testing.tiny_vlm import BUILDERS

    key = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items())) or "default"
    prefix = "tiny-vlm" if family == "gemma3" else f"tiny-vlm-{family}"
    return BUILDERS[family](model_cache_dir() / f"{prefix}-{key}", **kwargs)


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last answer."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """2 layers, hidden 64, 32K context, tool-capable chat template."""
    return tiny_model()


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    """The real demo model (SmolLM2-135M-Instruct), pulled once into the test cache."""
    from mlxctl.models.pull import pull

    previous = os.environ.get("MLXCTL_HOME")
    os.environ["MLXCTL_HOME"] = str(model_cache_dir() / "home")
    try:
        info, _ = pull("demo")
    finally:
        if previous is None:
            os.environ.pop("MLXCTL_HOME", None)
        else:
            os.environ["MLXCTL_HOME"] = previous
    return Path(info.path)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh, private MLXCTL_HOME for every test, and plain, fixed-width terminal output."""
    # Beside tmp_path, not in it: tests that list their tmp_path must find only their own files.
    home = tmp_path_factory.mktemp("mlxctl-home")
    monkeypatch.setenv("MLXCTL_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("MLXCTL_DEBUG", raising=False)
    return home


@pytest.fixture
def mlxctl_home(isolated_home) -> Path:
    """The test's private MLXCTL_HOME (for tests that write into it)."""
    return isolated_home


@pytest.fixture(scope="session")
def claude_code_requests() -> list[dict]:
    """The captured Claude Code session requests, in order (carried in tests/fixtures/)."""
    import json

    requests = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    assert requests, f"no captured requests in {FIXTURES}"
    return requests
