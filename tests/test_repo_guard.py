"""The repository guard (tests/repo_guard.py): a session whose tests write into the repository tree fails, naming the
paths. Each case runs pytest in a subprocess on a small git repository under tmp_path, never on this one."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


GUARD = Path(__file__).with_name("repo_guard.py")
CONFTEST = "from repo_guard import pytest_sessionfinish, pytest_sessionstart  # noqa: F401\n"


def fake_repository(root: Path, test_body: str, git: bool = True) -> Path:
    """A repository holding the guard, a conftest that installs it, one tracked file and a test running `test_body`."""
    root.mkdir()
    shutil.copy(GUARD, root / "repo_guard.py")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "tracked.txt").write_text("as committed\n")
    (root / "test_writes.py").write_text(
        "from pathlib import Path\n\nROOT = Path(__file__).parent\n\n\ndef test_writes(tmp_path):\n"
        + "".join(f"    {line}\n" for line in test_body.splitlines())
    )
    if git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run(["git", "add", "."], cwd=root, check=True)
    return root


def run_pytest(root: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={root}", str(root)]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)


pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.mark.parametrize(
    "body, path",
    [
        ("(ROOT / 'stray.txt').write_text('output')", "new: stray.txt"),
        ("(ROOT / 'out' / 'run').mkdir(parents=True)", "new: out/run"),  # empty folders too (git hides them)
        ("(ROOT / 'tracked.txt').write_text('rewritten by a test\\n')", "changed: tracked.txt"),
        ("(ROOT / 'tracked.txt').unlink()", "removed: tracked.txt"),
    ],
)
def test_a_test_writing_into_the_repository_fails_the_session(tmp_path, body, path):
    result = run_pytest(fake_repository(tmp_path / "repo", body))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 passed" in output  # the test itself passed: the guard failed the session
    assert "tests must write under tmp_path" in output and f"  {path}\n" in output


def test_a_test_writing_under_tmp_path_passes(tmp_path):
    body = "(tmp_path / 'out').mkdir()\n(tmp_path / 'out' / 'file.txt').write_text('output')"
    result = run_pytest(fake_repository(tmp_path / "repo", body))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote into the repository" not in result.stdout


def test_outside_a_git_checkout_the_guard_is_off_and_says_why(tmp_path):
    root = fake_repository(tmp_path / "repo", "(ROOT / 'stray.txt').write_text('output')", git=False)
    if subprocess.run(["git", "rev-parse"], cwd=root, capture_output=True).returncode == 0:
        pytest.skip("the temporary directory is inside a git checkout")
    result = run_pytest(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"repository guard off: {root} is not a git checkout" in result.stdout
