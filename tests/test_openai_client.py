"""`JudgeClient`, the served judges' HTTP engine (worker threads, each with its own `openai.OpenAI` client),
against a real HTTP server on 127.0.0.1: the concurrency limit as the server sees it, callbacks, cancellation,
threads left behind, pickling, the rate limit."""

import asyncio
import gc
import pickle
import secrets
import threading
import time

import pytest
from rlaif_server import JudgeServer, Reply, chat_body

from trl_won.rlaif.openai_client import JudgeClient, parse_chat_response


def echo_number(body, attempt, headers):
    """Answers each request with the number it was sent (after a short delay); the first attempt of every third one
    gets a 429 that asks for a quick retry."""
    number = body["messages"][0]["content"]
    if int(number) % 3 == 0 and attempt == 0:
        return Reply(status=429, body={"error": {"message": "slow down"}}, headers={"retry-after-ms": "10"})
    return Reply(body=chat_body(number), delay=0.05)


def body_of(i: int) -> dict:
    return {"model": "judge", "messages": [{"role": "user", "content": str(i)}], "max_tokens": 1}


def plain_job(i: int):
    def job(session):
        return session.post("/chat/completions", body_of(i), parse_chat_response).content

    return job


def judge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("judge-http", "judge-openai"))]


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.mark.parametrize("inside_event_loop", [False, True])
def test_the_server_sees_exactly_max_concurrency_requests_at_once_retries_included(no_key, inside_event_loop):
    with JudgeServer(echo_number) as server:
        client = JudgeClient(server.base_url, max_concurrency=5)
        jobs = [plain_job(i) for i in range(60)]
        if inside_event_loop:  # e.g. a notebook: `map` blocks this loop's thread, the requests run on the judge's

            async def main():
                return client.map(jobs)

            results = asyncio.run(main())
        else:
            results = client.map(jobs)
        client.close()
    assert results == [str(i) for i in range(60)]
    assert server.max_in_flight == 5  # never more, and the pool is kept full
    assert client.stats.retries == 20 and client.stats.requests == 80 == len(server.requests)


def test_an_error_in_the_callback_stops_the_run_and_the_client_still_works(no_key):
    with JudgeServer(echo_number) as server:
        client = JudgeClient(server.base_url, max_concurrency=2)

        def crash(index, result):
            raise KeyError("the callback failed")

        with pytest.raises(KeyError, match="the callback failed"):
            client.map([plain_job(i) for i in range(1, 100)], crash)
        time.sleep(0.3)  # anything still running would send more requests by now
        sent = len(server.requests)
        time.sleep(0.3)
        assert len(server.requests) == sent < 20  # the other jobs were cancelled, not sent
        assert server.in_flight == 0
        assert client.map([plain_job(1), plain_job(2)]) == ["1", "2"]
        client.close()


def test_close_and_garbage_collection_leave_no_threads_behind(no_key):
    before = set(judge_threads())
    with JudgeServer(echo_number) as server:
        client = JudgeClient(server.base_url, max_concurrency=3)
        assert client.map([plain_job(1), plain_job(2)]) == ["1", "2"]
        assert len(set(judge_threads()) - before) >= 1  # the worker threads
        client.close()
        assert set(judge_threads()) <= before
        assert client.map([plain_job(4)]) == ["4"]  # a closed client starts again
        forgotten = JudgeClient(server.base_url)
        assert forgotten.map([plain_job(5)]) == ["5"]
        del client, forgotten
        gc.collect()
        time.sleep(0.2)
    assert set(judge_threads()) <= before


def test_a_pickled_client_runs_in_its_new_home(no_key, monkeypatch):
    key = f"test-{secrets.token_hex(12)}"  # from the environment, as keys always are; never in the pickle
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with JudgeServer(echo_number) as server:
        client = JudgeClient(server.base_url, max_concurrency=3)
        assert client.map([plain_job(1)]) == ["1"]
        pickled = pickle.dumps(client)
        assert key.encode() not in pickled
        copy = pickle.loads(pickled)
        assert copy.map([plain_job(i) for i in range(1, 5)]) == ["1", "2", "3", "4"]
        assert copy.stats.requests == client.stats.requests + 5  # its counts came along
        client.close()
        copy.close()
    assert {headers["Authorization"] for _, _, headers in server.requests} == {f"Bearer {key}"}


def test_requests_per_second_spaces_request_starts_across_all_jobs(no_key):
    def answer(body, attempt, headers):
        number = body["messages"][0]["content"]
        return Reply(body=chat_body(number), delay=0.3 if int(number) < 0 else 0.0)

    with JudgeServer(answer) as server:
        client = JudgeClient(server.base_url, max_concurrency=8, requests_per_second=40)
        client.map([plain_job(-i) for i in range(1, 9)])  # opens 8 connections: arrivals then show request starts
        warm = len(server.requests)
        client.map([plain_job(i) for i in range(1, 13)])
        client.close()
    arrivals = sorted(t for t, _, _ in server.requests[warm:])
    assert warm == 8 and len(arrivals) == 12
    assert arrivals[-1] - arrivals[0] >= 11 / 40 - 0.01  # 11 gaps of 1/40 s
