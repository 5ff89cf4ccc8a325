"""Batch labeling killed with SIGKILL at each moment that matters (during the upload, right after the batch is
created, while polling, while downloading results): the rerun submits nothing twice (the server's count of created
batches), loses nothing stored, and finishes with the labels of an uninterrupted run."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from batch_server import BatchServer
from test_rlaif_batch import FAST, QUICK, graded

from trl_won.rlaif import BatchSettings, LabelStore, OpenAIJudge, judge_pairs_cached


ROOT = Path(__file__).resolve().parents[1]
N = 10
PROMPTS = [f"Q{i}: what is {i} + {i}?" for i in range(N)]
A = [f" It is {2 * i}." for i in range(N)]
B = [f" Maybe {i + 1}{'!' * i}" for i in range(N)]
# 20 request lines in files of at most 8: three batches.
SETTINGS = {"max_requests_per_file": 8, **FAST}

CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from trl_won.rlaif import BatchSettings, LabelStore, OpenAIJudge, judge_pairs_cached
prompts, a, b = json.loads({data!r})
judge = OpenAIJudge("judge", base_url={url!r}, timeout=60, max_retries=0)
judge_pairs_cached(judge, prompts, a, b, store=LabelStore({path!r}), batch=BatchSettings(**json.loads({settings!r})))
"""


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def answered_lines(path: Path) -> dict:
    if not path.exists():
        return {}
    with sqlite3.connect(path) as connection:
        try:
            rows = connection.execute("SELECT custom_id, answer FROM batch_lines WHERE answer IS NOT NULL").fetchall()
        except sqlite3.OperationalError:  # the tables are not created yet
            return {}
    return dict(rows)


@pytest.mark.parametrize("point", ["upload", "create", "retrieve", "download"])
def test_a_run_killed_at_any_point_resumes_without_paying_twice(tmp_path, point):
    with BatchServer(graded) as server:
        uninterrupted = judge_pairs_cached(OpenAIJudge("judge", base_url=server.base_url, **QUICK), PROMPTS, A, B)

    reached, release = threading.Event(), threading.Event()
    seen = {"retrieve": 0}

    def hook(event, info):
        if event != point or reached.is_set():
            return
        if event == "retrieve":
            seen["retrieve"] += 1
            if seen["retrieve"] < 2:  # the second look at a batch: polling is under way
                return
        reached.set()
        release.wait(60)  # the answer is held back until the client is dead

    path = tmp_path / "labels.sqlite"
    settings = json.dumps({k: v for k, v in SETTINGS.items()})
    with BatchServer(graded, hook=hook) as server:
        code = textwrap.dedent(
            CHILD.format(
                root=str(ROOT),
                data=json.dumps([PROMPTS, A, B]),
                url=server.base_url,
                path=str(path),
                settings=settings,
            )
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert reached.wait(120), child.communicate(timeout=5)[0].decode(errors="replace")[-3000:]
            if point == "download":  # lines are stored as they arrive: wait for some, then kill mid-file
                deadline = time.monotonic() + 60
                while not answered_lines(path) and time.monotonic() < deadline:
                    time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            release.set()
        assert child.returncode == -signal.SIGKILL
        kept = answered_lines(path)
        created_before = list(server.created)
        uploads_before = sum(f["purpose"] == "batch" for f in server.files.values())
        if point == "download":
            assert 0 < len(kept) < 8  # killed half-way through the first output file
        else:
            assert not kept

        judge = OpenAIJudge("judge", base_url=server.base_url, **QUICK)
        store = LabelStore(path)
        resumed = judge_pairs_cached(judge, PROMPTS, A, B, store=store, batch=BatchSettings(**SETTINGS))
        # Nothing submitted twice: three batches in all, each created once.
        assert len(server.created) == 3, (point, created_before, server.created)
        assert server.created[: len(created_before)] == created_before
        uploads = sum(f["purpose"] == "batch" for f in server.files.values())
    assert resumed == uninterrupted
    assert store.get_pairs(judge.fingerprint, PROMPTS, A, B) == uninterrupted
    final = answered_lines(path)
    assert len(final) == 2 * N and all(final[cid] == answer for cid, answer in kept.items())  # nothing lost
    expected_created_before = {"upload": 0, "create": 1, "retrieve": 3, "download": 3}[point]
    assert len(created_before) == expected_created_before
    # The file whose upload was cut off is uploaded again (files cost nothing); no other file is.
    assert uploads == 3 + (uploads_before if point == "upload" else 0)
