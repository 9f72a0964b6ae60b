"""The import graph follows the loop: a stage reads only earlier stages, and nothing reads the audit stage.

Audit is the last stage (it projects everything into DuckDB); a stage that imports it would depend on a
later one. Only the audit stage's own modules, its Dagster asset and the ``payable audit`` command may.
Read from the source files with ``ast`` (no import runs), so the test holds without the heavy packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

from payable.services import REPO_ROOT

SOURCE_PACKAGES = ("assets", "contracts", "orchestration", "payable", "pipelines", "schemas")
# The stages of pipelines/, in loop order: each may import itself and the ones before it. Commitments come
# after rewards: they reuse its Merkle tree and outbox, and verify recomputes its split.
STAGES = ("ingest", "validate", "training", "attribution", "rewards", "commitments", "audit")
AUDIT_CALLERS = {"assets/audit.py", "payable/cli/audit.py"}


def _source_files() -> list[Path]:
    return sorted(p for package in SOURCE_PACKAGES for p in (REPO_ROOT / package).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level imports included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipelines" and parts[1] in STAGES else None


def test_the_scan_sees_the_known_imports():
    """Guards the test itself: the scan finds imports written both ways, at module and function level."""
    imports = {p.relative_to(REPO_ROOT).as_posix(): _imported_modules(p) for p in _source_files()}
    assert "pipelines.audit.build" in imports["assets/audit.py"]
    assert "pipelines.audit.reconcile" in imports["payable/cli/audit.py"]  # imported inside a function
    assert "pipelines.log_views" in imports["pipelines/training/data.py"]  # `from pipelines import log_views`


def _may_import_audit(rel: str) -> bool:
    return rel.startswith("pipelines/audit/") or rel in AUDIT_CALLERS


def test_nothing_outside_the_audit_stage_imports_it():
    offenders = [
        f"{rel} imports {module}"
        for path in _source_files()
        if not _may_import_audit(rel := path.relative_to(REPO_ROOT).as_posix())
        for module in sorted(_imported_modules(path))
        if _stage(module) == "audit"
    ]
    assert not offenders, "the audit stage is last; read the log through pipelines.log_views:\n" + "\n".join(offenders)


def test_a_stage_imports_only_earlier_stages():
    offenders = []
    for path in (REPO_ROOT / "pipelines").rglob("*.py"):
        own = _stage("pipelines." + ".".join(path.relative_to(REPO_ROOT / "pipelines").with_suffix("").parts))
        if own is None:
            continue
        for module in sorted(_imported_modules(path)):
            other = _stage(module)
            if other is not None and STAGES.index(other) > STAGES.index(own):
                offenders.append(f"{path.relative_to(REPO_ROOT)} ({own}) imports {module} ({other})")
    assert not offenders, "a stage depends on a later one:\n" + "\n".join(offenders)
