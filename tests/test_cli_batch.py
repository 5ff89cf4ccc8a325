"""`trl-won label` through batch files: the Batch API (`--judge_batch_api`) and vLLM's run-batch files
(`--judge_batch_file` / `--judge_batch_results`) give the live run's labels; bad files exit 1 naming file and line."""

import json

import pytest
from batch_server import BatchServer
from test_rlaif_batch import graded

from trl_won.cli.main import main


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}?", "completion_a": f" yes {i}.", "completion_b": f" no{'!' * i}"} for i in range(4)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def argv(tmp_path, out, *extra):
    return ["label", "--judge_model_name_or_path", "judge", "--dataset_name", str(pairs_file(tmp_path))] + [
        "--output_dir",
        str(tmp_path / out),
        *extra,
    ]


def test_label_through_the_batch_api_equals_the_live_run(tmp_path, capsys):
    with BatchServer(graded) as server:
        assert main(argv(tmp_path, "live", "--judge_base_url", server.base_url)) == 0
        capsys.readouterr()
        batch_flags = [
            "--judge_base_url",
            server.base_url,
            "--judge_batch_api",
            "--judge_batch_poll_interval",
            "0.001",
        ]
        assert main(argv(tmp_path, "batch", *batch_flags, "--judge_batch_max_requests", "3")) == 0
        assert len(server.created) == 3  # 8 request lines, at most 3 per file
    output = capsys.readouterr().out
    summary = json.loads(output[: output.rindex("}") + 1])
    assert summary["batch"]["batches"] == 3 and summary["batch"]["tokens"]["lines"] == 8
    assert summary["batch"]["tokens"]["completion_tokens"] == 8
    assert summary["label_tokens"]["labels"] == 4 and summary["label_tokens"]["completion_tokens"] == 8
    assert summary["label_tokens"]["prompt_tokens"] == summary["batch"]["tokens"]["prompt_tokens"]
    assert rows(tmp_path / "batch" / "preferences.jsonl") == rows(tmp_path / "live" / "preferences.jsonl")


def test_label_through_vllm_run_batch_files(tmp_path, capsys):
    with BatchServer(graded) as server:
        assert main(argv(tmp_path, "live", "--judge_base_url", server.base_url)) == 0
    requests = tmp_path / "requests.jsonl"
    assert main(argv(tmp_path, "vllm", "--judge_batch_file", str(requests))) == 0
    output = capsys.readouterr().out
    assert f"vllm run-batch -i {requests} -o results.jsonl --model judge --max-logprobs 20" in output
    assert not (tmp_path / "vllm" / "preferences.jsonl").exists()
    # What `vllm run-batch` writes for it (the schema of run_batch.py's BatchRequestOutput), in input order.
    results = tmp_path / "results.jsonl"
    with open(results, "w") as out:
        for n, line in enumerate(requests.read_text().splitlines()):
            request = json.loads(line)
            response = {"status_code": 200, "request_id": f"vllm-batch-{n}", "body": graded(request["body"]).body}
            out.write(
                json.dumps({"id": f"vllm-{n}", "custom_id": request["custom_id"], "response": response, "error": None})
            )
            out.write("\n")
    assert main(argv(tmp_path, "vllm", "--judge_batch_results", str(results))) == 0
    assert rows(tmp_path / "vllm" / "preferences.jsonl") == rows(tmp_path / "live" / "preferences.jsonl")
    # A second request file holds nothing: every pair is labeled.
    capsys.readouterr()
    assert main(argv(tmp_path, "vllm", "--judge_batch_file", str(tmp_path / "again.jsonl"))) == 0
    assert (tmp_path / "again.jsonl").read_text() == ""

    # A truncated results file: exit 1, naming the file and line.
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text(results.read_text()[:-50])
    assert main(argv(tmp_path, "vllm2", "--judge_batch_file", str(tmp_path / "r2.jsonl"))) == 0
    capsys.readouterr()
    assert main(argv(tmp_path, "vllm2", "--judge_batch_results", str(truncated))) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"trl-won label: error: The batch results file {truncated}, line 8: not JSON")


def test_batch_flags_refuse_what_they_cannot_do(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv(tmp_path, "x", "--judge_chain_of_thought", "--judge_batch_file", str(tmp_path / "r.jsonl")))
    assert exit_info.value.code == 2 and "chain of thought" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(argv(tmp_path, "x", "--judge_batch_api", "--judge_batch_file", str(tmp_path / "r.jsonl")))
    assert exit_info.value.code == 2 and "Give one of" in capsys.readouterr().err
