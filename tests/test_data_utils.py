import math

import pytest

from trl_won.data_utils import (
    DatasetFormatError,
    as_completion,
    check_finite,
    completion_text,
    prompt_for_generation,
    require_columns,
    tokenize_for_reward_model,
    tokenize_prompt_completion,
)


def test_standard_prompt_completion_ends_with_eos(tokenizer):
    prompt, completion = "What is the capital of France?", " Paris."
    prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, prompt, completion)
    assert prompt_ids + completion_ids == tokenizer(prompt + completion)["input_ids"] + [tokenizer.eos_token_id]
    assert prompt_ids == tokenizer(prompt)["input_ids"]
    assert completion_ids[-1] == tokenizer.eos_token_id
    # An explicit EOS is not doubled.
    _, again = tokenize_prompt_completion(tokenizer, prompt, completion + tokenizer.eos_token)
    assert again == completion_ids


def test_boundary_merge_goes_to_the_completion(tokenizer):
    # "Par" + "is" merges into one token when tokenized together: the completion starts where the two tokenizations
    # diverge, so the full sequence is exactly the tokenization of the concatenation.
    prompt, completion = "The capital is Par", "is."
    prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, prompt, completion)
    assert prompt_ids + completion_ids[:-1] == tokenizer(prompt + completion)["input_ids"]


def test_conversational_prompt_completion_uses_the_chat_template(tokenizer):
    prompt = [{"role": "user", "content": "Hi"}]
    completion = [{"role": "assistant", "content": "Hello there"}]
    prompt_ids, completion_ids = tokenize_prompt_completion(tokenizer, prompt, completion)
    rendered = tokenizer.decode(prompt_ids + completion_ids)
    assert rendered == "<|user|>Hi\n<|assistant|>Hello there<|eos|>"
    assert tokenizer.decode(prompt_ids) == "<|user|>Hi\n<|assistant|>"
    with pytest.raises(TypeError, match="conversational completion"):
        tokenize_prompt_completion(tokenizer, prompt, "Hello")


def test_reward_model_tokenization_matches_reward_trainer(tokenizer):
    # RewardTrainer appends EOS to standard text and applies the chat template to conversational text.
    ids = tokenize_for_reward_model(tokenizer, "Q?", " A.")
    assert ids == tokenizer("Q? A." + tokenizer.eos_token)["input_ids"]
    messages = [{"role": "user", "content": "Q?"}], [{"role": "assistant", "content": "A."}]
    ids = tokenize_for_reward_model(tokenizer, *messages)
    assert tokenizer.decode(ids) == "<|user|>Q?\n<|assistant|>A.<|eos|>"


def test_prompt_rendering_and_completion_helpers(tokenizer):
    assert prompt_for_generation(tokenizer, "Plain") == "Plain"
    assert prompt_for_generation(tokenizer, [{"role": "user", "content": "Q"}]) == "<|user|>Q\n<|assistant|>"
    assert as_completion("p", "x") == "x"
    assert as_completion([{"role": "user", "content": "p"}], "x") == [{"role": "assistant", "content": "x"}]
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"


def test_errors_name_row_and_column():
    with pytest.raises(DatasetFormatError, match=r"row 3, column 'rewards\[1\]'.*nan"):
        check_finite(math.nan, row=3, column="rewards", index=1)
    with pytest.raises(DatasetFormatError, match=r"row 0, column 'rewards'.*'high'"):
        check_finite("high", row=0, column="rewards")
    assert check_finite(2, row=0, column="rewards") == 2.0
    with pytest.raises(DatasetFormatError, match=r"no column 'completions'.*Add it"):
        require_columns(["prompt"], ["prompt", "completions"], "train", "Add it.")
