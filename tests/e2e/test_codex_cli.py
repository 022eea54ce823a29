"""OpenAI's Codex CLI (the npm package `.ci/run` pins under .tools/) against the real worker
through a custom provider on the Responses API: `codex exec` completes a turn with rc 0; on the
scripted Codex model (server/testing/codex_script.py) it runs its shell tool and reads the output
back, by hand and through `mlxctl codex exec`.

Codex sends its own ~12K-token prompt and nine tools, which the scripted tiny model never saw:
its reply is random text at Codex's temperature, so a turn may hit the worker's output cap,
which Codex rightly reports as a failed turn ("Incomplete response"). Runs repeat (each after
the first prefills from the cache) until one completes; anything else fails the test. Codex's
idle timeout is set far below the cold prefill, so the stream's keep-alives must reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from server.testing import codex_script
from tests.conftest import model_cache_dir, tiny_model
from tests.fixtures_worker import API_KEY, REPO_ROOT, start_worker

LOCAL_CODEX = REPO_ROOT / ".tools" / "codex" / "node_modules" / ".bin" / "codex"
INCOMPLETE = "Incomplete response returned, reason: max_output_tokens"
ATTEMPTS = 6


def codex_binary() -> str | None:
    return str(LOCAL_CODEX) if LOCAL_CODEX.exists() else shutil.which("codex")


@pytest.fixture(scope="module")
def codex_worker(tmp_path_factory):
    handle = start_worker(
        tiny_model(scripted=True),
        *("--max-output-tokens", "64", "--cache-dir", str(tmp_path_factory.mktemp("kv"))),
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def codex_home(path: Path, worker) -> Path:
    """A private CODEX_HOME whose config points Codex at the worker (the key from the env)."""
    models = httpx.get(worker.base_url + "/v1/models", headers={"x-api-key": API_KEY}).json()
    path.mkdir()
    (path / "config.toml").write_text(
        f'model_provider = "mlxctl"\n'
        f'model = "{models["data"][0]["id"]}"\n\n'
        "[model_providers.mlxctl]\n"
        'name = "mlxctl"\n'
        f'base_url = "{worker.base_url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "MLXCTL_TEST_KEY"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        # Far below a cold prefill of its prompt here (~20 s): the keep-alives must reach it.
        "stream_idle_timeout_ms = 5000\n"
    )
    return path


def run_codex(
    home: Path, workdir: Path, prompt: str, sandbox: str = "read-only"
) -> tuple[int, list[dict], str]:
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "HOME": str(workdir.parent),
        "MLXCTL_TEST_KEY": API_KEY,
    }
    result = subprocess.run(
        [codex_binary(), "exec", "--skip-git-repo-check", "--json", "-s", sandbox, prompt],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, events, result.stderr


needs_codex = pytest.mark.skipif(
    codex_binary() is None, reason="Codex is not installed (.ci/run installs it with npm)"
)


@needs_codex
def test_codex_exec_completes_a_turn_against_the_worker(codex_worker, tmp_path):
    home = codex_home(tmp_path / "codex-home", codex_worker)
    workdir = tmp_path / "work"
    workdir.mkdir()
    completed, spoke, runs = [], [], 0
    while runs < ATTEMPTS and not (spoke and runs >= 2):
        rc, events, stderr = run_codex(home, workdir, "Say hello.")
        runs += 1
        kinds = [e["type"] for e in events]
        if rc == 0:
            assert "turn.completed" in kinds, (kinds, stderr)
            completed.append(events)
            # A random reply may end at once (no text: no agent message); runs go on until
            # one says something, which Codex must show as its agent message.
            items = [e["item"]["type"] for e in events if e["type"] == "item.completed"]
            spoke += [events] if "agent_message" in items else []
        else:  # the random reply ran into the output cap: the one failure allowed
            failed = [e for e in events if e["type"] == "turn.failed"]
            assert failed and failed[0]["error"]["message"] == INCOMPLETE, (events, stderr)
    assert completed, f"no turn of {runs} completed"
    assert spoke, f"no completed turn of {runs} showed an agent message: {completed}"

    status = httpx.get(codex_worker.base_url + "/v1/status", headers={"x-api-key": API_KEY})
    rows = [r for r in status.json()["recent"] if r["protocol"] == "responses"][::-1]
    # A request per run, one more where a random reply was a call Codex answered (retries are
    # off in its config); none went the WebSocket way, and every one was served.
    assert len(rows) >= runs
    # Codex read the usage of our response.completed: its prompt and cached token counts, summed
    # over a turn's requests (a random reply that is a call Codex answers makes a turn of more).
    counts = [(r["prompt_tokens"], r["cached_tokens"]) for r in rows]
    turns = {
        (sum(p for p, _ in counts[i:j]), sum(c for _, c in counts[i:j]))
        for i in range(len(counts))
        for j in range(i + 1, len(counts) + 1)
    }
    for events in completed:
        [done] = [e for e in events if e["type"] == "turn.completed"]
        usage = done["usage"]
        assert (usage["input_tokens"], usage["cached_input_tokens"]) in turns, (usage, rows)
    # The same Codex prompt again: later runs prefill from the prefix cache.
    assert rows[0]["prompt_tokens"] > 5000 and rows[0]["cached_tokens"] == 0
    assert all(r["cached_tokens"] >= 0.9 * r["prompt_tokens"] for r in rows[1:])
    log = codex_worker.log()
    assert "GET /v1/responses" not in log
    assert log.count("POST /v1/responses 200") == len(rows)


def scripted_model() -> Path:
    return codex_script.build_codex_model(model_cache_dir() / "tiny-codex-script")


@pytest.fixture(scope="module")
def scripted_worker(tmp_path_factory):
    handle = start_worker(
        scripted_model(),
        *("--max-output-tokens", "200", "--cache-dir", str(tmp_path_factory.mktemp("kv"))),
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def shell_turn(events: list[dict]) -> tuple[dict, dict]:
    """The command Codex ran and its last message, from `codex exec --json` events."""
    done = [e["item"] for e in events if e["type"] == "item.completed"]
    [command] = [i for i in done if i["type"] == "command_execution"]
    [message] = [i for i in done if i["type"] == "agent_message"]
    return command, message


@needs_codex
def test_the_scripted_model_runs_codexs_shell_tool(scripted_worker, tmp_path):
    # Codex's prompt carries the date, cwd and ids; the model sees only its last 64 tokens (the
    # request, then the command's output), so it replays its script under any of them.
    home = codex_home(tmp_path / "codex-home", scripted_worker)
    workdir = tmp_path / "work"
    workdir.mkdir()
    rc, events, stderr = run_codex(home, workdir, codex_script.PROMPT, "danger-full-access")
    assert rc == 0, (events, stderr)
    command, message = shell_turn(events)
    assert "seq 1 60 | tee made-by-codex.txt" in command["command"]
    assert command["exit_code"] == 0 and command["aggregated_output"] == codex_script.OUTPUT
    assert (workdir / codex_script.FILE).read_text() == codex_script.OUTPUT
    # The model says so only when the command's output ends the second request's prompt.
    assert message["text"] == codex_script.REPLY
    headers = {"x-api-key": API_KEY}
    rows = httpx.get(scripted_worker.base_url + "/v1/status", headers=headers).json()["recent"]
    first, second = [r for r in rows if r["protocol"] == "responses"][::-1]
    assert first["finish"] == "tool_calls" and second["finish"] == "stop"
    assert second["prompt_tokens"] > first["prompt_tokens"] + 100  # the call and its output
    # The first prompt came from the cache (all but its last token, which is fed again).
    assert second["cached_tokens"] >= first["prompt_tokens"] - 1


@needs_codex
def test_mlxctl_codex_exec_runs_the_shell_tool(make_ctl, tmp_path):
    worker = (
        f"{{python}} -m server --model {scripted_model()} --host {{host}} --port {{port}} "
        f"--max-output-tokens 200 --cache-dir {tmp_path / 'kv'}"
    )
    home = tmp_path / "user-home"  # Codex writes under ~ and CODEX_HOME
    (home / ".codex").mkdir(parents=True)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"MLXCTL_WORKER_COMMAND": worker, "HOME": str(home), "MLXCTL_CODEX": codex_binary()}
    ctl = make_ctl(env={**env, "CODEX_HOME": str(home / ".codex")})
    args = (
        "exec",
        "--skip-git-repo-check",
        "--json",
        "-s",
        "danger-full-access",
        "-C",
        str(workdir),
    )
    result = ctl.run("codex", *args, codex_script.PROMPT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'-c model_providers.mlxctl.base_url="{ctl.url}/v1"' in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    command, message = shell_turn(events)
    assert command["exit_code"] == 0
    assert (workdir / codex_script.FILE).read_text() == codex_script.OUTPUT
    assert message["text"] == codex_script.REPLY
    turns = [r for r in ctl.status()[0]["recent"] if r["protocol"] == "responses"]
    assert len(turns) == 2
    assert not (home / ".codex" / "config.toml").exists()  # nothing written for it
