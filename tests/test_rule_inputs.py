"""Each rule's package code (`code=code_of(...)` in its params, rules/common.smk) is a digest of the import
closure of its script, so editing a module reruns every rule that runs it and no other. Checked against an
independent closure (modulefinder's bytecode scan) and digest, on a hand-built package that is run and edited,
and on the default config's scorers."""

import hashlib
import json
import modulefinder
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

# Every rule of the workflow as {name: [script, its code files, its code param]}, read through Snakemake's API
PROBE = """
import json, pathlib
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ResourceSettings
with SnakemakeApi() as api:
    wf = api.workflow(ResourceSettings(), snakefile=pathlib.Path("Snakefile"))._workflow
    files = lambda r: wf.globals["code_files"](r.script) if r.script else []
    print(json.dumps({r.name: [r.script, files(r), r.params.get("code")] for r in wf.rules}))
"""


def snakemake(cwd: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"snakemake {args} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


class PackageFinder(modulefinder.ModuleFinder):
    """modulefinder (it scans bytecode, so imports inside functions count) following only interpflow."""

    def find_module(self, name, path, parent=None):
        full = f"{parent.__name__}.{name}" if parent else name
        if full.split(".")[0] != "interpflow" and name != "__init__":  # load_package looks up "__init__"
            raise ImportError(name)
        return super().find_module(name, path, parent)


def scanned_closure(script: Path, root: Path) -> set[str]:
    """The interpflow files running `script` can import, found without rules/common.smk's code."""
    finder = PackageFinder(path=[str(root / "src")])
    finder.run_script(str(script))
    files = {m.__file__ for name, m in finder.modules.items() if name.split(".")[0] == "interpflow"}
    return {Path(f).relative_to(root).as_posix() for f in files if f}


@pytest.fixture(scope="module")
def rules() -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def digest(root: Path, files: list[str]) -> str:
    """The code param of a closure, computed here: sha256 over each file's path and its bytes' sha256."""
    sha = lambda b: hashlib.sha256(b).hexdigest()[:16]  # noqa: E731
    return sha(" ".join(f"{f}:{sha((root / f).read_bytes())}" for f in sorted(files)).encode())


def test_every_rule_digests_its_scripts_import_closure(rules):
    scripted = {name: entry for name, entry in rules.items() if entry[0]}
    assert len(scripted) >= 20 and "score_embedding" in scripted  # the probe saw the real workflow
    wrong = {}
    for name, (script, code, param) in scripted.items():
        expected = scanned_closure((REPO / "rules" / script).resolve(), REPO)
        if set(code) != expected or len(code) != len(set(code)) or param != digest(REPO, sorted(expected)):
            wrong[name] = dict(missing=sorted(expected - set(code)), extra=sorted(set(code) - expected))
    assert wrong == {}


def test_closure_of_a_hand_built_package(tmp_path):
    """a -> b -> c -> d by the four import forms, one import inside a function, a subpackage with a
    two-level relative import; `unused` is imported by nothing and numpy is not the package's. Editing d
    reruns the rule; editing `unused`, or touching d without a change, does not."""
    files = {
        "workflow/scripts/s.py": "from interpflow.a import run\n",
        "src/interpflow/__init__.py": "",
        "src/interpflow/a.py": "from interpflow import b\n\ndef run():\n    from interpflow.sub.e import x\n",
        "src/interpflow/b.py": "import numpy\nimport interpflow.c\n",
        "src/interpflow/c.py": "from .d import y\n",
        "src/interpflow/d.py": "y = 1\n",
        "src/interpflow/unused.py": "import interpflow.a\n",
        "src/interpflow/sub/__init__.py": "",
        "src/interpflow/sub/e.py": "from ..c import y as x\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(f"""
        configfile: "{REPO}/config/config.yaml"
        include: "{REPO}/rules/common.smk"
        rule probe:
            output: "closure.txt"
            params: code=code_of("../workflow/scripts/s.py"), files=code_files("../workflow/scripts/s.py")
            run: Path(output[0]).write_text("\\n".join(params.files))
    """)
    )
    snakemake(tmp_path, "--cores", "1", "closure.txt")
    derived = (tmp_path / "closure.txt").read_text().split("\n")
    expected = [f"src/interpflow/{m}.py" for m in ["__init__", "a", "b", "c", "d", "sub/__init__", "sub/e"]]
    assert derived == expected
    assert set(derived) == scanned_closure(tmp_path / "workflow/scripts/s.py", tmp_path)
    planned = lambda: "rule probe:" in snakemake(tmp_path, "-n", "--cores", "1", "closure.txt")  # noqa: E731
    assert not planned()
    (tmp_path / "src/interpflow/unused.py").write_text("import interpflow.a\nz = 2\n")
    (tmp_path / "src/interpflow/d.py").touch()
    assert not planned()
    (tmp_path / "src/interpflow/d.py").write_text("y = 2\n")
    assert planned()


def test_a_scoring_common_edit_reruns_embedding_and_surprisal(rules):
    """scoring.common.scorable_latents picks the windows embedding and surprisal score; both once missed it.
    And no scorer reads another's module: an edit to embedding reruns nothing of surprisal."""
    code = {name: files for name, (_, files, _) in rules.items()}
    for rule in ("score", "score_embedding", "score_surprisal"):
        assert "src/interpflow/scoring/common.py" in code[rule], rule
    assert "src/interpflow/scoring/embedding.py" not in code["score_surprisal"]
    assert "src/interpflow/scoring/common.py" not in code["tokenize_corpus"]


SCORERS = ("judge", "simulation", "embedding", "surprisal", "intervention")


@pytest.mark.parametrize("scorer", SCORERS)
def test_no_scorer_imports_another(scorer):
    """Each scorer's import closure (modulefinder, as above) holds no other scorer's module."""
    path = REPO / "src/interpflow/scoring" / f"{scorer}.py"
    closure = scanned_closure(path, REPO)
    others = {f"src/interpflow/scoring/{o}.py" for o in SCORERS if o != scorer}
    assert "src/interpflow/scoring/metrics.py" in closure  # the scan followed the package's imports
    assert not closure & others, sorted(closure & others)
