"""examples/rlaif_label.py runs as documented (on the tiny local judge)."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).parents[1]


def test_rlaif_label_example(tiny_paths, tmp_path):
    output_dir = tmp_path / "labels"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "examples" / "rlaif_label.py"), "--model_name_or_path", tiny_paths.policy]
    command += ["--output_dir", str(output_dir), "--template", "summarization"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in (output_dir / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 26  # every pair of the toy dataset's 2-4 completions per prompt
    assert {"prompt", "chosen", "rejected", "soft_label", "position_consistent"} <= set(rows[0])
    assert '"stored_labels": 26' in result.stdout and '"accuracy"' in result.stdout
    assert (output_dir / "labels.sqlite").exists()
