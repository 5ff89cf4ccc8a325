"""Offline West-of-N generation on the tiny fixtures: selection, formats, resume, judges, filters, errors."""

import json
import math

import pytest
import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from trl_won.data_utils import DatasetFormatError, completion_text
from trl_won.rewards import RewardModelScorer
from trl_won.tiny import toy_prompt_dataset
from trl_won.utils import derived_seed
from trl_won.west_of_n import ResumeMismatchError, WestOfNConfig, WestOfNGenerator, read_west_of_n_pairs
from trl_won.west_of_n.sampling import completion_mean_logprobs
from trl_won.west_of_n.storage import read_results, shard_path


def small(tmp_path, name="pairs", **overrides):
    settings = dict(
        n=4, max_new_tokens=6, generation_batch_size=8, scoring_batch_size=5, pairs_dir=str(tmp_path / name)
    )
    settings.update(overrides)
    return WestOfNConfig(show_progress=False, **settings)


def text_length(prompts, completions):
    """A reward function whose order is known: longer completions score higher."""
    return [float(len(completion_text(c))) for c in completions]


def test_chosen_is_the_best_and_rejected_the_worst_candidate(tiny_paths, tokenizer, tmp_path):
    args = small(tmp_path, keep_candidates=True)
    generator = WestOfNGenerator(tiny_paths.policy, args, reward_model=tiny_paths.reward_model)
    pairs = generator.generate(toy_prompt_dataset())
    assert len(pairs) == 8 and generator.summary["pairs_kept"] == 8
    rescorer = RewardModelScorer(tiny_paths.reward_model, batch_size=1)
    for row in pairs:
        rewards, completions = row["rewards"], row["completions"]
        assert len(completions) == 4
        assert row["chosen_score"] == max(rewards) and row["rejected_score"] == min(rewards)
        assert row["chosen"] == completions[rewards.index(max(rewards))]
        assert row["rejected"] == completions[rewards.index(min(rewards))]
        assert row["confidence"] == pytest.approx(1 / (1 + math.exp(-(max(rewards) - min(rewards)))))
        # the stored rewards are the base model's scores of each candidate, scored one at a time
        assert rewards == pytest.approx(rescorer([row["prompt"]] * 4, completions), abs=1e-5)
    # the saved dataset and summary are the returned ones
    assert load_from_disk(str(tmp_path / "pairs" / "dataset")).to_dict() == pairs.to_dict()
    assert json.loads((tmp_path / "pairs" / "summary.json").read_text())["pairs_kept"] == 8


@pytest.mark.parametrize("repetition_penalty", [None, 1.3])
def test_logps_are_the_policy_mean_loglikelihood_of_the_sampled_tokens(
    tokenizer, policy, tmp_path, repetition_penalty
):
    # Without logit processors in the generation config the log-probs are recorded while sampling; with one (a
    # repetition penalty changes the logits generate sees) they come from a teacher-forced pass. Both are the model's.
    policy.generation_config.repetition_penalty = repetition_penalty
    generator = WestOfNGenerator(policy, small(tmp_path), reward_funcs=text_length, processing_class=tokenizer)
    assert generator.sampler.record_logprobs == (repetition_penalty is None)
    prompts = toy_prompt_dataset().select(range(2))
    pairs = generator.generate(prompts)
    result = read_results(tmp_path / "pairs")[0]
    # sampling is a function of the group's seed: sample again to get the token ids behind the saved texts
    samples = generator.sampler.sample(prompts["prompt"], 4, derived_seed(generator.args.sampling_seed, 0))[0]
    assert [s.text for s in samples] == result.completions
    prompt_ids = tokenizer(result.prompt)["input_ids"]
    for column, index in (("chosen_logp", result.chosen), ("rejected_logp", result.rejected)):
        ids = torch.tensor([prompt_ids + samples[index].token_ids])
        with torch.no_grad():
            logps = torch.log_softmax(policy(ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        per_token = logps[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :]
        assert pairs[0][column] == pytest.approx(per_token.mean().item(), abs=1e-4)


def test_completion_mean_logprobs_batched_equals_one_by_one(policy):
    prompts = [[5, 9, 30], [7], [11, 12, 13, 14, 15]]
    completions = [[40, 41], [50, 51, 52, 53], []]
    batched = completion_mean_logprobs(policy, prompts, completions, batch_size=2)
    for p, c, value in zip(prompts, completions, batched, strict=True):
        if not c:
            assert math.isnan(value)
            continue
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logps = torch.log_softmax(policy(ids).logits[0, :-1], dim=-1)
        expected = logps[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)].mean().item()
        assert value == pytest.approx(expected, abs=1e-5)


def test_conversational_prompts_give_conversational_pairs(tiny_paths, tmp_path):
    seen = []

    def shortest_first(prompts, completions):
        seen.extend(completions)
        return [-float(len(c[0]["content"])) for c in completions]

    generator = WestOfNGenerator(tiny_paths.policy, small(tmp_path), reward_funcs=shortest_first)
    pairs = generator.generate(toy_prompt_dataset(conversational=True).select(range(3)))
    assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in seen)
    formed = {r.index: r for r in read_results(tmp_path / "pairs").values() if r.is_pair}
    assert len(pairs) == len(formed)
    for row, result in zip(pairs, formed.values(), strict=True):
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"] == [{"role": "assistant", "content": min(result.completions, key=len)}]
        assert row["rejected"] == [{"role": "assistant", "content": max(result.completions, key=len)}]


class FlakyLength:
    """The length reward, but it crashes on its `crash_on`-th call (once)."""

    __name__ = "flaky_length"

    def __init__(self, crash_on=None):
        self.calls = 0
        self.crash_on = crash_on

    def __call__(self, prompts, completions):
        self.calls += 1
        if self.calls == self.crash_on:
            raise RuntimeError("simulated crash")
        return text_length(prompts, completions)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_paths, tmp_path):
    prompts = toy_prompt_dataset()  # 8 prompts, 2 per group (generation_batch_size 8 // n 4): 4 groups
    args = small(tmp_path, name="resumed", temperature=1.0)
    crashing = FlakyLength(crash_on=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        WestOfNGenerator(tiny_paths.policy, args, reward_funcs=crashing).generate(prompts)
    assert sorted(read_results(tmp_path / "resumed")) == [0, 1, 2, 3]  # the two groups done before the crash
    # As if those groups had been written by process 1 of a 2-process run, and process 0 had crashed mid-write:
    shard_path(tmp_path / "resumed", 0).rename(shard_path(tmp_path / "resumed", 1))
    shard_path(tmp_path / "resumed", 0).write_text('{"index": 4, "prompt": "half a li')

    resumed_func = FlakyLength()
    resumed = WestOfNGenerator(tiny_paths.policy, args, reward_funcs=resumed_func).generate(prompts)
    assert resumed_func.calls == 2  # only the two unfinished groups were generated and scored

    uninterrupted = WestOfNGenerator(
        tiny_paths.policy, small(tmp_path, name="uninterrupted", temperature=1.0), reward_funcs=FlakyLength()
    ).generate(prompts)
    assert resumed.to_dict() == uninterrupted.to_dict()
    assert len({row["chosen"] for row in resumed}) > 1

    # Everything is done: a rerun with a filter only re-filters, without sampling or scoring.
    refilter = FlakyLength()
    filtered_args = small(tmp_path, name="resumed", temperature=1.0, confidence_quantile=0.5)
    filtered = WestOfNGenerator(tiny_paths.policy, filtered_args, reward_funcs=refilter).generate(prompts)
    assert refilter.calls == 0
    threshold = sorted(uninterrupted["confidence"])
    assert len(filtered) == sum(c >= (threshold[3] + threshold[4]) / 2 for c in uninterrupted["confidence"])
    assert read_west_of_n_pairs(tmp_path / "resumed", filtered_args).to_dict() == filtered.to_dict()


def test_resume_refuses_a_directory_made_with_other_arguments(tiny_paths, tmp_path):
    prompts = toy_prompt_dataset().select(range(2))
    WestOfNGenerator(tiny_paths.policy, small(tmp_path, n=2), reward_funcs=text_length).generate(prompts)
    with pytest.raises(ResumeMismatchError, match=r"n: saved 2, now 3"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, n=3), reward_funcs=text_length).generate(prompts)
    other_prompts = toy_prompt_dataset().select(range(2, 4))
    with pytest.raises(ResumeMismatchError, match=r"prompts_sha256"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, n=2), reward_funcs=text_length).generate(other_prompts)


def test_resume_refuses_other_weights_under_the_same_model_path(tiny_paths, tmp_path):
    """Model objects are identified by a digest of their weights: a retrained model is not mistaken for the old one."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    prompts = toy_prompt_dataset().select(range(2))
    policy = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)
    WestOfNGenerator(policy, small(tmp_path, n=2), reward_model=reward_model).generate(prompts)
    with torch.no_grad():
        reward_model.score.weight.mul_(-1.0)
    with pytest.raises(ResumeMismatchError, match=r"preference_model"):
        WestOfNGenerator(policy, small(tmp_path, n=2), reward_model=reward_model).generate(prompts)
    WestOfNGenerator(policy, small(tmp_path, name="policy", n=2), reward_funcs=text_length).generate(prompts)
    retrained = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    with torch.no_grad():
        retrained.lm_head.weight.add_(0.01)
    with pytest.raises(ResumeMismatchError, match=r"policy") as error:
        WestOfNGenerator(retrained, small(tmp_path, name="policy", n=2), reward_funcs=text_length).generate(prompts)
    assert "preference_model" not in str(error.value)


def test_pairwise_judge_tournament_end_to_end(tiny_paths, tmp_path):
    calls = []

    def longer_is_better(prompts, completions_a, completions_b):
        calls.append(len(prompts))
        out = []
        for a, b in zip(completions_a, completions_b, strict=True):
            la, lb = len(completion_text(a)), len(completion_text(b))
            out.append(1.0 if la > lb else 0.0 if la < lb else 0.5)
        return out

    args = small(tmp_path, n=5, generation_batch_size=20, temperature=1.0)
    generator = WestOfNGenerator(tiny_paths.policy, args, judge=longer_is_better)
    pairs = generator.generate(toy_prompt_dataset(conversational=True))
    results = read_results(tmp_path / "pairs")
    for row in pairs:
        result = next(r for r in results.values() if r.prompt == row["prompt"])
        lengths = [len(t) for t in result.completions]
        assert len(row["chosen"][0]["content"]) == max(lengths)
        assert len(row["rejected"][0]["content"]) == min(lengths)
        assert row["confidence"] == 1.0 and row["chosen_score"] == 1.0 and row["rejected_score"] == 0.0
    # N = 5: at most floor(5/2) + 2 * (ceil(5/2) - 1) + 1 = 7 comparisons per prompt; 4 prompts per group, and
    # 1 + ceil(log2(3)) + 1 = 4 judge calls per group of prompts (the last one only if a confidence is missing)
    assert all(len(r.comparisons) <= 7 for r in results.values())
    assert generator.summary["judge_comparisons"] == sum(calls)
    assert len(calls) <= 8


def test_best_random_and_naive_strategies(tiny_paths, tmp_path):
    args = small(tmp_path, name="best_random", strategy="best_random", keep_candidates=True, temperature=1.0)
    pairs = WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(toy_prompt_dataset())
    for row in pairs:
        assert row["chosen_score"] == max(row["rewards"]) > row["rejected_score"]
    assert any(row["rejected_score"] > min(row["rewards"]) for row in pairs)  # not always the worst

    args = small(tmp_path, name="naive", strategy="naive", n=2, keep_candidates=True)
    pairs = WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(toy_prompt_dataset())
    assert all(len(row["completions"]) == 2 for row in pairs)
    assert all(row["chosen_score"] > row["rejected_score"] for row in pairs)


def test_lora_and_4bit_policies(tiny_paths, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    lora_policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_paths.policy), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    pairs = WestOfNGenerator(
        lora_policy, small(tmp_path, name="lora"), reward_funcs=text_length, processing_class=tokenizer
    ).generate(toy_prompt_dataset().select(range(2)))
    assert len(pairs) >= 1 and all(math.isfinite(v) for v in pairs["chosen_logp"])

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    generator = WestOfNGenerator(
        tiny_paths.policy, small(tmp_path, name="4bit"), reward_funcs=text_length, quantization_config=quantization
    )
    assert generator.sampler.model.is_loaded_in_4bit
    pairs = generator.generate(toy_prompt_dataset().select(range(2)))
    assert len(pairs) >= 1 and all(math.isfinite(v) for v in pairs["rejected_logp"])


def test_bad_input_errors(tiny_paths, reward_model, tmp_path):
    args = small(tmp_path)
    generator = WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length)
    with pytest.raises(DatasetFormatError, match=r"no column 'prompt'.*rename_column"):
        generator.generate(Dataset.from_dict({"question": ["Hi"]}))
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'prompt': is conversational but row 0 is standard"):
        generator.generate(["Hi", [{"role": "user", "content": "Hi"}]])

    with pytest.raises(ValueError, match=r"`n` must be >= 2"):
        WestOfNConfig(n=1)

    reward_model.config.pad_token_id = None
    with pytest.raises(ValueError, match=r"no `pad_token_id`"):
        WestOfNGenerator(tiny_paths.policy, args, reward_model=reward_model)

    def one_score(prompts, completions):
        return [1.0]

    def nan_score(prompts, completions):
        return [math.nan] * len(completions)

    prompts = toy_prompt_dataset().select(range(1))
    with pytest.raises(ValueError, match=r"'one_score' returned 1 scores for 4 completions"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="a"), reward_funcs=one_score).generate(prompts)
    with pytest.raises(ValueError, match=r"'nan_score' returned nan for completion 0"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="b"), reward_funcs=nan_score).generate(prompts)

    with pytest.raises(ValueError, match=r"exactly one base preference model.*Got \['reward_model', 'judge'\]"):
        WestOfNGenerator(tiny_paths.policy, args, reward_model=tiny_paths.reward_model, judge=lambda p, a, b: [])
    with pytest.raises(ValueError, match=r"Got none"):
        WestOfNGenerator(tiny_paths.policy, args)
    with pytest.raises(ValueError, match=r"pairwise judge gives no per-response reward"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, keep_candidates=True), judge=lambda p, a, b: [])


def test_bad_judge_answers(tiny_paths, tmp_path):
    prompts = toy_prompt_dataset().select(range(1))

    def out_of_range(prompts, a, b):
        return [1.5] * len(prompts)

    def too_few(prompts, a, b):
        return []

    with pytest.raises(ValueError, match=r"judge 'out_of_range' returned 1.5 for pair 0, outside \[0, 1\]"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="a"), judge=out_of_range).generate(prompts)
    with pytest.raises(ValueError, match=r"judge 'too_few' returned 0 results for 2 pairs"):
        WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="b"), judge=too_few).generate(prompts)


@pytest.mark.parametrize("conversational", [False, True])
def test_sharing_the_prompt_gives_the_pairs_of_the_unshared_run(tiny_paths, tmp_path, conversational):
    """`share_prompt_prefill` (policy prefill and reward-model scoring) changes results only by rounding."""
    prompts = toy_prompt_dataset(conversational=conversational)
    runs = {}
    for share in (False, True):
        args = small(
            tmp_path, name=f"share-{share}", temperature=1.0, keep_candidates=True, share_prompt_prefill=share
        )
        generator = WestOfNGenerator(tiny_paths.policy, args, reward_model=tiny_paths.reward_model)
        assert generator.sampler.share_prompt == share
        assert generator.preference.reward_funcs[0].share_prompt == share
        runs[share] = generator.generate(prompts)
    shared, unshared = runs[True], runs[False]
    for column in ("prompt", "chosen", "rejected", "completions"):
        assert shared[column] == unshared[column]
    for column in ("chosen_score", "rejected_score", "confidence", "chosen_logp", "rejected_logp"):
        assert shared[column] == pytest.approx(unshared[column], abs=1e-5)
    assert [r == pytest.approx(u, abs=1e-5) for r, u in zip(shared["rewards"], unshared["rewards"])] == [True] * 8
    assert len({c for row in shared["completions"] for c in map(str, row)}) > 8
