"""schemathesis against the worker's own OpenAPI schema, every check on: whatever the schema
admits is answered without a 5xx or a hang, and every answer (status, content type, body,
headers, the `Allow` of a method a path does not take) is what the schema says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_worker import API_KEY

pytestmark = pytest.mark.slow
# Modest: the coverage phase adds its own cases per operation; all phases take ~15 s on 2 cores.
MAX_EXAMPLES = 10


def test_every_answer_matches_the_served_schema(worker, tmp_path):
    cli = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(cli),
            "run",
            worker.base_url + "/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "26",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",  # a generation runs up to the worker's 64-token cap; slower is a hang
            "--header",
            f"x-api-key: {API_KEY}",
            "--header",
            f"authorization: Bearer {API_KEY}",
            "--report-dir",
            str(tmp_path),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # It really tested every route (the generating ones included) with generated requests.
    tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", output)
    assert tested and len(set(tested.groups())) == 1 and int(tested[1]) >= 12, output
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated[1]) >= 12 * MAX_EXAMPLES, output
