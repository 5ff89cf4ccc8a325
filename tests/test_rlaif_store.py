import multiprocessing
import re
import shutil
import sqlite3
import subprocess
from dataclasses import replace

import pytest
from rlaif_helpers import LengthJudge, LengthScorer

from trl_won.rlaif import (
    LabelStore,
    LabelStoreError,
    PairwiseJudgement,
    RunningBatchError,
    ScoreJudgement,
    judge_pairs_cached,
    score_cached,
)
from trl_won.rlaif.store import pair_key


PROMPTS = [f"prompt {i}" for i in range(10)]
A = [" " + "x" * (i % 4) for i in range(10)]
B = [" " + "y" * (3 - i % 4) + "z" for i in range(10)]


def test_labels_round_trip_with_both_orders_and_rationales(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    j = PairwiseJudgement.from_orders(0.9, 0.6, rationale_a_first="first", rationale_a_second="second")
    unjudged = PairwiseJudgement.unjudged("neither 1 nor 2")
    store.put_pairs("fp", ["p", "q"], ["a", "a"], ["b", "b"], [j, unjudged])
    got, got_none = store.get_pairs("fp", ["p", "q"], ["a", "a"], ["b", "b"])
    assert got == j
    assert got_none.probability is None and got_none.reason == "neither 1 nor 2"
    # The same pair asked the other way round is read by swapping; another judge sees nothing.
    assert store.get_pairs("fp", ["p"], ["b"], ["a"]) == [j.swapped()]
    assert store.get_pairs("other", ["p"], ["a"], ["b"]) == [None]
    assert store.count("fp") == 2 and store.count() == 2


def test_non_final_judgements_are_not_stored(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    assert store.put_pairs("fp", ["p"], ["a"], ["b"], [PairwiseJudgement.unjudged("HTTP 503", final=False)]) == 0
    assert store.get_pairs("fp", ["p"], ["a"], ["b"]) == [None]
    assert store.put_scores("fp", ["p"], ["a"], [ScoreJudgement.unjudged("timeout", final=False)]) == 0


def test_only_hashes_of_the_content_are_stored(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    store.put_pairs("fp", ["a very private prompt"], ["secret a"], ["secret b"], [PairwiseJudgement(0.7)])
    raw = (tmp_path / "labels.sqlite").read_bytes()
    assert b"private" not in raw and b"secret" not in raw
    key, flipped = pair_key("a very private prompt", "secret a", "secret b")
    assert len(key) == 64 and pair_key("a very private prompt", "secret b", "secret a") == (key, not flipped)


def test_a_rerun_after_a_crash_asks_the_judge_nothing_already_stored(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    crashing = LengthJudge(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        judge_pairs_cached(crashing, PROMPTS, A, B, store=store, chunk_size=2)
    assert store.count(crashing.fingerprint) == 4  # two full chunks were committed before the Ctrl-C

    resumed = LengthJudge()
    judgements = judge_pairs_cached(resumed, PROMPTS, A, B, store=LabelStore(tmp_path / "labels.sqlite"), chunk_size=2)
    assert resumed.pairs_seen == list(zip(PROMPTS, A, B))[4:]  # only what was not stored
    again = LengthJudge()
    from_store = judge_pairs_cached(again, PROMPTS, A, B, store=store)
    assert again.calls == 0
    # Stored as judged, with the order it was judged in: read back bit for bit, equal to an uninterrupted run.
    uninterrupted = judge_pairs_cached(LengthJudge(), PROMPTS, A, B)
    assert from_store == judgements == uninterrupted
    assert any(pair_key(p, a, b)[1] for p, a, b in zip(PROMPTS, A, B))  # some pairs were judged against key order
    # Without a store every pair is judged; duplicates (also swapped ones) only once.
    fresh = LengthJudge()
    dup = judge_pairs_cached(fresh, ["p", "p", "p"], ["aa", "b", "aa"], ["b", "aa", "b"])
    assert len(fresh.pairs_seen) == 1
    assert dup[1] == dup[0].swapped() and dup[2] == dup[0]


def test_scores_are_cached_too(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    scorer = LengthScorer()
    first = score_cached(scorer, ["p", "p", "q"], ["long answer", "", "long answer"], store=store)
    assert first[1].score is None and first[1].reason == "empty completion"
    again = LengthScorer()
    assert score_cached(again, ["p", "p", "q"], ["long answer", "", "long answer"], store=store) == first
    assert again.calls == 0 and store.count(kind="score") == 3


def _label_in_process(path, start, stop, go):
    store = LabelStore(path)
    go.wait()  # both processes start writing at the same moment
    judge = LengthJudge()
    # One transaction per pair: as many chances to collide as possible.
    judge_pairs_cached(judge, PROMPTS_MP[start:stop], A_MP[start:stop], B_MP[start:stop], store, chunk_size=1)


PROMPTS_MP = [f"p{i}" for i in range(60)]
A_MP = ["a" * (i % 7) for i in range(60)]
B_MP = ["b" * (i % 5) for i in range(60)]


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    path = tmp_path / "labels.sqlite"
    LabelStore(path)
    context = multiprocessing.get_context("fork")
    go = context.Event()
    # Overlapping ranges: both processes write pairs 20-39 at the same time.
    workers = [context.Process(target=_label_in_process, args=(path, lo, hi, go)) for lo, hi in ((0, 40), (20, 60))]
    for w in workers:
        w.start()
    go.set()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    store = LabelStore(path)
    assert store.count(LengthJudge().fingerprint) == 60
    probe = LengthJudge()
    judge_pairs_cached(probe, PROMPTS_MP, A_MP, B_MP, store=store)
    assert probe.calls == 0
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_survives_pickling_and_rejects_other_schema_versions(tmp_path):
    import pickle

    store = LabelStore(tmp_path / "labels.sqlite")
    store.put_pairs("fp", ["p"], ["a"], ["b"], [PairwiseJudgement(0.25)])
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get_pairs("fp", ["p"], ["a"], ["b"])[0].probability == 0.25
    with sqlite3.connect(tmp_path / "labels.sqlite") as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ValueError, match="schema version 99"):
        LabelStore(tmp_path / "labels.sqlite")


def test_a_label_judged_in_either_order_reads_back_bit_for_bit(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    # 1 - (1 - p) != p for these: a label swapped on writing and again on reading would differ in the last bits.
    judged = PairwiseJudgement.from_orders(0.1, 0.7, rationale_a_first="first", rationale_a_second="second")
    assert 1.0 - (1.0 - judged.probability_a_first) != judged.probability_a_first
    pairs = [("p", "a", "b"), ("p", "b", "a")]
    assert {pair_key(*pair)[1] for pair in pairs} == {False, True}
    for i, (prompt, a, b) in enumerate(pairs):
        store.put_pairs(f"fp{i}", [prompt], [a], [b], [judged])
        assert store.get_pairs(f"fp{i}", [prompt], [a], [b]) == [judged]
        assert store.get_pairs(f"fp{i}", [prompt], [b], [a]) == [judged.swapped()]


def test_a_version_1_store_is_upgraded_and_keeps_its_labels(tmp_path):
    path = tmp_path / "labels.sqlite"
    key, flipped = pair_key("p", "a", "b")
    judged = PairwiseJudgement.from_orders(0.25, 0.5)
    stored = judged.swapped() if flipped else judged  # version 1 stored every pair in its key's order
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE pairwise_labels (
                fingerprint TEXT NOT NULL, content_key TEXT NOT NULL, probability REAL, probability_first REAL,
                probability_second REAL, reason TEXT, rationale_first TEXT, rationale_second TEXT,
                created_at REAL NOT NULL, PRIMARY KEY (fingerprint, content_key)
            ) WITHOUT ROWID;
            """
        )
        row = ("fp", key, stored.probability, stored.probability_a_first, stored.probability_a_second)
        connection.execute("INSERT INTO pairwise_labels VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, 0)", row)
    store = LabelStore(path)
    assert store.get_pairs("fp", ["p"], ["b" if flipped else "a"], ["a" if flipped else "b"]) == [stored]
    store.put_pairs("fp", ["q"], ["a"], ["b"], [judged])
    assert store.get_pairs("fp", ["q"], ["a"], ["b"]) == [judged]
    with sqlite3.connect(path) as connection:
        # Upgraded to the current version (3 added the batch tables).
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)


def test_a_version_2_store_is_upgraded_to_version_3_in_place(tmp_path):
    path = tmp_path / "labels.sqlite"
    judged = PairwiseJudgement.from_orders(0.25, 0.625)
    key, flipped = pair_key("p", "a", "b")
    with sqlite3.connect(path) as connection:  # what version 2 wrote: no batch tables, no tokens
        connection.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '2');
            CREATE TABLE pairwise_labels (
                fingerprint TEXT NOT NULL, content_key TEXT NOT NULL, probability REAL, probability_first REAL,
                probability_second REAL, reason TEXT, rationale_first TEXT, rationale_second TEXT,
                created_at REAL NOT NULL, judged_reversed INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (fingerprint, content_key)
            ) WITHOUT ROWID;
            CREATE TABLE score_labels (
                fingerprint TEXT NOT NULL, content_key TEXT NOT NULL, score REAL, expected_score REAL, reason TEXT,
                rationale TEXT, created_at REAL NOT NULL, PRIMARY KEY (fingerprint, content_key)
            ) WITHOUT ROWID;
            """
        )
        row = ("fp", key, judged.probability, judged.probability_a_first, judged.probability_a_second, int(flipped))
        connection.execute("INSERT INTO pairwise_labels VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, 0, ?)", row)
    store = LabelStore(path)
    old = store.get_pairs("fp", ["p"], ["a"], ["b"])[0]
    assert old == judged and old.prompt_tokens is None  # the cost of a label stored before version 3 is unknown
    store.put_pairs("fp", ["q"], ["a"], ["b"], [replace(judged, prompt_tokens=90, completion_tokens=2)])
    new = store.get_pairs("fp", ["q"], ["a"], ["b"])[0]
    assert (new.prompt_tokens, new.completion_tokens) == (90, 2)
    assert store.usage("fp") == {"prompt_tokens": 90, "completion_tokens": 2, "labels": 1}
    store.record_batch_job("job", "fp", "file", "requests.jsonl", [("fp:key:s", "key")])
    assert store.batch_lines(["fp:key:s"]) == {"fp:key:s": ("job", None, None, "fp")}
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)


def _damage_header(path):
    with open(path, "r+b") as f:
        f.write(b"\xde\xad" * 50)


def _damage_middle(path):
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2 // 4096 * 4096)  # a whole page in the middle of the file
        f.write(bytes(range(256)) * 32)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _stored_pairs(path, count=2000):
    prompts, a, b = (
        [f"prompt {i}" for i in range(count)],
        [f"a{i}" * 5 for i in range(count)],
        [f"b{i}" for i in range(count)],
    )
    store = LabelStore(path)
    store.put_pairs("fp", prompts, a, b, [PairwiseJudgement.from_orders(0.25, 0.5, "why " * 20)] * count)
    store.close()  # the last connection checkpoints the write-ahead log into the file
    return prompts, a, b


@pytest.mark.parametrize("damage", [_damage_header, _damage_middle, _truncate])
def test_a_damaged_store_raises_an_error_naming_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "labels.sqlite"
    prompts, a, b = _stored_pairs(path)
    assert not (tmp_path / "labels.sqlite-wal").exists()
    damage(path)
    with pytest.raises(LabelStoreError) as error:
        LabelStore(path).get_pairs("fp", prompts, a, b)
    message = str(error.value)
    assert str(path) in message
    what = "not a SQLite database" if damage is _damage_header else "pages are damaged"
    assert what in message and "move it aside" in message and ".recover" in message and ".dump" in message


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 command-line shell")
def test_the_recovery_recipe_of_the_error_keeps_the_readable_labels(tmp_path):
    path = tmp_path / "labels.sqlite"
    prompts, a, b = _stored_pairs(path)
    _damage_middle(path)
    with pytest.raises(LabelStoreError) as error:
        LabelStore(path).get_pairs("fp", prompts, a, b)
    recipe = re.search(r"or else `(.+)`\.$", str(error.value)).group(1)
    path.rename(f"{path}.damaged")  # the error's first step
    subprocess.run(recipe, shell=True, check=True, cwd=tmp_path, capture_output=True)
    recovered = LabelStore(path).get_pairs("fp", prompts, a, b)
    kept = [j for j in recovered if j is not None]
    assert 0 < len(kept) < len(prompts)
    assert set(kept) == {PairwiseJudgement.from_orders(0.25, 0.5, "why " * 20)}


def test_a_stored_label_out_of_range_is_reported_and_none_is_written(tmp_path):
    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    store.put_pairs("fp", ["p", "q"], ["a", "a"], ["b", "b"], [PairwiseJudgement(0.25)] * 2)
    key, _ = pair_key("q", "a", "b")
    with sqlite3.connect(path) as connection:  # what a few overwritten bytes inside a number can do
        connection.execute("UPDATE pairwise_labels SET probability = 7.5 WHERE content_key = ?", (key,))
    with pytest.raises(LabelStoreError, match=rf"{re.escape(str(path))} holds a damaged label.*DELETE FROM"):
        store.get_pairs("fp", ["p", "q"], ["a", "a"], ["b", "b"])
    with pytest.raises(ValueError, match=r"returned 1.5 in a pair judgement, outside \[0, 1\]; it is not stored"):
        store.put_pairs("fp", ["r"], ["a"], ["b"], [PairwiseJudgement.from_orders(1.5, 0.5)])
    with pytest.raises(ValueError, match=r"returned nan in a score judgement"):
        store.put_scores("fp", ["r"], ["a"], [ScoreJudgement(float("nan"))])
    assert store.count("fp") == 2


@pytest.mark.parametrize("state", ["uploaded", "submitted"])
def test_a_line_of_an_unfinished_batch_api_job_never_moves_to_another_job(tmp_path, state):
    store = LabelStore(tmp_path / "labels.sqlite")
    store.record_batch_job("jobA", "fp", "openai", "https://api.example/v1", [("fp:k1:00", "k1"), ("fp:k2:00", "k2")])
    store.update_batch_job("jobA", state=state, batch_id="batch_1" if state == "submitted" else None)
    store.put_batch_results([("fp:k2:00", None, "HTTP 500: busy", 0, 0)])  # a result line stored before a crash
    # A request file (or another batch) for the same lines: refused, naming the batch; nothing recorded.
    for kind, target in (("file", "requests.jsonl"), ("openai", "https://api.example/v1")):
        lines = [("fp:k0:00", "k0"), ("fp:k1:00", "k1"), ("fp:k2:00", "k2")]
        with pytest.raises(RunningBatchError) as error:
            store.record_batch_job("jobB", "fp", kind, target, lines)
        named = "batch batch_1" if state == "submitted" else "the batch of job jobA"
        assert named in str(error.value) and "2 request line(s)" in str(error.value)
        assert str(store.path) in str(error.value) and "cancel_batches" in str(error.value)
        assert store.lines_of_job("jobA") == {"fp:k1:00": (None, None), "fp:k2:00": (None, "HTTP 500: busy")}
        assert store.lines_of_job("jobB") == {} and [job["job_key"] for job in store.batch_jobs()] == ["jobA"]
    assert set(store.running_batch_lines(["fp:k0:00", "fp:k1:00", "fp:k2:00"])) == {"fp:k1:00", "fp:k2:00"}
    # Once the batch is finished (its results read), its unanswered lines may be sent again; answered ones stay.
    store.put_batch_results([("fp:k1:00", '{"content": "1"}', None, 1, 1)])
    store.update_batch_job("jobA", state="finished", status="completed")
    assert store.running_batch_lines(["fp:k1:00", "fp:k2:00"]) == {}
    store.record_batch_job("jobB", "fp", "file", "requests.jsonl", [("fp:k1:00", "k1"), ("fp:k2:00", "k2")])
    assert store.lines_of_job("jobA") == {"fp:k1:00": ('{"content": "1"}', None)}
    assert store.lines_of_job("jobB") == {"fp:k2:00": (None, None)}
