"""West-of-N with damaged files and bad input: torn shards and manifests, blank and over-long prompts, wrong types and
columns at every public entry point. Each error names the argument, row or column (or file) and the fix."""

import json
import math

import pytest
from datasets import Dataset, DatasetDict, IterableDataset
from trl import RewardConfig

from tests.helpers import cpu_training_kwargs
from trl_won.data_utils import DatasetFormatError, completion_text
from trl_won.west_of_n import (
    DamagedPairsDirError,
    WestOfNConfig,
    WestOfNGenerator,
    iterative_west_of_n,
    mix_preference_datasets,
    mix_preferences_and_prompts,
    read_west_of_n_pairs,
)
from trl_won.west_of_n.storage import MANIFEST, read_results, shard_path


UNICODE_PROMPTS = [
    "Résumé of the café's crème brûlée?",
    "日本語で短い詩を書いてください。",
    "Explain 🙂 and 🚀 to a child.",
    "Ünïcödé everywhere: ñ, ø, ß, Ω, Ж.",
    "مرحبا، كيف حالك؟",
    "Plain ASCII prompt.",
]


def small(tmp_path, name="pairs", **overrides):
    settings = dict(n=3, max_new_tokens=5, generation_batch_size=6, pairs_dir=str(tmp_path / name))
    settings.update(overrides)
    return WestOfNConfig(show_progress=False, **settings)


def text_length(prompts, completions):
    return [float(len(completion_text(c))) for c in completions]


def _cut_inside_a_multibyte_character(path):
    """Truncate the shard's last line in the middle of its last multi-byte UTF-8 character; return the bytes cut."""
    data = path.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    last = max(i for i in range(last_line_start, len(data)) if data[i] >= 0xC0)  # lead byte of a multi-byte char
    path.write_bytes(data[: last + 1])  # keep the lead byte only: the character is cut in half
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes()[last_line_start:].decode("utf-8")


@pytest.mark.parametrize("conversational", [False, True])
def test_a_shard_torn_inside_a_multibyte_character_is_repaired(tiny_paths, tmp_path, conversational):
    prompts = [[{"role": "user", "content": p}] if conversational else p for p in UNICODE_PROMPTS]
    args = small(tmp_path, name="torn", temperature=1.0)
    WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(prompts)
    shard = shard_path(tmp_path / "torn", 0)
    assert "日本語" in shard.read_text(encoding="utf-8")  # written as UTF-8, not ASCII-escaped
    _cut_inside_a_multibyte_character(shard)
    # the torn last line (prompt 5; prompts 4 and 5 are the last group) is skipped, not an error
    assert sorted(read_results(tmp_path / "torn")) == [0, 1, 2, 3, 4]

    resumed = WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(prompts)
    assert shard.read_bytes().decode("utf-8").endswith("\n")  # repaired, then appended to
    uninterrupted = WestOfNGenerator(
        tiny_paths.policy, small(tmp_path, name="whole", temperature=1.0), reward_funcs=text_length
    ).generate(prompts)
    assert resumed.to_dict() == uninterrupted.to_dict()
    assert resumed["prompt"] == [p for p in prompts if p in resumed["prompt"]]


@pytest.mark.parametrize("content", ['{"format_version": 1, "n": ', "[1, 2]", b'{"policy": "caf\xc3'])
def test_a_damaged_manifest_names_the_file_and_what_to_do(tiny_paths, tmp_path, content):
    args = small(tmp_path)
    WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(UNICODE_PROMPTS[:2])
    manifest = tmp_path / "pairs" / MANIFEST
    manifest.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(
        DamagedPairsDirError, match=r"manifest\.json .*damaged.*Move the directory aside.*new `pairs_dir`"
    ) as error:
        WestOfNGenerator(tiny_paths.policy, args, reward_funcs=text_length).generate(UNICODE_PROMPTS[:2])
    assert str(manifest) in str(error.value)


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        (["Hi", "   \n\t"], r"row 1, column 'prompt': .*got a blank string"),
        (["Hi", ""], r"row 1, column 'prompt': .*got a blank string"),
        (["Hi", None], r"row 1, column 'prompt': .*got NoneType None"),
        (["Hi", 7], r"row 1, column 'prompt': .*got int 7"),
        (["Hi", b"bytes"], r"row 1, column 'prompt': .*got bytes"),
        (["Hi", ["a", "b"]], r"row 1, column 'prompt': .*got list \['a', 'b'\]"),
        ([[{"role": "user", "content": "  "}]], r"row 0, column 'prompt': every message is blank"),
        ([[{"role": "user", "content": None}]], r"row 0, column 'prompt\[0\]': expected a string 'content', got None"),
        ([[{"role": "user"}]], r"row 0, column 'prompt\[0\]': expected a string 'content'"),
        ([[{"role": "user", "content": "Hi"}, "oops"]], r"row 0, column 'prompt\[1\]': expected a \{'role'"),
        (
            [[{"role": "user", "content": "Hi"}, {"role": "", "content": "x"}]],
            r"row 0, column 'prompt\[1\]': has no role",
        ),
        ([[{"role": "user", "content": "Hi"}], "Hi"], r"row 1, column 'prompt': is standard but row 0 is conv"),
        ([], r"The prompt dataset is empty"),
    ],
)
def test_bad_prompts_are_refused_before_sampling(tiny_paths, tmp_path, prompts, match):
    calls = []

    def counting(prompts, completions):
        calls.append(len(prompts))
        return text_length(prompts, completions)

    generator = WestOfNGenerator(tiny_paths.policy, small(tmp_path), reward_funcs=counting)
    with pytest.raises(ValueError, match=match):
        generator.generate(prompts)
    assert calls == [] and not (tmp_path / "pairs").exists()


@pytest.mark.parametrize(
    ("dataset", "error", "match"),
    [
        ("Tell me a joke.", TypeError, r"`dataset` must be a `datasets.Dataset`.*got str.*a list with one element"),
        ({"prompt": ["Hi"]}, TypeError, r"got dict.*Dataset.from_dict"),
        (None, TypeError, r"got NoneType"),
        (42, TypeError, r"got int"),
        (DatasetDict({"train": Dataset.from_dict({"prompt": ["Hi"]})}), TypeError, r"pass one split.*\['train'\]"),
        (Dataset.from_dict({"question": ["Hi"]}), DatasetFormatError, r"no column 'prompt'.*rename_column"),
        (Dataset.from_dict({"prompt": []}), ValueError, r"The prompt dataset is empty"),
    ],
)
def test_generate_refuses_what_is_not_a_prompt_dataset(tiny_paths, tmp_path, dataset, error, match):
    generator = WestOfNGenerator(tiny_paths.policy, small(tmp_path), reward_funcs=text_length)
    with pytest.raises(error, match=match):
        generator.generate(dataset)


def test_an_empty_iterable_dataset_is_refused_and_extra_columns_are_ignored(tiny_paths, tmp_path):
    def nothing():
        yield from ()

    generator = WestOfNGenerator(tiny_paths.policy, small(tmp_path), reward_funcs=text_length)
    with pytest.raises(ValueError, match=r"The prompt dataset is empty"):
        generator.generate(IterableDataset.from_generator(nothing))
    with_extra = Dataset.from_dict({"prompt": UNICODE_PROMPTS[:3], "id": [1, 2, 3], "meta": [None, "x", "ü"]})
    streamed = IterableDataset.from_generator(lambda: ({"prompt": p, "id": i} for i, p in enumerate(UNICODE_PROMPTS)))
    a = WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="a"), reward_funcs=text_length).generate(with_extra)
    b = WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="b"), reward_funcs=text_length).generate(
        UNICODE_PROMPTS[:3]
    )
    assert a.to_dict() == b.to_dict()
    streamed_pairs = WestOfNGenerator(tiny_paths.policy, small(tmp_path, name="c"), reward_funcs=text_length).generate(
        streamed
    )
    assert set(streamed_pairs["prompt"]) <= set(UNICODE_PROMPTS)


def test_prompts_against_the_policy_context(policy, tokenizer, tmp_path, caplog):
    fits, close, long_prompt = "Hello there", " ".join(["word"] * 10), " ".join(["word"] * 30)
    lengths = [len(tokenizer(p)["input_ids"]) for p in (fits, close, long_prompt)]
    context = lengths[1] + 2  # `close` leaves 2 positions for 5 new tokens
    policy.config.max_position_embeddings = context
    assert lengths[0] + 5 <= context < lengths[2]

    def make(name):
        return WestOfNGenerator(
            policy, small(tmp_path, name=name), reward_funcs=text_length, processing_class=tokenizer
        )

    with pytest.raises(
        DatasetFormatError, match=rf"row 2, column 'prompt': is \d+ tokens long.*context of {context}.*Shorten"
    ):
        make("long").generate([fits, close, long_prompt])
    with caplog.at_level("WARNING", logger="trl_won.west_of_n.generator"):
        pairs = make("close").generate([fits, close])
    assert f"1 prompts (rows [1]) plus max_new_tokens=5 exceed the policy's context of {context} tokens" in caplog.text
    assert len(pairs) <= 2
    caplog.clear()
    with caplog.at_level("WARNING", logger="trl_won.west_of_n.generator"):
        make("fits").generate([fits])
    assert "context" not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": "8"}, TypeError, r"`n` must be an integer, got str '8'"),
        ({"n": 4.0}, TypeError, r"`n` must be an integer, got float"),
        ({"n": True}, TypeError, r"`n` must be an integer, got bool"),
        ({"max_new_tokens": None}, TypeError, r"`max_new_tokens` must be an integer"),
        ({"temperature": "0.7"}, TypeError, r"`temperature` must be a number, got str"),
        ({"temperature": math.inf}, ValueError, r"`temperature` must be a finite number"),
        ({"temperature": math.nan}, ValueError, r"`temperature` must be a finite number"),
        ({"top_p": math.nan}, ValueError, r"`top_p` must be a finite number"),
        ({"confidence_quantile": "0.5"}, TypeError, r"`confidence_quantile` must be a number"),
        ({"min_logp": math.nan}, ValueError, r"`min_logp` must be a finite number"),
        ({"keep_candidates": "yes"}, TypeError, r"`keep_candidates` must be True or False"),
        ({"share_prompt_prefill": 1}, TypeError, r"`share_prompt_prefill` must be True or False"),
        ({"pairs_dir": ""}, ValueError, r"`pairs_dir` must be a directory path"),
        ({"pairs_dir": None}, ValueError, r"`pairs_dir` must be a directory path"),
        ({"reward_weights": "1,2"}, TypeError, r"`reward_weights` must be a list of numbers"),
        ({"reward_weights": [1.0, math.inf]}, ValueError, r"`reward_weights\[1\]` must be a finite number"),
        ({"chat_template_kwargs": ["a"]}, TypeError, r"`chat_template_kwargs` must be a dict"),
        ({"chat_template_kwargs": "{not json"}, ValueError, r"`chat_template_kwargs` must be a JSON object"),
        ({"strategy": None}, TypeError, r"`strategy` must be one of 'west_of_n'"),
        ({"strategy": "best"}, ValueError, r"`strategy` must be one of"),
    ],
)
def test_config_type_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        WestOfNConfig(**kwargs)


def test_config_accepts_what_the_command_line_gives():
    from pathlib import Path

    import numpy as np

    config = WestOfNConfig(chat_template_kwargs='{"enable_thinking": false}', pairs_dir=Path("out"), temperature=1)
    assert config.chat_template_kwargs == {"enable_thinking": False} and config.pairs_dir == "out"
    swept = WestOfNConfig(n=np.int64(4), temperature=np.float32(0.5))  # values from a numpy sweep
    assert swept.n == 4 and type(swept.n) is int and swept.temperature == 0.5 and type(swept.temperature) is float
    assert config.share_prompt_prefill is True


def test_generator_and_reader_argument_errors(tiny_paths, tmp_path):
    with pytest.raises(TypeError, match=r"`args` must be a `WestOfNConfig`, got dict"):
        WestOfNGenerator(tiny_paths.policy, {"n": 4}, reward_funcs=text_length)
    with pytest.raises(TypeError, match=r"`policy` must be a path, a hub id or a model object, got int"):
        WestOfNGenerator(3, small(tmp_path), reward_funcs=text_length)
    with pytest.raises(FileNotFoundError, match=r"holds no West-of-N results.*Give the `pairs_dir`"):
        read_west_of_n_pairs(tmp_path / "nowhere")
    WestOfNGenerator(tiny_paths.policy, small(tmp_path), reward_funcs=text_length).generate(UNICODE_PROMPTS[:2])
    with pytest.raises(TypeError, match=r"`args` must be a `WestOfNConfig`"):
        read_west_of_n_pairs(tmp_path / "pairs", {"confidence_quantile": 0.5})
    assert len(read_west_of_n_pairs(tmp_path / "pairs")) >= 1


def _pairs(conversational=False, n=4):
    def wrap(text, role):
        return [{"role": role, "content": text}] if conversational else text

    return Dataset.from_dict(
        {
            "prompt": [wrap(f"Prompt {i} ✓", "user") for i in range(n)],
            "chosen": [wrap(f"good {i}", "assistant") for i in range(n)],
            "rejected": [wrap(f"bad {i}", "assistant") for i in range(n)],
        }
    )


@pytest.mark.parametrize("conversational", [False, True])
def test_mixing_argument_errors(conversational):
    pairs = _pairs(conversational)
    assert len(mix_preference_datasets(pairs, _pairs(conversational, 2))) == 6  # both formats work
    with pytest.raises(TypeError, match=r"`preference_dataset` must be a `datasets.Dataset`, got list"):
        mix_preference_datasets(pairs.to_list(), pairs)
    with pytest.raises(TypeError, match=r"got DatasetDict. Pass one split"):
        mix_preference_datasets(pairs, DatasetDict({"train": pairs}))
    for ratio in ("1", math.nan, True):
        with pytest.raises(TypeError, match=r"`ratio` must be a finite number or None"):
            mix_preference_datasets(pairs, pairs, ratio=ratio)
    with pytest.raises(DatasetFormatError, match=r"no column 'rejected'"):
        mix_preference_datasets(pairs, pairs.remove_columns("rejected"))
    with pytest.raises(DatasetFormatError, match=r"dataset is \w+ but the synthetic dataset is \w+\. Convert one"):
        mix_preference_datasets(pairs, _pairs(not conversational))
    prompt_only = mix_preferences_and_prompts(pairs, pairs.select_columns(["prompt"]))  # the online mix
    with pytest.raises(DatasetFormatError, match=r"row \d+, column 'chosen': is None in the synthetic dataset"):
        mix_preference_datasets(pairs, prompt_only)
    with pytest.raises(TypeError, match=r"`prompt_dataset` must be a `datasets.Dataset`, got list"):
        mix_preferences_and_prompts(pairs, ["Hi"])


def test_iterative_arguments_are_checked_before_any_generation(tiny_paths, tmp_path):
    pairs, prompts = _pairs(), Dataset.from_dict({"prompt": UNICODE_PROMPTS})
    common = dict(student_model=tiny_paths.reward_model, output_dir=str(tmp_path / "rounds"))
    cases = [
        (dict(num_rounds="2"), TypeError, r"`num_rounds` must be an integer, got str"),
        (dict(west_of_n_args={"n": 4}), TypeError, r"`west_of_n_args` must be a `WestOfNConfig`"),
        (dict(reward_args={"learning_rate": 1}), TypeError, r"`reward_args` must be a `trl.RewardConfig`"),
        (dict(mix_ratio=-1), ValueError, r"`ratio` must be >= 0"),
        (dict(mix_ratio="all"), TypeError, r"`ratio` must be a finite number"),
        (dict(preference_dataset=pairs.remove_columns("chosen")), DatasetFormatError, r"no column 'chosen'"),
        (dict(preference_dataset=pairs.to_dict()), TypeError, r"`preference_dataset` must be a `datasets.Dataset`"),
        (dict(policy=[tiny_paths.policy] * 3), ValueError, r"`policy` has 3 entries for 2 rounds"),
        (dict(student_model=None), TypeError, r"`student_model` must be a path or hub id"),
        (dict(output_dir=""), ValueError, r"`output_dir` must be a directory path"),
    ]
    for overrides, error, match in cases:
        kwargs = dict(
            policy=tiny_paths.policy,
            base_reward_model=tiny_paths.reward_model,
            preference_dataset=pairs,
            prompt_dataset=prompts,
            reward_args=RewardConfig(**cpu_training_kwargs(tmp_path / "student")),
            **common,
        )
        kwargs.update(overrides)
        with pytest.raises(error, match=match):
            iterative_west_of_n(**kwargs)
        assert not (tmp_path / "rounds").exists()  # nothing was generated
    assert json.dumps(UNICODE_PROMPTS, ensure_ascii=False)  # the prompts themselves are fine
