"""Fail the test session when a test writes into the repository tree: the suite's files go to temporary directories.

`tests/conftest.py` imports the two hooks below. At session start the repository tree (pytest's `rootdir`) is
snapshotted: every file with its size and modification time, and every directory (git does not list empty ones, which
a test leaves behind as easily as files). At session end it is snapshotted again; a path that appeared, disappeared or
changed fails the session (exit code 1) with a message listing the paths. The guard runs in a git checkout only (the
repository tree is then known); elsewhere, e.g. tests run from an unpacked sdist, it says why it is off. Under
pytest-xdist it runs in the controller process only, around the whole session.

Skipped while walking the tree, because Python, pytest and the tools write there themselves and no test output goes
there: `.git` (git's own files), `.venv`/`venv` (the environment: pip may write caches), `__pycache__` (bytecode
written on import), `.pytest_cache` (pytest's cache plugin), `.ruff_cache`/`.mypy_cache` (linters run beside the
tests), `*.egg-info` (setuptools, on an editable install), `.coverage*` (pytest-cov's data files) and the top-level
`site/` (`mkdocs build`'s output). Directories' own modification times are not compared (a skipped `__pycache__`
appearing inside one changes it); their appearing or disappearing is. A file edited by hand while the suite runs is
reported too: rerun the suite once the edits are done.
"""

import os
import subprocess
from pathlib import Path

import pytest


SKIPPED_NAMES = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
SKIPPED_TOP_LEVEL = {"site"}
_SNAPSHOT = pytest.StashKey[dict]()
_ROOT = pytest.StashKey[Path]()


def _skipped(name: str, top_level: bool) -> bool:
    return (
        name in SKIPPED_NAMES
        or name.endswith(".egg-info")
        or name.startswith(".coverage")
        or (top_level and name in SKIPPED_TOP_LEVEL)
    )


def snapshot(root: Path) -> dict[str, tuple]:
    """`{relative path: ("dir",) or ("file", size, mtime_ns)}` of the tree under `root`, skipped names left out."""
    entries = {}
    for directory, dirnames, filenames in os.walk(root):
        top_level = Path(directory) == root
        dirnames[:] = [name for name in dirnames if not _skipped(name, top_level)]
        for name in dirnames:
            entries[os.path.relpath(os.path.join(directory, name), root)] = ("dir",)
        for name in filenames:
            if _skipped(name, top_level):
                continue
            path = os.path.join(directory, name)
            try:
                status = os.lstat(path)
            except FileNotFoundError:  # removed while walking
                continue
            entries[os.path.relpath(path, root)] = ("file", status.st_size, status.st_mtime_ns)
    return entries


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Lines `new: path`, `changed: path`, `removed: path` between two snapshots, sorted by path."""
    lines = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            lines.append(f"new: {path}")
        elif path not in after:
            lines.append(f"removed: {path}")
        elif before[path] != after[path]:
            lines.append(f"changed: {path}")
    return lines


def _git_checkout(root: Path) -> bool:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "true"


def pytest_sessionstart(session):
    config = session.config
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller guards the whole session
        return
    root = Path(config.rootpath)
    if not _git_checkout(root):
        print(f"\nrepository guard off: {root} is not a git checkout, so its tree is not known.")
        return
    config.stash[_ROOT] = root
    config.stash[_SNAPSHOT] = snapshot(root)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    config = session.config
    if _SNAPSHOT not in config.stash:
        return
    root = config.stash[_ROOT]
    lines = changes(config.stash[_SNAPSHOT], snapshot(root))
    if not lines:
        return
    shown = lines[:50] + ([f"... and {len(lines) - 50} more"] if len(lines) > 50 else [])
    message = (
        f"The tests wrote into the repository tree {root} ({len(lines)} path(s)); tests must write under tmp_path "
        "(or another temporary directory) and leave the tree as they found it (a file edited while the suite ran "
        "shows here too):\n" + "\n".join(f"  {line}" for line in shown)
    )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")  # end the progress line
        reporter.write_sep("=", "tests wrote into the repository", red=True)
        reporter.write_line(message)
    else:
        print(message)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
