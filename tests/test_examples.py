"""The examples run as documented (on the tiny local models)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).parents[1]


def run_example(name, *arguments, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "examples" / name), *arguments]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("extra", [[], ["--use_peft", "--load_in_4bit", "--lora_target_modules", "q_proj", "v_proj"]])
def test_rrhf_example(tiny_paths, tmp_path, extra):
    output_dir = tmp_path / "rrhf"
    out = run_example(
        "rrhf.py",
        "--model_name_or_path",
        tiny_paths.policy,
        "--max_steps",
        "2",
        "--output_dir",
        str(output_dir),
        "--report_to",
        "none",
        *extra,
        cwd=tmp_path,
    )
    assert "eval_ranking_accuracy" in out
    assert (output_dir / "README.md").exists()
    assert (output_dir / ("adapter_config.json" if extra else "model.safetensors")).exists()
