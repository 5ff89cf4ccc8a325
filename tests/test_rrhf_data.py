import math

import pytest

from trl_won.data_utils import DatasetFormatError, tokenize_prompt_completion
from trl_won.rrhf.data import DataCollatorForRRHF, select_completions, tokenize_row, validate_row


def row(**overrides):
    example = {"prompt": "Q?", "completions": [" A.", " B."], "rewards": [1.0, 0.0]}
    example.update(overrides)
    return example


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"completions": [" A."], "rewards": [1.0]}, r"row 4, column 'completions': has 1 completion\(s\)"),
        ({"rewards": [1.0]}, r"row 4, column 'rewards': has 1 rewards for 2 completions"),
        ({"rewards": [1.0, math.nan]}, r"row 4, column 'rewards\[1\]': the reward is nan"),
        ({"rewards": [math.inf, 0.0]}, r"row 4, column 'rewards\[0\]': the reward is inf"),
        ({"rewards": [1.0, None]}, r"row 4, column 'rewards\[1\]': expected a number, got None"),
        ({"completions": [" A.", "  "]}, r"row 4, column 'completions\[1\]': is empty"),
        ({"completions": " A."}, r"row 4, column 'completions': expected a list"),
        ({"prompt": 3}, r"row 4, column 'prompt': expected a string or a list of messages"),
        (
            {"completions": [[{"role": "assistant", "content": "A"}], " B."]},
            r"row 4, column 'completions\[0\]': the prompt is a string so each completion must be a string",
        ),
    ],
)
def test_bad_rows_name_row_and_column(overrides, pattern):
    with pytest.raises(DatasetFormatError, match=pattern):
        validate_row(row(**overrides), 4)


def test_conversational_row_must_have_message_completions():
    prompt = [{"role": "user", "content": "Q?"}]
    validate_row(row(prompt=prompt, completions=[[{"role": "assistant", "content": "A"}]] * 2), 0)
    with pytest.raises(DatasetFormatError, match=r"completions\[0\]'.*must be a list of assistant messages"):
        validate_row(row(prompt=prompt), 0)
    empty = [[{"role": "assistant", "content": ""}], [{"role": "assistant", "content": "B"}]]
    with pytest.raises(DatasetFormatError, match=r"completions\[0\]': is empty"):
        validate_row(row(prompt=prompt, completions=empty), 0)


def test_select_completions_keeps_best_worst_and_spread_ranks():
    assert select_completions([3.0, 1.0, 2.0], None) == [0, 1, 2]
    assert select_completions([3.0, 1.0, 2.0], 3) == [0, 1, 2]
    rewards = [0.5, 9.0, 3.0, 7.0, 1.0, 8.0, 2.0, 6.0, 4.0, 5.0]  # ranks: 9,8,7,6,5,4,3,2,1,0.5
    # 4 of 10: ranks 0, 3, 6, 9 -> rewards 9.0, 6.0, 3.0, 0.5 -> indices 1, 7, 2, 0, returned in original order.
    assert select_completions(rewards, 4) == [0, 1, 2, 7]
    assert select_completions([1.0, 1.0, 1.0], 2) == [0, 2]


def test_tokenize_row_shares_the_prompt_and_keeps_eos(tokenizer):
    example = row(completions=[" Paris.", " It is Paris, the capital."], rewards=[0.0, 1.0])
    out = tokenize_row(example, 0, tokenizer, max_length=None, max_completions=None)
    assert out["prompt_ids"] == tokenizer("Q?")["input_ids"]
    for completion, ids in zip(example["completions"], out["completion_ids"]):
        assert out["prompt_ids"] + ids == sum(tokenize_prompt_completion(tokenizer, "Q?", completion), [])
        assert ids[-1] == tokenizer.eos_token_id
    assert out["rewards"] == [0.0, 1.0]


def test_tokenize_row_truncates_completions_and_rejects_prompts_without_room(tokenizer):
    example = row(completions=[" Paris is the capital of France.", " No."], rewards=[1.0, 0.0])
    prompt_len = len(tokenizer("Q?")["input_ids"])
    out = tokenize_row(example, 0, tokenizer, max_length=prompt_len + 3, max_completions=None)
    assert [len(ids) for ids in out["completion_ids"]] == [3, 3]  # " No." + EOS is 3 tokens
    with pytest.raises(DatasetFormatError, match=r"row 7, column 'prompt': is \d+ tokens long.*max_length=2"):
        tokenize_row(example, 7, tokenizer, max_length=2, max_completions=None)


def test_tokenize_row_applies_max_completions(tokenizer):
    example = row(completions=[" a", " b", " c", " d"], rewards=[0.0, 3.0, 1.0, 2.0])
    out = tokenize_row(example, 0, tokenizer, max_length=None, max_completions=2)
    assert out["rewards"] == [0.0, 3.0]
    assert len(out["completion_ids"]) == 2


def test_collator_flattens_ragged_groups():
    examples = [
        {"prompt_ids": [5, 6], "completion_ids": [[7, 2], [8]], "rewards": [1.0, 0.0]},
        {"prompt_ids": [9], "completion_ids": [[3, 3, 2], [4, 2], [5]], "rewards": [0.5, 2.0, -1.0]},
    ]
    batch = DataCollatorForRRHF(pad_token_id=0)(examples)
    assert list(batch)[0] == "num_completions"
    assert batch["num_completions"].tolist() == [2, 3]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2], [5, 6, 8, 0], [9, 3, 3, 2], [9, 4, 2, 0], [9, 5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 0],
        [0, 1, 1, 1],
        [0, 1, 1, 0],
        [0, 1, 0, 0],
    ]
    assert batch["rewards"].tolist() == [1.0, 0.0, 0.5, 2.0, -1.0]
    assert batch["group_ids"].tolist() == [0, 0, 1, 1, 1]
    padded = DataCollatorForRRHF(pad_token_id=0, pad_to_multiple_of=8)(examples)
    assert padded["input_ids"].shape == (5, 8)
