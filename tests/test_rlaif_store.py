import multiprocessing
import sqlite3

import pytest
from rlaif_helpers import LengthJudge, LengthScorer

from trl_won.rlaif import LabelStore, PairwiseJudgement, ScoreJudgement, judge_pairs_cached, score_cached
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
    # Stored in one orientation per pair: reading the other one swaps (1 - p), exact to rounding.
    assert [j.probability for j in from_store] == pytest.approx([j.probability for j in judgements], abs=1e-15)
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
