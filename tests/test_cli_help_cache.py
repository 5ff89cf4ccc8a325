"""The `--help` cache (trl_won/cli/help_cache.py): the cached text is the live parser's, a second call imports no
config dataclass, anything the text depends on builds it anew, and a damaged or unwritable cache never shows in the
help."""

import json
import os
import shutil
import subprocess
import sys
from itertools import count
from pathlib import Path

import pytest

from trl_won.cli import help_cache
from trl_won.cli.main import build_parser, main


ROOT = Path(__file__).parents[1]

# Runs `trl-won <command> --help` and reports, on stderr, its exit code and which heavy modules it imported.
HELP_AND_MODULES = (
    "import json, sys\n"
    "from trl_won.cli.main import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    code = exit.code\n"
    "heavy = ('torch', 'transformers', 'transformers.training_args', 'trl', 'trl_won.rrhf.config', 'peft')\n"
    "print(json.dumps({'code': code, 'loaded': [m for m in heavy if m in sys.modules]}), file=sys.stderr)\n"
)


def help_in_subprocess(argv: list[str], cache: Path) -> tuple[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRL_WON_CACHE_DIR": str(cache), "COLUMNS": "100"}
    result = subprocess.run(
        [sys.executable, "-c", HELP_AND_MODULES, *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(result.stderr.strip().splitlines()[-1])


def live_help(name: str, prog: str | None = None, defaults: dict | None = None) -> str:
    return build_parser(name, prog or f"trl-won {name}", defaults).format_help()


def test_second_help_is_the_live_text_without_importing_the_config(tmp_path, monkeypatch):
    """rrhf's options come from TRL's training arguments (torch): the first `--help` builds them, the second prints
    the same text from the cache with none of them imported."""
    monkeypatch.setenv("COLUMNS", "100")
    cache = tmp_path / "cache"
    first, first_run = help_in_subprocess(["rrhf", "--help"], cache)
    assert first == live_help("rrhf")
    assert first_run["code"] == 0 and "trl_won.rrhf.config" in first_run["loaded"] and "torch" in first_run["loaded"]
    assert len(list((cache / "help").glob("rrhf-*.txt"))) == 1
    second, second_run = help_in_subprocess(["rrhf", "-h"], cache)
    assert second == first
    assert second_run == {"code": 0, "loaded": []}


@pytest.mark.parametrize("name", ["label", "demo"])
def test_cached_help_equals_the_live_help(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path))
    outputs = []
    for _ in range(2):  # built, then read from the cache
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == live_help(name)
    assert len(list((tmp_path / "help").glob(f"{name}-*.txt"))) == 1


def plant(name: str, text: str, prog: str | None = None, defaults: dict | None = None) -> None:
    """Store `text` as the cached help of `name` under the key the current installation gives it."""
    key = help_cache.help_key(name, prog or f"trl-won {name}", defaults)
    help_cache.write_entry(os.path.join(help_cache.cache_dir(), "help"), name, key, text)


def test_only_a_lone_help_flag_is_answered_from_the_cache(tmp_path, monkeypatch, capsys):
    """`--help` with other arguments (a `--config` that sets defaults, a value argparse rejects first) is the
    parser's to answer; `prog` and an example script's `defaults` are part of the key."""
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path))
    plant("label", "planted help\n")
    for argv in (["label", "--help"], ["label", "-h"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0 and capsys.readouterr().out == "planted help\n"
    with pytest.raises(SystemExit):
        main(["label", "--output_dir", "x", "--help"])
    assert capsys.readouterr().out == live_help("label")
    # HfArgumentParser reads a `.args` file beside the script first: the parser answers.
    (tmp_path / "script.args").write_text("--output_dir x\n")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "script.py"), "label", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main(["label", "--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == live_help("label")
    monkeypatch.undo()
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path))
    from trl_won.cli.main import run

    with pytest.raises(SystemExit):
        run("label", ["--help"], prog="examples/rlaif_label.py", defaults={"output_dir": "labels"})
    out = capsys.readouterr().out
    assert out == live_help("label", "examples/rlaif_label.py", {"output_dir": "labels"}) != "planted help\n"
    assert out.startswith("usage: examples/rlaif_label.py")


def counting_build():
    numbers = count()
    return lambda: f"help {next(numbers)}\n"


def test_every_part_of_the_key_builds_anew(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")
    sources = tmp_path / "sources"
    shutil.copytree(ROOT / "trl_won" / "cli", sources, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(help_cache, "PACKAGE_ROOT", str(sources))
    libraries = [["/site-packages", "trl-1.16.0.dist-info", 1]]
    monkeypatch.setattr(help_cache, "installed_libraries", lambda: libraries)
    monkeypatch.setattr(help_cache, "ENTRIES_KEPT", 100)  # entries written within one clock tick tie in age
    build = counting_build()

    def cached(name="rrhf", prog="trl-won rrhf", defaults=None):
        return help_cache.cached_help(name, prog, defaults, build)

    assert cached() == "help 0\n" and cached() == "help 0\n"
    (sources / "rrhf.py").write_text((sources / "rrhf.py").read_text() + "# edited\n")
    assert cached() == "help 1\n" and cached() == "help 1\n"
    (sources / "new_module.py").write_text("")
    assert cached() == "help 2\n"
    libraries[0][1] = "trl-1.17.0.dist-info"  # upgraded
    assert cached() == "help 3\n"
    libraries[0][2] = 2  # reinstalled (its METADATA rewritten)
    assert cached() == "help 4\n"
    monkeypatch.setenv("COLUMNS", "60")  # argparse wraps to the terminal's width
    assert cached() == "help 5\n"
    monkeypatch.setattr(help_cache.sys, "version", sys.version + " (another)")
    assert cached() == "help 6\n"
    assert cached(prog="examples/rrhf.py") == "help 7\n"
    assert cached(defaults={"output_dir": "a"}) == "help 8\n" and cached(defaults={"output_dir": "b"}) == "help 9\n"
    assert cached(name="west-of-n") == "help 10\n"
    assert cached(defaults={"output_dir": "a"}) == "help 8\n" and cached() == "help 6\n"  # each kept its own entry
    monkeypatch.setattr(help_cache, "installed_libraries", lambda: None)  # a library installed for development
    assert cached() == "help 11\n" and cached() == "help 12\n"


def test_installed_libraries_reads_the_metadata_folders(tmp_path, monkeypatch):
    site = tmp_path / "site"
    names = ("trl-1.16.0.dist-info", "torch-2.13.0+cpu.dist-info", "Other-1.0.dist-info", "trl_won-0.1.0.dist-info")
    for name in names:
        (site / name).mkdir(parents=True)
        (site / name / "METADATA").write_text("Metadata-Version: 2.1\n")
    os.utime(site / "trl-1.16.0.dist-info" / "METADATA", ns=(10**18, 10**18))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(site)])
    found = help_cache.installed_libraries()
    assert [name for _, name, _ in found] == ["torch-2.13.0+cpu.dist-info", "trl-1.16.0.dist-info"]
    assert found[1] == [str(site), "trl-1.16.0.dist-info", 10**18]
    editable = json.dumps({"url": "file:///src", "dir_info": {"editable": True}})
    (site / "trl_won-0.1.0.dist-info" / "direct_url.json").write_text(editable)  # trl_won's files are hashed instead
    assert help_cache.installed_libraries() == found
    (site / "trl-1.16.0.dist-info" / "direct_url.json").write_text(editable)
    assert help_cache.installed_libraries() is None
    archive = json.dumps({"url": "https://example.org/trl.whl", "archive_info": {}})
    (site / "trl-1.16.0.dist-info" / "direct_url.json").write_text(archive)
    assert help_cache.installed_libraries() == found
    (site / "peft.egg-info").mkdir()  # a legacy development install
    assert help_cache.installed_libraries() is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: text.replace("help 0", "help X"),  # edited
        lambda text: "",  # empty
        lambda text: text.split("\n", 1)[1],  # no header
    ],
    ids=["truncated", "edited", "empty", "no-header"],
)
def test_a_damaged_entry_is_built_again_never_printed(damage, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path))
    build = counting_build()
    assert help_cache.cached_help("demo", "trl-won demo", None, build) == "help 0\n"
    (entry,) = (tmp_path / "help").iterdir()
    entry.write_text(damage(entry.read_text()))
    assert help_cache.cached_help("demo", "trl-won demo", None, build) == "help 1\n"
    assert help_cache.cached_help("demo", "trl-won demo", None, build) == "help 1\n"  # repaired


def test_undecodable_entry_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path))
    build = counting_build()
    help_cache.cached_help("demo", "trl-won demo", None, build)
    (entry,) = (tmp_path / "help").iterdir()
    entry.write_bytes(b"\xff\xfe garbage")
    assert help_cache.cached_help("demo", "trl-won demo", None, build) == "help 1\n"


def test_an_unwritable_cache_still_prints_the_help(tmp_path):
    """The cache folder's place taken by a file (as root, a read-only folder would still be writable)."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRL_WON_CACHE_DIR": str(blocked), "COLUMNS": "100"}
    runs = [
        subprocess.run([sys.executable, "-m", "trl_won", "label", "--help"], capture_output=True, text=True, env=env)
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0] and not any("Traceback" in run.stderr for run in runs)
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("usage: trl-won label")
    assert blocked.read_text() == ""


def test_old_entries_of_a_command_are_removed(tmp_path):
    folder = tmp_path / "help"
    folder.mkdir()
    old = [folder / f"rrhf-{index:032x}.txt" for index in range(help_cache.ENTRIES_KEPT + 1)]
    others = [folder / f"west-of-n-{0:032x}.txt", folder / "rrhf-notes.txt"]
    for age, path in enumerate([*old, *others]):
        path.write_text("x")
        os.utime(path, ns=(10**18 + age * 10**9,) * 2)
    help_cache.write_entry(str(folder), "rrhf", "f" * 64, "help\n")
    kept = sorted(path.name for path in folder.iterdir())
    assert kept == sorted([f"rrhf-{'f' * 32}.txt", *(path.name for path in old[2:]), *(path.name for path in others)])


def test_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("TRL_WON_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert help_cache.cache_dir() == str(tmp_path / "xdg" / "trl-won")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert help_cache.cache_dir() == str(tmp_path / "home" / ".cache" / "trl-won")
    monkeypatch.setenv("TRL_WON_CACHE_DIR", str(tmp_path / "mine"))
    assert help_cache.cache_dir() == str(tmp_path / "mine")
