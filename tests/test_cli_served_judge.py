"""`trl-won label` and `trl-won west-of-n` with a served judge that cannot label: a clear error and exit status 1,
never an empty result with status 0."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rlaif_server import JudgeServer, Reply, chat_body, completion_body

from trl_won.cli.main import main


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}?", "completion_a": " yes.", "completion_b": " no."} for i in range(3)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_label_exits_1_with_the_servers_message_when_the_model_is_unknown(tmp_path):
    def unknown_model(body, attempt, headers):
        return Reply(status=404, body={"error": {"message": "The model `nope` does not exist."}})

    with JudgeServer(unknown_model) as server:
        command = [sys.executable, "-m", "trl_won", "label", "--judge_model_name_or_path", "nope"]
        command += ["--judge_base_url", server.base_url, "--dataset_name", str(pairs_file(tmp_path))]
        command += ["--output_dir", str(tmp_path / "out")]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert "trl-won label: error:" in result.stderr and "The model `nope` does not exist." in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "preferences.jsonl").exists()


def test_label_fails_when_the_judge_labels_no_pair(tmp_path, capsys):
    def never_one_or_two(body, attempt, headers):  # answers, but never with 1 or 2
        return Reply(body=chat_body("The", {"The": 0.9, "A": 0.1}))

    with JudgeServer(never_one_or_two) as server:
        code = main(
            ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", server.base_url]
            + ["--dataset_name", str(pairs_file(tmp_path)), "--output_dir", str(tmp_path / "out")]
        )
    assert code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("trl-won label: error: The judge labeled none of the 3 pairs")
    assert "neither answer is among the top 20 first tokens" in message


def test_west_of_n_exits_1_when_the_judge_server_refuses(tiny_paths, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Question {i}?"}) for i in range(2)))

    def unauthorized(body, attempt, headers):
        return Reply(status=401, body={"error": {"message": "Incorrect API key provided"}})

    with JudgeServer(unauthorized) as server:
        code = main(
            ["west-of-n", "--policy_name_or_path", tiny_paths.policy, "--judge_model_name_or_path", "judge"]
            + ["--judge_base_url", server.base_url, "--dataset_name", str(prompts), "--n", "2"]
            + ["--max_new_tokens", "4", "--pairs_dir", str(tmp_path / "pairs")]
        )
    assert code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("trl-won west-of-n: error: The judge server")
    assert "HTTP 401" in message


def test_label_with_the_judges_tokenizer_sends_the_local_judges_prompt_to_the_completions_endpoint(
    tiny_paths, tmp_path, capsys
):
    from trl_won.rlaif import TransformersJudge

    def completions(body, attempt, headers):
        return Reply(body=completion_body("1", {"1": -0.2, "2": -1.7}))

    with JudgeServer(completions) as server:
        argv = ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", server.base_url]
        argv += ["--judge_tokenizer_name_or_path", tiny_paths.policy, "--judge_use_chat_template"]
        argv += ["--dataset_name", str(pairs_file(tmp_path)), "--output_dir", str(tmp_path / "out")]
        assert main(argv) == 0
    local = TransformersJudge(tiny_paths.policy, use_chat_template=True)
    expected = [
        local.answer_tokens.apply(local.lm.render(r, "Preferred Response="))
        for i in range(3)
        for r in local.prompts_for(f"Q{i}?", " yes.", " no.")
    ]
    assert sorted(body["prompt"] for _, body, _ in server.requests) == sorted(expected)
    rows = [json.loads(line) for line in (tmp_path / "out" / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 3


def test_label_refuses_a_chat_template_it_cannot_render(tmp_path, capsys):
    argv = ["label", "--judge_model_name_or_path", "judge", "--judge_base_url", "http://127.0.0.1:9/v1"]
    argv += ["--judge_use_chat_template", "--dataset_name", str(pairs_file(tmp_path))]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "--judge_tokenizer_name_or_path" in capsys.readouterr().err
