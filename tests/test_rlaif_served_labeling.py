"""Labeling with a served judge: requests keep flowing across chunks, each label is stored as it arrives, and a run
killed half-way resumes without asking again for what was stored."""

import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from rlaif_server import JudgeServer, Reply, chat_body, request_text, sections

from trl_won.rlaif import LabelStore, OpenAIJudge, judge_pairs_cached


ROOT = Path(__file__).resolve().parents[1]


def index_of(body) -> int:
    return int(re.search(r"Q(\d+)\b", request_text(body)).group(1))


def answer(body):
    top = {"1": 0.8, "2": 0.2} if "GOOD" in sections(body)[0] else {"1": 0.2, "2": 0.8}
    return Reply(body=chat_body(max(top, key=top.get), top))


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_rate_limited_requests_do_not_hold_up_the_others(tmp_path):
    # 30% of the pairs get a 429 with Retry-After 0.5 s on their first attempt. Chunked labeling would wait for
    # them before sending any pair of the next chunk; here the other requests keep going meanwhile.
    def limited(body, attempt, headers):
        if index_of(body) % 10 < 3 and attempt == 0:
            return Reply(status=429, body={"error": "slow down"}, headers={"Retry-After": "0.5"})
        return answer(body)

    n, chunk_size = 40, 8
    store = LabelStore(tmp_path / "labels.sqlite")
    with JudgeServer(limited) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url, max_concurrency=4)
        prompts = [f"Q{i}" for i in range(n)]
        judgements = judge_pairs_cached(judge, prompts, ["GOOD"] * n, ["x"] * n, store=store, chunk_size=chunk_size)
    assert all(j.probability == pytest.approx(0.8) for j in judgements)
    assert store.count(judge.fingerprint) == n
    seen, retries, firsts = set(), [], {}
    for t, body, _ in server.requests:
        key = request_text(body)
        if key in seen:
            retries.append((t, index_of(body)))
        else:
            seen.add(key)
            firsts.setdefault(index_of(body), t)
    first_retry = min(t for t, i in retries if i < chunk_size)
    later_chunks = [i for i, t in firsts.items() if t < first_retry and i >= chunk_size]
    # While the first chunk's rate-limited pairs waited, at least a chunk's worth of later pairs was sent.
    assert len(later_chunks) >= chunk_size, sorted(later_chunks)
    assert judge.stats.retries == 2 * len([i for i in range(n) if i % 10 < 3])
    assert server.max_in_flight <= 4


CHILD = """
import sys
sys.path.insert(0, {root!r})
from trl_won.rlaif import LabelStore, OpenAIJudge, judge_pairs_cached
judge = OpenAIJudge("judge", base_url={url!r}, max_concurrency=64)  # every request goes out at once
n = {n}
judge_pairs_cached(judge, [f"Q{{i}}" for i in range(n)], ["GOOD"] * n, ["x"] * n, store=LabelStore({path!r}))
"""


def test_a_killed_run_keeps_every_label_it_got_and_resumes_without_asking_again(tmp_path):
    n, answered = 20, 6
    release = threading.Event()

    def stalls(body, attempt, headers):  # answers the first pairs; the others hang until the test ends
        if index_of(body) >= answered:
            release.wait(30)
        return answer(body)

    path = tmp_path / "labels.sqlite"
    with JudgeServer(stalls) as server:
        code = textwrap.dedent(CHILD.format(root=str(ROOT), url=server.base_url, n=n, path=str(path)))
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                if path.exists() and LabelStore(path).count() >= answered:
                    break
                time.sleep(0.05)
            stored = LabelStore(path).count() if path.exists() else 0
        finally:
            child.kill()
            child.wait()
            release.set()
    output = child.stdout.read().decode(errors="replace")
    # The answered pairs were stored while the others were still in flight (a chunk of 64 would have stored none).
    assert stored == answered, output

    with JudgeServer(lambda body, attempt, headers: answer(body)) as server:
        judge = OpenAIJudge("judge", base_url=server.base_url)
        store = LabelStore(path)
        judgements = judge_pairs_cached(judge, [f"Q{i}" for i in range(n)], ["GOOD"] * n, ["x"] * n, store=store)
        asked = sorted({index_of(body) for _, body, _ in server.requests})
    assert asked == list(range(answered, n))  # nothing stored is asked again
    assert all(j.probability == pytest.approx(0.8) for j in judgements)
    assert store.count(judge.fingerprint) == n
