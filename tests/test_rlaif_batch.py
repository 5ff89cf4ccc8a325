"""Batch labeling (OpenAI's Batch API, vLLM's run-batch files) against a fake Batch API on 127.0.0.1: labels equal to
the live path's bit for bit, expired / failed / cancelled batches, failed lines, bad files, secrets."""

import hashlib
import json
import logging
import math
import secrets
from pathlib import Path

import pytest
from batch_server import BatchServer, Plan
from rlaif_server import Reply, chat_body, completion_body, request_text, sections

from trl_won.rlaif import (
    BatchSettings,
    JudgeError,
    LabelStore,
    OpenAIJudge,
    OpenAIScoreJudge,
    judge_pairs_cached,
    score_cached,
)
from trl_won.rlaif.batch import BatchFileError, BatchLabeler, _Requests, cancel_batches


FIXTURES = Path(__file__).parent / "fixtures"
FAST = {"poll_interval": 0.001, "max_poll_interval": 0.01, "show_progress": False}
QUICK = {"timeout": 10, "max_retries": 1}


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def probability(text: str) -> float:
    """A probability in (0.05, 0.95) that depends on every character of `text`: each order of each pair differs."""
    return 0.05 + 0.9 * hashlib.sha256(text.encode()).digest()[0] / 255


def graded(body, attempt=0, headers=None):
    """A judge whose answers depend on the whole request (chat or completions, pairwise or score)."""
    p = probability(request_text(body))
    try:
        sections(body)
        top = {"1": p, "2": (1 - p) * 0.9}
    except ValueError:  # a score request
        top = {"7": p, "3": (1 - p) * 0.5, "10": (1 - p) * 0.25}
    first = max(top, key=top.get)
    if "prompt" in body:
        return Reply(body=completion_body(first, {t: math.log(v) for t, v in top.items()}, prompt_tokens=40))
    return Reply(body=chat_body(first, top, prompt_tokens=50 + len(request_text(body)) % 7))


PROMPTS = [f"Question {i}?" for i in range(6)]
A = [f" answer {i} is {'long ' * i}." for i in range(6)]
B = [f" nope {i}" for i in range(6)]
# The last pair repeats the first one swapped: judged once.
PROMPTS, A, B = PROMPTS + [PROMPTS[0]], A + [B[0]], B + [A[0]]


def label(judge, store, batch=None):
    return judge_pairs_cached(judge, PROMPTS, A, B, store=store, batch=batch)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_batch_labels_equal_live_labels_bit_for_bit(tmp_path, endpoint, request):
    tokenizer = {"tokenizer": request.getfixturevalue("tiny_paths").policy} if endpoint == "completions" else {}
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **tokenizer, **QUICK)
        live = label(judge, LabelStore(tmp_path / "live.sqlite"))
        assert len(server.live_requests) == 12 and not server.created
        store = LabelStore(tmp_path / "batch.sqlite")
        batched = label(judge, store, BatchSettings(max_requests_per_file=5, **FAST))
        # 6 pairs x 2 orders in files of at most 5 lines: 3 batches, no live request.
        assert len(server.created) == 3 and len(server.live_requests) == 12
        sizes = [len(server.files[b.input_file_id]["content"].splitlines()) for b in server.batches.values()]
        assert sizes == [5, 5, 2]
        lines = [
            json.loads(x)
            for b in server.batches.values()
            for x in server.files[b.input_file_id]["content"].splitlines()
        ]
    assert batched == live  # dataclass equality: every float equal
    # Each label's cost: both orders' usage, the same live and batched (not part of equality, so checked here).
    costs = [(j.prompt_tokens, j.completion_tokens) for j in batched]
    assert costs == [(j.prompt_tokens, j.completion_tokens) for j in live] and all(c[1] == 2 for c in costs)
    assert len({j.probability for j in batched[:6]}) == 6 and batched[6] == batched[0].swapped()
    # The bodies are the live requests', sent to the same endpoint.
    assert sorted(json.dumps(line["body"], sort_keys=True) for line in lines) == sorted(
        json.dumps(body, sort_keys=True) for body in server.live_requests
    )
    assert {line["url"] for line in lines} == {"/v1/chat/completions" if endpoint == "chat" else "/v1/completions"}
    assert all(
        line["custom_id"].startswith(judge.fingerprint[:12] + ":") and len(line["custom_id"]) <= 64 for line in lines
    )
    # Stored labels read back equal (the order each pair was judged in is kept), and a rerun sends nothing.
    assert store.get_pairs(judge.fingerprint, PROMPTS, A, B) == live
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **tokenizer, **QUICK)
        assert label(judge, store, BatchSettings(**FAST)) == live
        assert not server.created and not server.files
    usage = store.batch_usage(judge.fingerprint)
    expected_prompt = sum(40 if endpoint == "completions" else 50 + len(request_text(x["body"])) % 7 for x in lines)
    assert usage == {"prompt_tokens": expected_prompt, "completion_tokens": 12, "lines": 12}
    assert store.usage(judge.fingerprint) == {"prompt_tokens": expected_prompt, "completion_tokens": 12, "labels": 6}
    assert LabelStore(tmp_path / "live.sqlite").usage(judge.fingerprint) == store.usage(judge.fingerprint)
    stored = store.get_pairs(judge.fingerprint, PROMPTS, A, B)
    assert [(j.prompt_tokens, j.completion_tokens) for j in stored] == costs


def test_files_are_split_under_the_byte_limit(tmp_path):
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        live = label(judge, None)
        lengths = sorted(len(json.dumps({"body": body})) for body in server.live_requests)
        limit = 3 * (lengths[-1] + 200)  # about three lines per file
        store = LabelStore(tmp_path / "labels.sqlite")
        assert label(judge, store, BatchSettings(max_bytes_per_file=limit, **FAST)) == live
        contents = [server.files[b.input_file_id]["content"] for b in server.batches.values()]
    assert len(contents) >= 4 and all(len(content) <= limit for content in contents)
    assert sum(len(content.splitlines()) for content in contents) == 12
    with pytest.raises(BatchFileError, match="more than a batch file may hold"):
        label(judge, LabelStore(tmp_path / "other.sqlite"), BatchSettings(max_bytes_per_file=100, **FAST))


def test_polling_backs_off_up_to_its_limit(tmp_path, monkeypatch):
    import trl_won.rlaif.batch as batch_module

    slept = []
    monkeypatch.setattr(batch_module.time, "sleep", slept.append)  # records the intervals instead of waiting
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        settings = BatchSettings(poll_interval=1.0, poll_backoff=2.0, max_poll_interval=1.5, show_progress=False)
        label(judge, LabelStore(tmp_path / "labels.sqlite"), settings)
    # Created "validating"; looked at: in_progress, finalizing (a wait after each), completed. 2.0 is capped at 1.5.
    assert slept == [1.0, 1.5]


def test_a_create_whose_answer_is_lost_is_found_not_repeated(tmp_path, monkeypatch):
    import trl_won.rlaif.batch as batch_module

    monkeypatch.setattr(batch_module.time, "sleep", lambda seconds: None)
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        live = label(judge, None)
        server.lost_create_answers = 1
        batched = label(judge, LabelStore(tmp_path / "labels.sqlite"), BatchSettings(**FAST))
        assert server.lost_create_answers == 0 and len(server.created) == 1  # found by its metadata, not created again
    assert batched == live


def test_one_batch_run_per_store_at_a_time(tmp_path):
    import fcntl

    store = LabelStore(tmp_path / "labels.sqlite")
    with open(f"{store.path}.batch-lock", "a") as held:  # another process's run, as far as the lock goes
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with BatchServer(graded) as server:
            judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
            with pytest.raises(BatchFileError, match="Another process is labeling through batches"):
                label(judge, store, BatchSettings(**FAST))
            assert not server.files and not server.created
            fcntl.flock(held.fileno(), fcntl.LOCK_UN)
            assert all(j.probability is not None for j in label(judge, store, BatchSettings(**FAST)))


def test_score_batch_equals_live(tmp_path):
    prompts, completions = PROMPTS[:5], A[:5]
    with BatchServer(graded) as server:
        judge = OpenAIScoreJudge("judge", base_url=server.base_url, **QUICK)
        live = score_cached(judge, prompts, completions, store=LabelStore(tmp_path / "live.sqlite"))
        store = LabelStore(tmp_path / "batch.sqlite")
        batched = score_cached(judge, prompts, completions, store=store, batch=BatchSettings(**FAST))
        assert len(server.created) == 1
    assert batched == live and len({j.score for j in live}) == 5
    assert store.get_scores(judge.fingerprint, prompts, completions) == live


def test_an_expired_batch_keeps_its_results_and_the_rest_is_resubmitted_or_reported(tmp_path, caplog):
    def plan(index, lines):
        return Plan(outcome="expired", ran=7) if index == 0 else Plan()

    with BatchServer(graded) as server:
        live = label(OpenAIJudge("judge", base_url=server.base_url, **QUICK), None)
    with BatchServer(graded, plan=plan) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        store = LabelStore(tmp_path / "labels.sqlite")
        with caplog.at_level(logging.WARNING):
            reported = label(judge, store, BatchSettings(**FAST))
        assert len(server.created) == 1
        # The first 7 lines ran: the pairs with both lines are labeled, the others are reported with the reason.
        labeled = [j for j in reported[:6] if j.probability is not None]
        assert len(labeled) == 3  # 7 lines: 3 pairs with both orders (the order of lines is the pairs')
        assert all(j == live[i] for i, j in enumerate(reported) if j.probability is not None)
        unlabeled = [j for j in reported if j.probability is None]
        assert unlabeled and all("expired before this request ran" in j.reason for j in unlabeled)
        assert "got no answer from their batch lines" in caplog.text and "expired before" in caplog.text
        stored = store.count(judge.fingerprint)
        assert stored == len(labeled)
        # A rerun sends only the lines without an answer, in a second batch, and finishes.
        resumed = label(judge, store, BatchSettings(**FAST))
        assert resumed == live and len(server.created) == 2
        second = server.batches[server.created[1]]
        assert len(server.files[second.input_file_id]["content"].splitlines()) == 12 - 7


@pytest.mark.parametrize("failed", ["resubmit", "live"])
def test_failed_lines_are_resubmitted_or_sent_live(tmp_path, failed):
    refused = set()

    def flaky(body, attempt=0, headers=None):  # refuses each request the first time it sees it in a batch
        text = request_text(body)
        if headers == {} and text not in refused and probability(text) > 0.5:
            refused.add(text)
            return Reply(status=500, body={"error": {"message": "The server had an error processing your request."}})
        return graded(body)

    with BatchServer(graded) as server:
        live = label(OpenAIJudge("judge", base_url=server.base_url, **QUICK), None)
    with BatchServer(flaky) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        store = LabelStore(tmp_path / "labels.sqlite")
        assert label(judge, store, BatchSettings(failed=failed, **FAST)) == live
        assert refused
        if failed == "resubmit":
            assert len(server.created) == 2 and not server.live_requests
        else:
            refused_pairs = {i for i in range(6) if any(A[i].strip() in text for text in refused)}
            assert len(server.created) == 1 and len(server.live_requests) == 2 * len(refused_pairs)


def test_non_200_lines_in_the_output_file_are_reported_with_the_servers_reason(tmp_path):
    def too_long(body, attempt=0, headers=None):
        if "answer 5" in request_text(body):
            return Reply(status=400, body={"error": {"message": "This model's maximum context length is 8 tokens."}})
        return graded(body)

    with BatchServer(too_long, plan=lambda i, lines: Plan(errors_in_output=True)) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        judgements = label(judge, LabelStore(tmp_path / "labels.sqlite"), BatchSettings(**FAST))
    assert judgements[5].probability is None and not judgements[5].final
    assert "HTTP 400: This model's maximum context length is 8 tokens." in judgements[5].reason
    assert all(j.probability is not None for i, j in enumerate(judgements) if i != 5)


def test_a_failed_batch_reports_the_servers_reason(tmp_path):
    with BatchServer(graded, plan=lambda i, lines: Plan(outcome="failed", failure="Line 3 is not valid JSON.")) as s:
        judge = OpenAIJudge("judge", base_url=s.base_url, **QUICK)
        judgements = label(judge, LabelStore(tmp_path / "labels.sqlite"), BatchSettings(**FAST))
    assert all(
        j.probability is None and "failed: invalid_file: Line 3 is not valid JSON." in j.reason for j in judgements
    )


def test_cancelled_batches_keep_what_ran(tmp_path):
    cancelled = []

    def hook(event, info):  # at the first look at the batch, the user cancels it (before the look is answered)
        if event == "retrieve" and not cancelled:
            cancelled.extend(cancel_batches(judge, store))

    with BatchServer(graded, plan=lambda i, lines: Plan(ran=4), hook=hook) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        store = LabelStore(tmp_path / "labels.sqlite")
        judgements = label(judge, store, BatchSettings(**FAST))
        assert cancelled == ["batch_0"] and server.batches["batch_0"].status == "cancelled"
    # The 4 lines that ran before the cancellation are kept: the first two pairs are labeled.
    assert [j.probability is not None for j in judgements[:6]] == [True, True, False, False, False, False]
    assert all("was cancelled before this request ran" in j.reason for j in judgements[2:6])
    assert store.count(judge.fingerprint) == 2


def test_a_damaged_output_file_is_a_clear_error_and_a_rerun_downloads_it_again(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    plans = [Plan(cut_output=True)]
    with BatchServer(graded, plan=lambda i, lines: plans[i] if i < len(plans) else Plan()) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        with pytest.raises(BatchFileError) as error:
            label(judge, store, BatchSettings(**FAST))
        message = str(error.value)
        assert message.startswith("The results file file-1 of batch batch_0, line 12: not JSON")
        assert "run again to download it again" in message
        kept = sum(state[1] is not None for state in store.batch_lines(_all_ids(judge)).values())
        assert kept == 11  # the lines before the damaged one are stored
        # The server serves a complete file (as after a cut-off download): the rerun resumes the same batch.
        server.batches["batch_0"].plan = Plan()
        server._run(server.batches["batch_0"], None)
        labels = label(judge, store, BatchSettings(**FAST))
        assert len(server.created) == 1 and all(j.probability is not None for j in labels)


def _all_ids(judge):
    requests = _Requests(judge, "pairs", list(zip(PROMPTS[:6], A[:6], B[:6])))
    return [cid for ids in requests.ids for cid in ids]


def test_a_batch_the_server_does_not_know_is_a_clear_error(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        label(judge, store, BatchSettings(**FAST))
    # A store whose running batch is unknown to the server (another account, a deleted batch).
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        other = LabelStore(tmp_path / "other.sqlite")
        requests = _Requests(judge, "pairs", list(zip(PROMPTS[:2], A[:2], B[:2])))
        ids = [cid for ids in requests.ids for cid in ids]
        other.record_batch_job(
            "job1", judge.fingerprint, "openai", server.base_url, [(c, requests.key_of[c]) for c in ids]
        )
        other.update_batch_job("job1", state="submitted", input_file_id="file-x", batch_id="batch_gone")
        with pytest.raises(BatchFileError, match="does not know batch batch_gone") as error:
            judge_pairs_cached(judge, PROMPTS[:2], A[:2], B[:2], store=other, batch=BatchSettings(**FAST))
        assert "forget_batch('batch_gone')" in str(error.value)
        assert other.forget_batch("batch_gone") == 1
        judgements = judge_pairs_cached(judge, PROMPTS[:2], A[:2], B[:2], store=other, batch=BatchSettings(**FAST))
        assert all(j.probability is not None for j in judgements) and len(server.created) == 1


def test_the_api_key_never_reaches_the_store_files_logs_or_errors(tmp_path, monkeypatch, caplog):
    key = "token-" + secrets.token_hex(16)  # not `sk-`-shaped (vLLM's --api-key): only scrubbing the key hides it
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def echoes(body, attempt=0, headers=None):  # a server that echoes the key back in answers and errors
        if "answer 1" in request_text(body):
            return Reply(status=401 if headers == {} else 200, body={"error": {"message": f"bad key {key}"}})
        reply = graded(body)
        reply.body["choices"][0]["message"]["content"] += f" Authorization: Bearer {key}"
        return reply

    with (
        BatchServer(echoes, plan=lambda i, lines: Plan(errors_in_output=True)) as server,
        caplog.at_level(logging.DEBUG),
    ):
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        store = LabelStore(tmp_path / "labels.sqlite")
        judgements = label(judge, store, BatchSettings(**FAST))
        assert all(h.get("authorization") == f"Bearer {key}" for h in server.headers)  # the key was used
        uploaded = b"".join(f["content"] for f in server.files.values() if f["purpose"] == "batch")
        # A refusal of the Batch API itself that quotes the key: the error shows the server's message, scrubbed.
        server.create_error = (400, f"Invalid request from key {key}")
        with pytest.raises(JudgeError) as error:
            judge_pairs_cached(judge, ["new?"], ["x"], ["y"], store=store, batch=BatchSettings(**FAST))
    assert "refused to create the batch (HTTP 400)" in str(error.value) and "key ***" in str(error.value)
    assert key not in str(error.value)
    assert "HTTP 401: bad key ***" in judgements[1].reason
    assert key.encode() not in uploaded
    assert key not in caplog.text and key not in repr(judgements)
    # Errors that quote what a server or a results file sent back: a damaged output line, a custom_id that is not the
    # batch's, a failed batch's reason, a results file's damaged or foreign line. Each shows the key scrubbed.
    plans = [
        Plan(extra_output_line=f"<html>401 Unauthorized: {key}</html>"),
        Plan(extra_output_line=json.dumps({"custom_id": f"x:{key}:00", "response": None, "error": None})),
        Plan(outcome="failed", failure=f"The key {key} may not create batches."),
    ]
    messages = []
    with BatchServer(graded, plan=lambda i, lines: plans[i]) as server, caplog.at_level(logging.DEBUG):
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        for n, expected in enumerate(["line 3: not JSON ('<html>401 Unauthorized: ***", "answers custom_id x:***:00"]):
            with pytest.raises(BatchFileError) as error:
                store_n = LabelStore(tmp_path / f"echo{n}.sqlite")
                judge_pairs_cached(judge, PROMPTS[:1], A[:1], B[:1], store=store_n, batch=BatchSettings(**FAST))
            messages.append(str(error.value))
            assert expected in messages[-1]
        failed = judge_pairs_cached(
            judge, PROMPTS[:1], A[:1], B[:1], store=LabelStore(tmp_path / "failed.sqlite"), batch=BatchSettings(**FAST)
        )
        assert "failed: invalid_file: The key *** may not create batches." in failed[0].reason
        results = tmp_path / "results.jsonl"
        for text, expected in ((f"Bearer {key}", "not JSON ('Bearer ***"), (json.dumps({"custom_id": key}), "'***'")):
            results.write_text(text + "\n")
            with pytest.raises(BatchFileError) as error:
                judge_pairs_cached(
                    judge,
                    ["Q"],
                    ["a"],
                    ["b"],
                    store=LabelStore(tmp_path / "read.sqlite"),
                    batch=BatchSettings(results_file=results),
                )
            messages.append(str(error.value))
            assert expected in messages[-1]
    results.unlink()  # the test's own file, quoting the key
    assert all(key not in message for message in messages) and len(messages) == 4
    assert key not in repr(failed) and key not in caplog.text
    store.close()
    for path in tmp_path.iterdir():
        assert key.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------------------- vLLM run-batch files


def test_vllm_run_batch_files_round_trip_and_equal_live_labels(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        live = label(judge, None)
    requests_file = tmp_path / "requests.jsonl"
    labeler = BatchLabeler(judge, store, BatchSettings(), "pairs")
    items = list(dict.fromkeys(zip(PROMPTS[:6], A[:6], B[:6])))
    assert labeler.write_request_file(items, requests_file) == 12
    # What `vllm run-batch -i requests.jsonl -o results.jsonl` writes: one line per request, in input order.
    results = tmp_path / "results.jsonl"
    with open(results, "w") as out:
        for n, line in enumerate(requests_file.read_text().splitlines()):
            request = json.loads(line)
            assert request["url"] == "/v1/chat/completions" and request["method"] == "POST"
            body = graded(request["body"]).body
            response = {"status_code": 200, "request_id": f"vllm-batch-{n}", "body": body}
            out.write(
                json.dumps({"id": f"vllm-{n}", "custom_id": request["custom_id"], "response": response, "error": None})
                + "\n"
            )
    judgements = label(judge, store, BatchSettings(results_file=results))
    assert judgements == live
    assert store.count(judge.fingerprint) == 6


def test_a_request_file_never_takes_the_lines_of_a_running_batch(tmp_path, monkeypatch, caplog):
    """A Batch API run stopped while its batch runs, a request file written for the same store and judge, then the
    batch finishes: its results are all stored and nothing is sent twice."""
    import trl_won.rlaif.batch as batch_module

    store = LabelStore(tmp_path / "labels.sqlite")
    requests_file = tmp_path / "requests.jsonl"
    items = list(dict.fromkeys(zip(PROMPTS[:6], A[:6], B[:6])))
    sleep = batch_module.time.sleep

    def interrupted(seconds):  # Ctrl-C at the first wait between two looks at the batch
        raise KeyboardInterrupt

    with BatchServer(graded) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        live = label(judge, None)
        monkeypatch.setattr(batch_module.time, "sleep", interrupted)
        with pytest.raises(KeyboardInterrupt):
            judge_pairs_cached(judge, PROMPTS[:3], A[:3], B[:3], store=store, batch=BatchSettings(**FAST))
        monkeypatch.setattr(batch_module.time, "sleep", sleep)
        assert len(server.created) == 1
        batch = server.batches[server.created[0]]
        assert batch.status == "in_progress"  # submitted, looked at once, not finished
        in_batch = {json.loads(x)["custom_id"] for x in server.files[batch.input_file_id]["content"].splitlines()}
        assert len(in_batch) == 6
        # The request file holds the other pairs' lines only, and the warning names the running batch.
        with caplog.at_level(logging.WARNING, logger="trl_won.rlaif.batch"):
            written = BatchLabeler(judge, store, BatchSettings(), "pairs").write_request_file(items, requests_file)
        in_file = {json.loads(x)["custom_id"] for x in requests_file.read_text().splitlines()}
        assert written == 6 and len(in_file) == 6 and not in_file & in_batch
        assert f"6 request line(s) left out of {requests_file}" in caplog.text and f"batch {batch.id}" in caplog.text
        assert set(store.lines_of_job(store.batch_jobs()[0]["job_key"])) == in_batch
        # The batch finishes: the rerun resumes it (no new batch) and stores all of its results.
        resumed = judge_pairs_cached(judge, PROMPTS[:3], A[:3], B[:3], store=store, batch=BatchSettings(**FAST))
        assert server.created == [batch.id] and batch.status == "completed"
        assert sum(f["purpose"] == "batch" for f in server.files.values()) == 1
        # While a Batch API run holds the store, writing a request file is refused (hook: during its polling).
        refusals = []

        def write_meanwhile(event, info):
            if event == "retrieve" and not refusals:
                try:
                    BatchLabeler(judge, store, BatchSettings(), "pairs").write_request_file(
                        items, tmp_path / "r.jsonl"
                    )
                except BatchFileError as error:
                    refusals.append(str(error))

        server.hook = write_meanwhile
        judge_pairs_cached(judge, PROMPTS[3:6], A[3:6], B[3:6], store=store, batch=BatchSettings(**FAST))
    assert resumed == live[:3]
    answered = store.batch_lines(sorted(in_batch))
    assert len(answered) == 6 and all(state[1] is not None for state in answered.values())
    assert len(refusals) == 1 and "Another process is labeling through batches" in refusals[0]
    assert not (tmp_path / "r.jsonl").exists()


def fixture_judge():
    return OpenAIJudge("Qwen/Qwen2.5-0.5B-Instruct", base_url="http://127.0.0.1:9/v1", template="helpfulness")


def test_a_hand_written_vllm_results_file_reads_back(tmp_path):
    """tests/fixtures/vllm_run_batch_results.jsonl follows vLLM's BatchRequestOutput schema (run_batch.py): one line
    per request, `response` {status_code, request_id, body: ChatCompletionResponse}, `error` null; a failed request
    has status 400, body null and the error message in `error`."""
    judge = fixture_judge()
    store = LabelStore(tmp_path / "labels.sqlite")
    labeler = BatchLabeler(judge, store, BatchSettings(), "pairs")
    requests_file = tmp_path / "requests.jsonl"
    pairs = [("What is 2+2?", " 4", " 5"), ("Name a color.", " Blue.", " Seven."), ("Say hi.", " Hi!", " No.")]
    assert labeler.write_request_file(pairs, requests_file) == 6
    ids = [json.loads(line)["custom_id"] for line in requests_file.read_text().splitlines()]
    template = (FIXTURES / "vllm_run_batch_results.jsonl").read_text()
    # The fixture's custom_ids stand for this judge's six lines (the fingerprint changes with the package).
    results = tmp_path / "results.jsonl"
    for i, cid in enumerate(ids):
        template = template.replace(f"{{id{i}}}", cid)
    results.write_text(template)
    judgements = judge_pairs_cached(judge, *zip(*pairs), store=store, batch=BatchSettings(results_file=results))
    first = judgements[0]
    # Line 1: "1" at logprob -0.105 and "2" at -2.303; line 2 (pair shown swapped): "2" at -0.223, "1" at -1.609.
    p_first = math.exp(-0.105) / (math.exp(-0.105) + math.exp(-2.303))
    p_second = 1 - math.exp(-1.609) / (math.exp(-1.609) + math.exp(-0.223))
    assert first.probability_a_first == pytest.approx(p_first, rel=1e-12)
    assert first.probability_a_second == pytest.approx(p_second, rel=1e-12)
    assert judgements[1].probability is None and "HTTP 400" in judgements[1].reason
    assert "maximum context length" in judgements[1].reason
    # Line 5: a newer vLLM's error object ({"error": {"message", "type", "code"}}).
    assert judgements[2].probability is None and "HTTP 400: The model `judge` does not exist." in judgements[2].reason
    assert store.batch_usage(judge.fingerprint) == {
        "prompt_tokens": 2 * 183 + 2 * 179,
        "completion_tokens": 4,
        "lines": 4,
    }


def test_results_files_that_cannot_be_read_are_refused_by_name(tmp_path):
    judge = fixture_judge()
    store = LabelStore(tmp_path / "labels.sqlite")
    labeler = BatchLabeler(judge, store, BatchSettings(), "pairs")
    requests_file = tmp_path / "requests.jsonl"
    labeler.write_request_file([("Q?", " a", " b")], requests_file)
    ids = [json.loads(line)["custom_id"] for line in requests_file.read_text().splitlines()]

    def line(cid):
        body = chat_body("1", {"1": 0.7, "2": 0.3})
        return json.dumps({"id": "x", "custom_id": cid, "response": {"status_code": 200, "body": body}, "error": None})

    def refused(text, *patterns):
        path = tmp_path / "results.jsonl"
        path.write_text(text)
        with pytest.raises(BatchFileError) as error:
            labeler.read_results_file(path)
        for pattern in [str(path), *patterns]:
            assert pattern in str(error.value)
        return str(error.value)

    good = line(ids[0]) + "\n" + line(ids[1]) + "\n"
    refused(good[:-40], "line 2: not JSON", "damaged or truncated")
    refused(good + "{}\n", "line 3: not a batch result line")
    refused(good + line(ids[0]) + "\n", "line 3: custom_id", "already answered on line 1")
    other = fixture_judge()
    other.top_logprobs = 5
    refused(
        line(ids[0].replace(judge.fingerprint[:12], other.fingerprint[:12])),
        "line 1",
        "another fingerprint",
        judge.fingerprint,
    )
    unknown = ids[0].rsplit(":", 2)[0] + ":" + "0" * 40 + ":00"
    refused(line(unknown), "line 1", "is in no request file written into the label store")
    refused(line("request-1"), "from no trl_won request file")
    assert store.count() == 0 and all(v[1] is None for v in store.batch_lines(ids).values())  # nothing half-read
    with pytest.raises(BatchFileError, match="does not exist"):
        labeler.read_results_file(tmp_path / "missing.jsonl")


def test_run_batch_files_refuse_the_exact_prompt_mode_and_chain_of_thought(tmp_path, tiny_paths):
    store = LabelStore(tmp_path / "labels.sqlite")
    exact = OpenAIJudge("judge", base_url="http://127.0.0.1:9/v1", tokenizer=tiny_paths.policy)
    with pytest.raises(ValueError, match="run-batch serves /v1/chat/completions only"):
        BatchLabeler(exact, store, BatchSettings(), "pairs").write_request_file(
            [("Q", "a", "b")], tmp_path / "r.jsonl"
        )
    cot = OpenAIJudge("judge", base_url="http://127.0.0.1:9/v1", chain_of_thought=True)
    with pytest.raises(ValueError, match="chain of thought"):
        judge_pairs_cached(cot, ["Q"], ["a"], ["b"], store=store, batch=True)
    with pytest.raises(ValueError, match="needs a `store`"):
        judge_pairs_cached(fixture_judge(), ["Q"], ["a"], ["b"], batch=True)
