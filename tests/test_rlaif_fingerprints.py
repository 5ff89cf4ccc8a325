"""Judge fingerprints are part of the label store's format: a judge built with the same settings must keep the
fingerprint it had when its labels were written, or a store written before a refactor would no longer be read back
as the same judge. These are the fingerprints (and the fields they hash) of one judge of each kind, as they were
when stores were first written with them."""

import json
from pathlib import Path

import pytest

from trl_won.rlaif import OpenAIJudge, OpenAIScoreJudge, ScoreTemplate, TransformersJudge, TransformersScoreJudge
from trl_won.rlaif.base import fingerprint_of


def _judges(tokenizer):
    score_template = ScoreTemplate(scores=(1, 2, 3, 4, 5))
    return {
        "transformers-default": TransformersJudge("org/judge", tokenizer),
        "transformers-cot": TransformersJudge(
            "org/judge",
            tokenizer,
            "harmlessness",
            chain_of_thought=True,
            rationale_max_new_tokens=32,
            model_init_kwargs={"revision": "abc", "dtype": "bfloat16"},
        ),
        "transformers-chat": TransformersJudge("org/judge", tokenizer, use_chat_template=True, batch_size=3),
        "transformers-score": TransformersScoreJudge("org/judge", tokenizer, score_template, chain_of_thought=True),
        "openai-chat": OpenAIJudge("served", base_url="http://localhost:1/v1"),
        "openai-chat-settings": OpenAIJudge(
            "served",
            base_url="http://localhost:1/v1",
            template="summarization",
            chain_of_thought=True,
            system_prompt="Be fair.",
            top_logprobs=5,
            rationale_max_tokens=64,
            extra_body={"seed": 3},
            max_concurrency=2,
            timeout=5.0,
        ),
        "openai-hard": OpenAIJudge("served", base_url="http://localhost:1/v1", logprobs=False),
        "openai-completions": OpenAIJudge("served", base_url="http://localhost:1/v1", tokenizer=tokenizer),
        "openai-completions-chat": OpenAIJudge(
            "served", base_url="http://localhost:1/v1", tokenizer=tokenizer, use_chat_template=True
        ),
        "openai-score": OpenAIScoreJudge("served", base_url="http://localhost:1/v1"),
        "openai-score-settings": OpenAIScoreJudge(
            "served", base_url="http://localhost:1/v1", template=score_template, chain_of_thought=True, logprobs=False
        ),
    }


EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "rlaif_fingerprints.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fingerprints_are_stable(name, tokenizer):
    judge = _judges(tokenizer)[name]
    fingerprint, fields = judge.described_fingerprint()
    # The tiny tokenizer's path is a temporary directory: compare the fields with it replaced.
    shown = json.loads(
        json.dumps(fields, default=str).replace(json.dumps(tokenizer.name_or_path)[1:-1], "<tokenizer>")
    )
    assert shown == EXPECTED[name]["fields"]
    kind = "score" if "score" in name else "pairwise"
    assert fingerprint == fingerprint_of({"kind": kind, **fields})
    if "<tokenizer>" not in json.dumps(shown):
        assert fingerprint == EXPECTED[name]["fingerprint"]
