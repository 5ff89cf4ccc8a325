"""Bad input to the public entry points: a clear error naming the row, the column and the fix, never a wrong result.

Each case here was silently wrong or obscure (a bare `StopIteration`, "'NoneType' object is not iterable", an index
into an internal list) before it was fixed.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset
from rlaif_helpers import LengthJudge
from transformers import AutoTokenizer

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError, as_real
from trl_won.rewards import call_reward_func
from trl_won.rlaif import (
    LabelStore,
    LabelStoreError,
    RLAIFRewardConfig,
    RLAIFRewardTrainer,
    label_preferences,
    labeler_alignment,
)
from trl_won.rrhf import RRHFConfig, RRHFTrainer, add_rewards
from trl_won.rrhf.data import tokenize_row
from trl_won.tiny import toy_preference_dataset, toy_ranking_dataset
from trl_won.west_of_n import mix_preference_datasets, mix_preferences_and_prompts


ROOT = Path(__file__).resolve().parents[1]
ASSISTANT = {"role": "assistant", "content": "an answer"}


def rrhf(tiny_paths, tmp_path, dataset, **overrides):
    settings = {"per_device_train_batch_size": 2, "max_steps": 1, **overrides}
    return RRHFTrainer(
        tiny_paths.policy, args=RRHFConfig(**cpu_training_kwargs(tmp_path / "out", **settings)), train_dataset=dataset
    )


# ------------------------------------------------------------------------------------------------------------ RRHF


def test_rrhf_empty_prompt_with_a_tokenizer_without_bos(tiny_paths, tokenizer, tmp_path):
    assert tokenizer("")["input_ids"] == []  # the tiny tokenizer adds no BOS: nothing would predict the first token
    rows = {"prompt": ["Q", ""], "completions": [["a", "b"], [" yes", " no"]], "rewards": [[1, 0], [1, 0]]}
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'prompt': tokenizes to no token.*BOS"):
        rrhf(tiny_paths, tmp_path, Dataset.from_dict(rows))


@pytest.mark.parametrize("iterable", [False, True])
def test_rrhf_empty_dataset(tiny_paths, tmp_path, iterable):
    empty = toy_ranking_dataset().select([])
    if iterable:
        empty = IterableDataset.from_generator(lambda: iter([]), features=empty.features)
    with pytest.raises(DatasetFormatError, match="The train dataset has no rows"):
        rrhf(tiny_paths, tmp_path, empty)


@pytest.mark.parametrize(
    "completions, pattern",
    [
        (["a", None], r"row 0, column 'completions\[1\]': the prompt is a string so each completion must be a string"),
        (["a", 3], r"row 0, column 'completions\[1\]'"),
        ([[{"role": "assistant", "content": "x"}], "b"], r"row 0, column 'completions\[0\]'"),
    ],
)
def test_rrhf_completion_of_the_wrong_type(tiny_paths, tmp_path, completions, pattern):
    # Arrow cannot hold these mixed lists; a generator's IterableDataset passes them through, checked as they stream.
    def rows():
        yield {"prompt": "Q", "completions": ["a", "b"], "rewards": [1.0, 0.0]}
        yield {"prompt": "Q", "completions": completions, "rewards": [1.0, 0.0]}

    trainer = rrhf(tiny_paths, tmp_path, IterableDataset.from_generator(rows))
    with pytest.raises(DatasetFormatError, match=pattern.replace("row 0", "row 1")):
        trainer.train()


def test_rrhf_none_among_the_completions(tiny_paths, tmp_path):
    rows = {"prompt": ["Q", "R"], "completions": [["a", "b"], ["c", None]], "rewards": [[1, 0], [1, 0]]}
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'completions\[1\]'.*must be a string, got None"):
        rrhf(tiny_paths, tmp_path, Dataset.from_dict(rows))


def test_rrhf_messages_without_role_or_content(tiny_paths, tmp_path):
    user, assistant = {"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}
    rows = [
        (
            {"prompt": [user], "completions": [[assistant], [{"content": "b"}]]},
            r"row 0, column 'completions\[1\]\[0\]'",
        ),
        ({"prompt": [user, {"role": "user"}], "completions": [[assistant]] * 2}, r"column 'prompt\[1\]'.*'content'"),
        ({"prompt": ["Q"], "completions": [[assistant]] * 2}, r"column 'prompt\[0\]': expected a message"),
    ]
    for row, pattern in rows:
        dataset = Dataset.from_list([{**row, "rewards": [1.0, 0.0]}])
        with pytest.raises(DatasetFormatError, match=pattern):
            rrhf(tiny_paths, tmp_path, dataset)


@pytest.mark.parametrize(
    "row, pattern",
    [
        ({"prompt_ids": [], "completion_ids": [[5], [6]], "rewards": [1.0, 0.0]}, r"row 0, column 'prompt_ids'"),
        ({"prompt_ids": [4], "completion_ids": [[5], []], "rewards": [1.0, 0.0]}, r"column 'completion_ids\[1\]'"),
        (
            {"prompt_ids": [4], "completion_ids": [[5]], "rewards": [1.0]},
            r"column 'completion_ids': expected at least",
        ),
        ({"prompt_ids": [4], "completion_ids": [[5], [6]], "rewards": [1.0]}, r"column 'rewards': expected 2"),
        ({"prompt_ids": [4], "completion_ids": [[5], [6]], "rewards": [1.0, math.inf]}, r"column 'rewards\[1\]'"),
    ],
)
def test_rrhf_bad_tokenized_rows(tiny_paths, tmp_path, row, pattern):
    with pytest.raises(DatasetFormatError, match=pattern):
        rrhf(tiny_paths, tmp_path, Dataset.from_list([row]))


# ---------------------------------------------------------------------------------------------------- rewards


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), np.int64(2), np.array(0.5), torch.tensor(0.75)])
def test_any_real_number_is_a_reward(value):
    assert call_reward_func(lambda prompts, completions: [value], ["p"], ["c"]) == [float(value)]
    assert as_real(value) == float(value)


@pytest.mark.parametrize(
    "value",
    [None, True, np.bool_(True), "1.0", math.nan, -math.inf, 2**2000, [1.0], np.array([1.0])],
    ids=lambda v: repr(v)[:20],
)
def test_a_reward_that_is_not_a_finite_real_number(value):
    with pytest.raises(ValueError, match=r"'bad' returned .* for completion 0.*finite real number"):

        def bad(prompts, completions):
            return [value]

        call_reward_func(bad, ["p"], ["c"])


def test_numpy_rewards_score_an_rrhf_dataset(tmp_path):
    dataset = toy_ranking_dataset(with_rewards=False)

    def numpy_length(prompts, completions):
        return [np.float32(len(c)) for c in completions]

    scored = add_rewards(dataset, [numpy_length])
    assert scored["rewards"] == [[float(len(c)) for c in completions] for completions in dataset["completions"]]


# ---------------------------------------------------------------------------------------------------- labeling


def test_label_preferences_names_the_dataset_row_not_the_pair():
    rows = [
        {"prompt": "p", "completions": ["a", "b", "c"]},  # 3 pairs: a wrong index would say "pair 3"
        {"prompt": "q", "completions": ["a", 5]},
    ]
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'completions\[1\]'"):
        label_preferences(rows, LengthJudge(), show_progress=False)


def test_label_preferences_rejects_mixed_formats_and_malformed_messages():
    user = [{"role": "user", "content": "Q"}]
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'completion_a': the prompt is a list of messages"):
        label_preferences([{"prompt": user, "completion_a": "a", "completion_b": "b"}], LengthJudge())
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'completion_b': the prompt is a string"):
        label_preferences([{"prompt": "Q", "completion_a": "a", "completion_b": user}], LengthJudge())
    no_role = [{"content": "an answer"}]
    with pytest.raises(
        DatasetFormatError, match=r"row 0, column 'completion_b\[0\]': the message has no string 'role'"
    ):
        label_preferences([{"prompt": user, "completion_a": [ASSISTANT], "completion_b": no_role}], LengthJudge())
    with pytest.raises(DatasetFormatError, match="has no rows"):
        label_preferences([], LengthJudge())


def test_label_preferences_from_an_iterable_dataset_without_features():
    rows = [{"prompt": f"p{i}", "completion_a": "a" * i, "completion_b": "bb", "id": i} for i in range(4)]
    stream = Dataset.from_list(rows).to_iterable_dataset().map(lambda row: row)  # a map drops the known features
    assert stream.column_names is None
    expected = label_preferences(rows, LengthJudge(), show_progress=False)
    assert label_preferences(stream, LengthJudge(), show_progress=False).to_dict() == expected.to_dict()


# ---------------------------------------------------------------------------------------------------- reward trainer


def test_rlaif_soft_label_errors_name_the_row_for_an_iterable_dataset(tiny_paths, tmp_path):
    dataset = toy_preference_dataset().add_column("soft_label", [0.9, 0.6, 1.5, 1.0, 0.5, 0.8, 0.6, 0.7])
    args = RLAIFRewardConfig(**cpu_training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=8))
    with pytest.raises(DatasetFormatError, match=r"row 2, column 'soft_label': the soft label is 1.5"):
        RLAIFRewardTrainer(tiny_paths.reward_model, args=args, train_dataset=dataset)
    trainer = RLAIFRewardTrainer(tiny_paths.reward_model, args=args, train_dataset=dataset.to_iterable_dataset())
    with pytest.raises(DatasetFormatError, match=r"row 2, column 'soft_label': the soft label is 1.5"):
        trainer.train()


# ---------------------------------------------------------------------------------------------- found by the sweep


def length_reward(prompts, completions):
    return [float(len(c)) for c in completions]


def test_add_rewards_inputs():
    rows = [{"prompt": "Q", "completions": ["a", "bb"]}]
    with pytest.raises(TypeError, match="`dataset` must be a `datasets.Dataset`, got list"):
        add_rewards(rows, [length_reward])
    with pytest.raises(DatasetFormatError, match="no column 'completions'"):
        add_rewards(Dataset.from_list([{"prompt": "Q"}]), [length_reward])
    with pytest.raises(DatasetFormatError, match="already has a 'rewards' column"):
        add_rewards(Dataset.from_list([{**rows[0], "rewards": [1, 0]}]), [length_reward])
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'completions': has 1 completion"):
        add_rewards(Dataset.from_list([*rows, {"prompt": "R", "completions": ["a"]}]), [length_reward])
    # one function without a list around it
    assert add_rewards(Dataset.from_list(rows), length_reward)["rewards"] == [[1.0, 2.0]]


def test_rrhf_eval_dataset_of_the_wrong_type(tiny_paths, tmp_path):
    args = RRHFConfig(**cpu_training_kwargs(tmp_path, max_steps=1))
    with pytest.raises(TypeError, match="`eval_dataset` must be a `Dataset`"):
        RRHFTrainer(tiny_paths.policy, args=args, train_dataset=toy_ranking_dataset(), eval_dataset=[{"prompt": "Q"}])


def test_label_preferences_arguments(tmp_path):
    row = {"prompt": "Q", "completion_a": "a", "completion_b": "bb"}
    with pytest.raises(TypeError, match="`dataset` must be a `Dataset`, an `IterableDataset` or a list of dicts"):
        label_preferences({"prompt": ["Q"], "completion_a": ["a"], "completion_b": ["b"]}, LengthJudge())
    with pytest.raises(TypeError, match="`judge` must be a `PairwiseJudge`"):
        label_preferences([row], lambda prompts, a, b: [0.5] * len(prompts))
    with pytest.raises(TypeError, match=r"`store` must be a `LabelStore` \(`LabelStore\(path\)`\), got str"):
        label_preferences([row], LengthJudge(), store=str(tmp_path / "labels.sqlite"))
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'completion_b': is missing from this row"):
        label_preferences([row, {"prompt": "R", "completion_a": "a"}], LengthJudge())
    with pytest.raises(DatasetFormatError, match=r"column\(s\) \['soft_label'\], which label_preferences writes"):
        label_preferences([{**row, "soft_label": 0.3}], LengthJudge())


def test_labeler_alignment_refuses_a_conversational_prompt_with_string_answers():
    # TRL's `maybe_extract_prompt` would silently replace the prompt by the (empty) common start of the answers.
    rows = [{"prompt": [{"role": "user", "content": "Q"}], "chosen": "a", "rejected": "b"}]
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'chosen': the prompt is a list of messages"):
        labeler_alignment(rows, LengthJudge(), show_progress=False)


def test_judge_arguments():
    judge = LengthJudge()
    with pytest.raises(TypeError, match="`prompts` must be a list with one entry per item, got str"):
        judge("Qx", "ab", "cd")  # would have judged the characters as two pairs
    with pytest.raises(TypeError, match=r"`prompts\[0\]` must be a string or a non-empty list of chat messages"):
        judge([[{"content": "Q"}]], ["a"], ["b"])
    assert judge.pairs_seen == []


def test_a_label_store_path_that_is_a_folder(tmp_path):
    with pytest.raises(LabelStoreError, match=f"The label store {tmp_path} cannot be opened"):
        LabelStore(tmp_path)


def test_rlaif_reward_trainer_datasets(tiny_paths, tmp_path):
    def build(dataset, **overrides):
        args = RLAIFRewardConfig(**cpu_training_kwargs(tmp_path, max_steps=1, **overrides))
        return RLAIFRewardTrainer(tiny_paths.reward_model, args=args, train_dataset=dataset)

    soft = toy_preference_dataset().add_column("soft_label", [0.5] * 8)
    with pytest.raises(DatasetFormatError, match="The train dataset has no rows"):
        build(soft.select([]))
    with pytest.raises(DatasetFormatError, match="no column 'rejected'"):
        build(soft.remove_columns("rejected"))
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b", "soft_label": 0.7}] * 2
    with pytest.raises(DatasetFormatError, match=r"row 1, column 'chosen': expected a string or messages, got None"):
        build(Dataset.from_list([rows[0], {**rows[1], "chosen": None}]))
    with pytest.raises(DatasetFormatError, match="no column 'p_chosen' \\(the configured `soft_label_column`\\)"):
        build(soft, soft_label_column="p_chosen")


def test_mixing_inputs():
    pairs = toy_preference_dataset()
    with pytest.raises(TypeError, match="`preference_dataset` must be a `datasets.Dataset`, got list"):
        mix_preference_datasets(pairs.to_list(), pairs)
    with pytest.raises(DatasetFormatError, match="The preference dataset has no rows"):
        mix_preference_datasets(pairs.select([]), pairs)
    with pytest.raises(TypeError, match="`ratio` must be a finite number"):
        mix_preference_datasets(pairs, pairs, ratio=math.nan)
    with pytest.raises(TypeError, match="`prompt_dataset` must be a `datasets.Dataset`, got list"):
        mix_preferences_and_prompts(pairs, [{"prompt": "Q"}])


SHARED_TOKENIZERS = next(
    (p / "tokenizers" for p in (ROOT.parent / "shared", ROOT.parents[1] / "shared") if (p / "tokenizers").is_dir()),
    None,
)


@pytest.mark.skipif(SHARED_TOKENIZERS is None, reason="needs ../shared/tokenizers (real tokenizers)")
@pytest.mark.parametrize("name, adds_bos", [("gpt-2", False), ("qwen2", False), ("llama-spm", True)])
def test_empty_prompt_with_real_tokenizers(name, adds_bos):
    tokenizer = AutoTokenizer.from_pretrained(SHARED_TOKENIZERS / name)
    row = {"prompt": "", "completions": [" Paris.", " Lyon."], "rewards": [1.0, 0.0]}
    if not adds_bos:
        with pytest.raises(DatasetFormatError, match=r"row 7, column 'prompt': tokenizes to no token"):
            tokenize_row(row, 7, tokenizer, max_length=None, max_completions=None)
        return
    tokenized = tokenize_row(row, 7, tokenizer, max_length=None, max_completions=None)
    assert tokenized["prompt_ids"] == [tokenizer.bos_token_id]  # every completion token has one before it
    full = tokenizer(" Paris.")["input_ids"] + [tokenizer.eos_token_id]
    assert tokenized["prompt_ids"] + tokenized["completion_ids"][0] == full
