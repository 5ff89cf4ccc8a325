"""Served judges against real servers that nobody on this project wrote: llama.cpp's server and `transformers
serve`, started on 127.0.0.1 by `conftest.py`.

- On the same weights, `OpenAIJudge` with the model's tokenizer (completions endpoint, prompt rendered client-side)
  gives the pair probabilities of `TransformersJudge`, in both orders, to 0.01, with the default concurrency against a
  server that answers one request at a time and a timeout shorter than its queue.
- `transformers serve` ignores `logprobs`: the judge refuses to make hard labels where soft ones are expected, warns
  once, stores nothing; with `logprobs=False` hard labels go under a fingerprint of their own.
"""

import logging
import time

import pytest

from trl_won.rlaif import JudgeError, LabelStore, OpenAIJudge, TransformersJudge, judge_pairs_cached


pytestmark = pytest.mark.integration

PROMPTS = [f"What is {i} + {i}?" for i in range(8)]
A = [f"It is {2 * i}." for i in range(8)]
B = [f"Maybe {i + 1}, or so." for i in range(8)]


def test_llama_cpp_served_judge_equals_the_local_judge(llama_cpp_server):
    base_url, model_dir = llama_cpp_server
    local = TransformersJudge(str(model_dir), use_chat_template=True).judge_pairs(PROMPTS, A, B)

    # One request's time on this machine, to set a timeout that the server's queue exceeds.
    probe = OpenAIJudge("tiny", base_url=base_url, tokenizer=str(model_dir), use_chat_template=True)
    start = time.perf_counter()
    probe.judge_pairs(PROMPTS[:1], A[:1], B[:1])
    per_request = (time.perf_counter() - start) / 2
    # Default concurrency (32): all 16 requests go out at once and llama.cpp serves them one at a time, so the last
    # waits ~15 requests in its queue, 5x longer than the timeout. None may time out or be sent twice.
    judge = OpenAIJudge(
        "tiny", base_url=base_url, tokenizer=str(model_dir), use_chat_template=True, timeout=3 * per_request
    )
    served = judge.judge_pairs(PROMPTS, A, B)
    assert judge.stats.requests == 2 * len(PROMPTS) and judge.stats.retries == 0 and judge.stats.failures == 0

    differences = []
    for mine, theirs in zip(served, local, strict=True):
        assert mine.probability is not None, mine.reason
        for field in ("probability_a_first", "probability_a_second", "probability"):  # both orders were sent
            differences.append(abs(getattr(mine, field) - getattr(theirs, field)))
    print(f"max |served - local| over {len(PROMPTS)} pairs (both orders): {max(differences):.2e}")
    assert max(differences) <= 0.01
    # The answers are not all alike (a judge that always answered the same would pass trivially).
    orders = [p for j in local for p in (j.probability_a_first, j.probability_a_second)]
    assert max(orders) - min(orders) > 0.02, orders

    # The chat endpoint lets the server's chat template end the prompt: another labeler, another fingerprint.
    chat = OpenAIJudge("tiny", base_url=base_url)
    assert chat.fingerprint != judge.fingerprint


def test_transformers_serve_without_logprobs_never_gives_soft_labels(transformers_server, tmp_path, caplog):
    base_url, model_dir = transformers_server
    store = LabelStore(tmp_path / "labels.sqlite")
    for kwargs in ({}, {"tokenizer": str(model_dir), "use_chat_template": True}):  # chat and completions
        caplog.clear()
        soft = OpenAIJudge(str(model_dir), base_url=base_url, max_concurrency=2, **kwargs)
        with pytest.raises(JudgeError, match="without log-probabilities"):
            judge_pairs_cached(soft, PROMPTS, A, B, store=store)
        assert store.count(soft.fingerprint) == 0
        assert caplog.text.count("answered without log-probabilities") == 1  # warned once, then stopped
    hard = OpenAIJudge(str(model_dir), base_url=base_url, logprobs=False, max_concurrency=2)
    with caplog.at_level(logging.WARNING):
        judgements = judge_pairs_cached(hard, PROMPTS[:2], A[:2], B[:2], store=store)
    assert all(j.probability in (None, 0.0, 0.5, 1.0) for j in judgements)  # hard labels (or none), never soft
    assert hard.fingerprint != soft.fingerprint and store.count(hard.fingerprint) == 2


def test_a_request_file_run_against_llama_cpp_reads_back_the_live_labels(llama_cpp_server, tmp_path):
    """The batch-file path against a real server: the request file that `write_batch_requests` writes for vLLM's
    `run-batch` is sent line by line to llama.cpp's server (each line's `body` POSTed to its `url`, as run-batch
    does), its answers written in run-batch's output format and read back; the labels equal those of the live judge on
    the same server, and the tokens each label cost (the server's `usage`) are kept."""
    import json
    import urllib.request

    from datasets import Dataset

    from trl_won.rlaif import BatchSettings, label_preferences, write_batch_requests

    base_url, _ = llama_cpp_server
    dataset = Dataset.from_dict({"prompt": PROMPTS, "completion_a": A, "completion_b": B})
    judge = OpenAIJudge("tiny", base_url=base_url, max_concurrency=2)  # the chat endpoint: what run-batch serves
    live = label_preferences(dataset, judge, store=LabelStore(tmp_path / "live.sqlite"))
    assert len(live) == len(PROMPTS)
    assert max(live["soft_label"]) - min(live["soft_label"]) > 0.01  # the answers are not all alike

    store = LabelStore(tmp_path / "batch.sqlite")
    requests_file, results_file = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert write_batch_requests(dataset, judge, requests_file, store=store) == 2 * len(PROMPTS)  # both orders
    root = base_url.removesuffix("/v1")
    with open(results_file, "w") as out:
        for n, line in enumerate(requests_file.read_text().splitlines()):
            request = json.loads(line)
            assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
            post = urllib.request.Request(
                root + request["url"], data=json.dumps(request["body"]).encode(), method="POST"
            )
            post.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(post, timeout=120) as answer:
                body = json.loads(answer.read())
            response = {"status_code": 200, "request_id": f"run-batch-{n}", "body": body}
            out.write(json.dumps({"id": f"line-{n}", "custom_id": request["custom_id"], "response": response}) + "\n")

    batched = label_preferences(dataset, judge, store=store, batch=BatchSettings(results_file=results_file))
    # Bit for bit: the same requests, the same answer reader.
    for column in ("chosen", "soft_label_chosen_first", "soft_label_chosen_second", "soft_label"):
        assert batched[column] == live[column], column
    assert store.count(judge.fingerprint) == len(PROMPTS)
    usage = store.batch_usage(judge.fingerprint)
    assert usage["lines"] == 2 * len(PROMPTS) and usage["prompt_tokens"] > 0
