from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trl_won.tiny import build_tiny_models, toy_preference_dataset, toy_prompt_dataset, toy_ranking_dataset


def test_tokenizer_round_trips_and_has_chat_template(tiny_paths):
    tokenizer = AutoTokenizer.from_pretrained(tiny_paths.tokenizer)
    text = "What is the capital of France? Paris."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|eos|>"
    for digit in ("1", "2"):
        assert len(tokenizer(digit, add_special_tokens=False)["input_ids"]) == 1
    prompt = [{"role": "user", "content": "Hi"}]
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    full = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": "Hello"}], tokenize=True, return_dict=True
    )
    assert full["input_ids"][: len(prompt_ids["input_ids"])] == prompt_ids["input_ids"]
    assert full["input_ids"][-1] == tokenizer.eos_token_id


def test_models_load_back_with_from_pretrained(tiny_paths):
    policy = AutoModelForCausalLM.from_pretrained(tiny_paths.policy)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_paths.reward_model)
    assert reward_model.config.num_labels == 1
    assert reward_model.config.pad_token_id == policy.config.pad_token_id is not None
    assert policy.config.vocab_size == len(AutoTokenizer.from_pretrained(tiny_paths.policy))


def test_build_is_reused(tiny_paths):
    before = (tiny_paths.policy + "/config.json", open(tiny_paths.policy + "/config.json").read())
    again = build_tiny_models(tiny_paths.policy.rsplit("/", 1)[0])
    assert again == tiny_paths
    assert open(before[0]).read() == before[1]


def test_toy_datasets_have_both_formats():
    ranking = toy_ranking_dataset()
    assert set(ranking.column_names) == {"prompt", "completions", "rewards"}
    assert {len(c) for c in ranking["completions"]} == {2, 3, 4}
    assert all(len(c) == len(r) for c, r in zip(ranking["completions"], ranking["rewards"]))
    conversational = toy_ranking_dataset(conversational=True, with_rewards=False)
    assert "rewards" not in conversational.column_names
    assert conversational[0]["prompt"][0]["role"] == "user"
    assert conversational[0]["completions"][0][0]["role"] == "assistant"
    preference = toy_preference_dataset(conversational=True)
    assert set(preference.column_names) == {"prompt", "chosen", "rejected"}
    assert toy_prompt_dataset().column_names == ["prompt"]
