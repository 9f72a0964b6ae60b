"""The committed contract artifacts are exactly what a fresh compile of contracts/src produces."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import contracts
from payable.services import REPO_ROOT


@pytest.mark.skipif(shutil.which("node") is None or not (REPO_ROOT / "node_modules" / "solc").exists(),
                    reason="node or the npm package solc is absent: cannot recompile to compare")
def test_committed_artifacts_match_a_fresh_compile(tmp_path):
    subprocess.run(["node", "contracts/compile.mjs", str(tmp_path)], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in contracts.ARTIFACTS_DIR.glob("*.json"))
    assert fresh == committed
    for name in fresh:
        assert json.loads((tmp_path / name).read_text()) == json.loads((contracts.ARTIFACTS_DIR / name).read_text()), (
            f"{name} differs from a fresh compile: run `make contracts` and commit the artifacts"
        )
