"""The status words (interpflow.statuses): every one the package writes is typed, and budget stays budget."""

import ast
from pathlib import Path

from conftest import REPO

from interpflow.statuses import WORDS, is_score_status, llm_failure, no_explanation

KNOWN = set().union(*WORDS.values())
NOT_STATUS = {"object", "explanation_status"}  # a column's dtype in the table schemas; report's rename of it


def written_statuses(root: Path) -> dict[str, set[str]]:
    """String literals the package passes as `status=` keywords or `"status":` dict values, per file."""
    found = {}
    for path in sorted((root / "src/interpflow").rglob("*.py")):
        words = set()
        for node in ast.walk(ast.parse(path.read_text())):
            values = []
            if isinstance(node, ast.keyword) and node.arg == "status":
                values = [node.value]
            elif isinstance(node, ast.Dict):
                values = [v for k, v in zip(node.keys, node.values, strict=True)
                          if isinstance(k, ast.Constant) and k.value == "status"]  # fmt: skip
            for v in values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    words.add(v.value)
        if words:
            found[path.relative_to(root).as_posix()] = words
    return found


def test_every_status_the_package_writes_is_typed():
    found = written_statuses(REPO)
    assert len(found) >= 5 and any("ok" in w for w in found.values())  # the scan sees the package
    unknown = {f: sorted(w - KNOWN - NOT_STATUS) for f, w in found.items() if w - KNOWN - NOT_STATUS}
    assert not unknown, f"status words missing from interpflow.statuses: {unknown}"


def test_a_budget_stop_is_its_own_status():
    assert llm_failure("budget") == "budget" and llm_failure("error") == "llm_error"
    assert no_explanation("budget") == "no_explanation: budget" and is_score_status("no_explanation: budget")
    assert is_score_status("not_sampled") and is_score_status("calibration_failed")
    assert not is_score_status("no_explanation: whatever") and not is_score_status("llm_failed")
