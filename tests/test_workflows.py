"""The publishing workflow (.github/workflows/publish.yml) is valid and clean for two workflow linters:
check-jsonschema (GitHub's workflow schema) and zizmor (offline audits: pinned actions, permissions,
credentials, injection). Both are pinned in requirements.txt and shown to reject a broken workflow."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def lint(path: Path) -> list[str]:
    """Problems both linters report for one workflow file (empty when clean)."""
    out = []
    schema = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
                            capture_output=True, text=True)
    if schema.returncode != 0:
        out.append(f"check-jsonschema: {schema.stdout}{schema.stderr}")
    audit = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", str(path)], capture_output=True, text=True)
    if audit.returncode != 0:
        out.append(f"zizmor (rc {audit.returncode}): {audit.stdout}{audit.stderr}")
    return out


def test_there_is_a_publishing_workflow_that_builds_the_book_and_deploys_it():
    assert [p.name for p in WORKFLOWS] == ["publish.yml"]
    wf = yaml.safe_load(WORKFLOWS[0].read_text())
    steps = wf["jobs"]["build"]["steps"]
    assert any("make book" in s.get("run", "") for s in steps), "the workflow must build with the README's command"
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in wf["jobs"]["deploy"]["steps"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_the_linters(path):
    problems = lint(path)
    assert not problems, "\n".join(problems)


def test_the_linters_reject_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    stepz:\n      - run: make book\n")
    assert any(p.startswith("check-jsonschema") for p in lint(broken))           # an unknown key
    unpinned = tmp_path / "unpinned.yml"
    unpinned.write_text("on: push\npermissions: {}\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    steps:\n"
                        "      - uses: actions/checkout@v4\n")
    assert any(p.startswith("zizmor") for p in lint(unpinned))                    # an action not pinned to a hash
