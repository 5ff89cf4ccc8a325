import json
import os
import subprocess
import sys
from pathlib import Path

from trl_won.tiny import TOY_PROMPTS


SCRIPT = Path(__file__).parent / "scripts" / "rlaif_callback_distributed.py"
# Two real processes on the CPU (torchrun + gloo); see tests/test_rrhf_distributed.py for why `--multi_gpu`.
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
LAUNCH += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def test_two_processes_sample_their_share_and_only_the_main_one_judges(tiny_paths, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [*LAUNCH, str(SCRIPT), "--model", tiny_paths.policy, "--output_dir", str(tmp_path), "--fail_rank", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((tmp_path / "logs.json").read_text())
    assert report["num_processes"] == 2
    # Step 2's round failed on process 1 only: counted on the main process, no hang, and step 3 labels again.
    assert [(e["step"], e["rlaif/failures"], e.get("rlaif/label_count")) for e in report["logs"]] == [
        (1, 0, 5),
        (2, 1, None),
        (3, 1, 5),
    ]
    assert "simulated sampling failure" in result.stderr
    # Only the main process called the judge, once per successful round, with every process's samples.
    assert (tmp_path / "judge_calls.txt").read_text().splitlines() == ["0 5", "0 5"]
    rows = [json.loads(line) for line in (tmp_path / "rlaif" / "round-step0000001.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == TOY_PROMPTS[:5]  # 3 prompts from process 0, 2 from process 1
    assert not (tmp_path / "rlaif" / "round-step0000002.jsonl").exists()
