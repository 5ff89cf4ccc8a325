"""What a user sees before anything runs: no warning they did not cause on import, on `--help` or when building a
config, and a wheel that carries its license expression and `py.typed`."""

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent

# bitsandbytes' import-time notice that it could not fetch its optional CPU kernel from the Hub (and the `kernels`
# package's note on the offline trust check of that fetch), and transformers' deprecation of `gradient_checkpointing`.
UNCAUSED = (
    "gemm_4bit_forward",
    "kernels-community/quantization-bitsandbytes",
    "`gradient_checkpointing` is deprecated",
)


def run_python(*args, cwd) -> str:
    # The package of this checkout, whatever is installed.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def assert_no_uncaused_warning(output: str):
    for message in UNCAUSED:
        assert message not in output, f"{message!r} printed:\n{output}"


def test_configs_build_without_warnings(tmp_path):
    """Each config of ours, and the West-of-N student's, with its defaults: checkpointing on, and nothing printed."""
    script = f"""
import trl_won
from trl_won.rrhf import RRHFConfig
from trl_won.rlaif import RLAIFRewardConfig
from trl_won.cli.west_of_n import StudentRewardConfig

for config_class in (RRHFConfig, RLAIFRewardConfig, StudentRewardConfig):
    args = config_class(output_dir={str(tmp_path)!r}, bf16=False)
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True, config_class
print("built")
"""
    output = run_python("-c", script, cwd=tmp_path)
    assert "built" in output
    assert_no_uncaused_warning(output)


def test_help_prints_no_warning(tmp_path):
    """`trl-won --help`, `trl-won rrhf --help` and `trl-won west-of-n --help`, in one process."""
    script = """
from trl_won.cli.main import main

for argv in (["--help"], ["rrhf", "--help"], ["west-of-n", "--help"]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, argv
"""
    output = run_python("-c", script, cwd=tmp_path)
    assert output.count("usage: trl-won") == 3 and "--no_activation_checkpointing" in output
    assert_no_uncaused_warning(output)


def test_the_deprecated_name_still_warns_when_the_user_gives_it(tmp_path):
    """The user's own `gradient_checkpointing=False` is honoured, with transformers' warning (the user caused it)."""
    from trl_won.rrhf import RRHFConfig

    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated"):
        args = RRHFConfig(output_dir=str(tmp_path), gradient_checkpointing=False, bf16=False)
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False


@pytest.mark.slow
def test_wheel_has_license_expression_and_py_typed(tmp_path):
    """The built wheel: `License-Expression` metadata (PEP 639) and `trl_won/py.typed`; the build prints no license
    deprecation. Built with pip, as users build from a source checkout."""
    # setuptools builds in the source tree (build/, *.egg-info): build a copy so that the checkout is left as it was.
    source = tmp_path / "source"
    skip = (".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*skip))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp_path / "dist"), "-v"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    build_log = result.stdout + result.stderr
    assert "License classifiers are deprecated" not in build_log
    assert "`project.license` as a TOML table is deprecated" not in build_log
    (wheel,) = (tmp_path / "dist").glob("trl_won-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert "trl_won/py.typed" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Metadata-Version"] >= "2.4"
