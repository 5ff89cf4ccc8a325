"""The demo's RLAIF judge: its pairwise template, the texts its LM is trained on, and the judge object that reads it.

The tiny judge LM is trained on exactly the text [`~trl_won.rlaif.TransformersJudge`] shows it (request, a blank
line, then the pre-filled `Preferred Response=`), so that the package's own judge code path is what labels the
demo's pairs. `judge_training_text` builds that text from the template; a test checks it is the judge's own
rendering, token for token.
"""

from ..data_utils import Completion, Prompt
from ..rlaif import PairwiseTemplate, TransformersJudge
from ..rlaif.templates import format_completion, format_context


JUDGE_TEMPLATE = PairwiseTemplate(
    name="word-lists",
    preamble=(
        "You rate word lists. Given an instruction and two responses, output 1 or 2 to indicate which response "
        "follows the instruction better."
    ),
)


def judge_training_text(prompt: Prompt, response_1: Completion, response_2: Completion) -> str:
    """The judge prompt for one order of a pair, ending right before the answer "1" or "2" (plain text)."""
    context, first, second = format_context(prompt), format_completion(response_1), format_completion(response_2)
    request = JUDGE_TEMPLATE.request(context, first, second)
    return f"{request}\n\n{JUDGE_TEMPLATE.prefill()}"


def build_judge(model, tokenizer, name: str, use_chat_template: bool = False, show_progress: bool = False):
    """A [`~trl_won.rlaif.TransformersJudge`] with the demo's template.

    Args:
        model ([`~transformers.PreTrainedModel`] or `str`): The judge LM, or its path/hub id.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): Its tokenizer.
        name (`str`): The name identifying it in the label store.
        use_chat_template (`bool`, *optional*, defaults to `False`): Send requests through the chat template (for an
            instruct model given with `--judge_model_name_or_path`); the demo's own judge reads plain text.
        show_progress (`bool`, *optional*, defaults to `False`): Progress bars while judging.
    """
    return TransformersJudge(
        model,
        tokenizer,
        template=JUDGE_TEMPLATE,
        use_chat_template=use_chat_template,
        batch_size=64,
        name=name,
        show_progress=show_progress,
    )
