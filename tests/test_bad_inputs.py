"""Bad input to the public entry points: a clear error naming the row, the column and the fix, never a wrong result.

Each case here was silently wrong or obscure (a bare `StopIteration`, "'NoneType' object is not iterable", an index
into an internal list) before it was fixed.
"""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset
from rlaif_helpers import LengthJudge

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError, as_real
from trl_won.rewards import call_reward_func
from trl_won.rlaif import RLAIFRewardConfig, RLAIFRewardTrainer, label_preferences
from trl_won.rrhf import RRHFConfig, RRHFTrainer, add_rewards
from trl_won.tiny import toy_preference_dataset, toy_ranking_dataset


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
