"""A local causal LM used as a judge: loading, prompt rendering, batched next-token log-probabilities, and greedy
rationales (by the package's [`sample_completions`]). Shared by [`TransformersJudge`] and [`TransformersScoreJudge`].

Next-token log-probabilities are read at the last position of left-padded batches, with position ids computed from
the attention mask (so a padded row gives the same answer as the row alone) and `logits_to_keep=1` (so the LM head
runs on one position per row, not the whole prompt). The prefix every prompt shares (the template's preamble and
few-shot exemplars, often most of the prompt) runs once; its key/value cache is reused by every batch.
"""

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicLayer
from trl.trainer.utils import pad

from ..generation import SamplingParams, eval_mode, sample_completions
from ..models import is_quantized, load_model, load_tokenizer, unwrap_peft, weights_digest, with_device_map
from .answer_tokens import AnswerTokens, encode, resolve_answer_tokens


# Shortest common token prefix worth computing once and sharing through the key/value cache.
MIN_SHARED_PREFIX = 16


class JudgeLM:
    """A causal LM that reads judge prompts.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The judge model, or a path/hub id. A path is loaded on first use, so a process that never judges (a
            non-main process in distributed training) never loads it.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Its tokenizer; loaded from the model's path when omitted.
        use_chat_template (`bool`, *optional*, defaults to `False`):
            Render the request as a user message with the tokenizer's chat template and pre-fill the answer as the
            start of the assistant turn (for instruct models). Otherwise the request is plain text.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the chat template.
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        max_length (`int`, *optional*):
            Longest judge prompt, in tokens; longer ones are not judged (`None` with a reason).
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            4-bit or 8-bit quantization used when loading from a path.
        model_init_kwargs (`dict`, *optional*):
            `from_pretrained` arguments used when loading from a path; `dtype` defaults to `"auto"` and, on a GPU,
            `device_map` to the current device.
        name (`str`, *optional*):
            Name of the model in the judge's fingerprint and repr; defaults to its path, `config._name_or_path`, or
            for a model built in memory its class name. Never required: a model object is identified by a digest of
            its weights.
        share_prefix (`bool`, *optional*, defaults to `True`):
            Run the token prefix that all prompts of a call share (preamble, exemplars) once and reuse its key/value
            cache for every sequence. Turned off automatically for sliding-window and recurrent caches.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        use_chat_template: bool = False,
        chat_template_kwargs: dict | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        quantization_config=None,
        model_init_kwargs: dict | None = None,
        name: str | None = None,
        share_prefix: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if max_length is not None and max_length < 1:
            raise ValueError(f"`max_length` must be >= 1, got {max_length}.")
        if not isinstance(model, (str, torch.nn.Module)):
            raise TypeError(f"`model` must be a path, a hub id or a causal LM object, got {type(model).__name__}.")
        if isinstance(model, torch.nn.Module) and quantization_config is not None:
            raise ValueError(
                "`quantization_config` was given but the judge model is already instantiated. Pass the model as a "
                "path or hub id to quantize it when loading."
            )
        self._source = model
        self._model = None if isinstance(model, str) else model
        self.quantization_config = quantization_config
        self.model_init_kwargs = dict(model_init_kwargs or {})
        self.tokenizer = load_tokenizer(model, tokenizer)
        self.use_chat_template = use_chat_template
        if use_chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "`use_chat_template=True` but the judge's tokenizer has no chat template. Use a tokenizer with one, "
                "or set `use_chat_template=False` to send plain text."
            )
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = name or self._default_name()
        self.share_prefix = share_prefix
        self.last_shared_prefix_length = 0

    def _default_name(self) -> str:
        # A name is never required. A path or hub id names itself. A model object is identified in the fingerprint by
        # the digest of its weights (see `fingerprint_fields`), so for one built from a config (no
        # `_name_or_path`) the class name is enough as a label.
        if isinstance(self._source, str):
            return self._source
        name = getattr(self._source.config, "_name_or_path", "") or ""
        return name or f"{type(unwrap_peft(self._source)).__name__} (in memory)"

    @property
    def model(self):
        """The judge model, loaded on first access."""
        if self._model is None:
            kwargs = with_device_map(self.model_init_kwargs)
            kwargs.setdefault("dtype", "auto")
            self._model = load_model(
                self._source,
                AutoModelForCausalLM,
                model_init_kwargs=kwargs,
                quantization_config=self.quantization_config,
                argument_name="judge model",
            )
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def add_special_tokens(self) -> bool:
        # A rendered chat template already holds the special tokens (BOS) that plain text gets from the tokenizer.
        return not self.use_chat_template

    def render(self, request: str, prefill: str) -> str:
        """The full judge prompt: request then pre-filled answer, as plain text or through the chat template."""
        if self.use_chat_template:
            head = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": request}],
                add_generation_prompt=True,
                tokenize=False,
                **self.chat_template_kwargs,
            )
            return head + prefill
        return f"{request}\n\n{prefill}"

    def resolve_answers(self, example_prompt: str, answers: Sequence[str]) -> AnswerTokens:
        return resolve_answer_tokens(self.tokenizer, example_prompt, answers, self.add_special_tokens)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [encode(self.tokenizer, t, self.add_special_tokens) for t in texts]

    def too_long(self, ids: Sequence[int]) -> str | None:
        """Why a prompt cannot be judged, or `None`."""
        if self.max_length is not None and len(ids) > self.max_length:
            return (
                f"the judge prompt has {len(ids)} tokens, more than max_length={self.max_length}; shorten the "
                "prompt/completions or raise `max_length`"
            )
        return None

    def _forward_kwargs(self, model) -> set[str]:
        # Models that do not take these (older or custom architectures) get the plain call and full logits.
        parameters = inspect.signature(unwrap_peft(model).forward).parameters
        return {"position_ids", "logits_to_keep", "cache"} & set(parameters)

    def next_token_logprobs(
        self,
        sequences: Sequence[Sequence[int]],
        wanted: Sequence[Sequence[int]],
        groups: Sequence[Sequence[int]],
        progress: tqdm | None = None,
    ) -> list[dict[int, float]]:
        """Next-token log-probabilities (log-softmax over the vocabulary) after each sequence.

        Args:
            sequences (`Sequence[Sequence[int]]`): Token ids of each sequence.
            wanted (`Sequence[Sequence[int]]`): For each sequence, the token ids whose log-probability to return.
            groups (`Sequence[Sequence[int]]`): Indices of sequences that must share a forward pass (for instance
                both orders of a pair). Groups are sorted by length and packed into batches of about `batch_size`
                sequences; a group is never split.
            progress (`tqdm`, *optional*): Advanced by the number of groups done.

        Returns:
            `list[dict[int, float]]`: For each sequence, `{token_id: log_prob}` for its wanted tokens.
        """
        model = self.model
        device = next(model.parameters()).device
        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        accepted = self._forward_kwargs(model)
        order = sorted(range(len(groups)), key=lambda g: max(len(sequences[i]) for i in groups[g]))
        batches, current = [], []
        for g in order:
            if current and sum(len(groups[h]) for h in current) + len(groups[g]) > self.batch_size:
                batches.append(current)
                current = []
            current.append(g)
        if current:
            batches.append(current)
        results: list[dict[int, float]] = [{} for _ in sequences]
        with eval_mode(model), torch.inference_mode():
            prefix = self._shared_prefix(model, sequences, device, accepted)
            self.last_shared_prefix_length = 0 if prefix is None else prefix[0]
            for batch_groups in batches:
                rows = [i for g in batch_groups for i in groups[g]]
                logits = self._last_logits(model, [sequences[i] for i in rows], prefix, pad_id, device, accepted)
                logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
                for r, i in enumerate(rows):
                    tokens = list(wanted[i])
                    values = logprobs[r, tokens].tolist()
                    results[i] = dict(zip(tokens, values, strict=True))
                if progress is not None:
                    progress.update(len(batch_groups))
        return results

    def _shared_prefix(self, model, sequences, device, accepted) -> tuple[int, Any] | None:
        """The key/value cache of the token prefix all sequences share (the template's preamble and exemplars),
        computed once; `None` when it is too short to be worth it or the model's cache cannot be shared."""
        if not self.share_prefix or len(sequences) < 2 or "position_ids" not in accepted:
            return None
        first = sequences[0]
        length = min(len(s) for s in sequences) - 1  # every sequence keeps at least one token of its own
        for sequence in sequences[1:]:
            length = min(length, next((k for k in range(length) if sequence[k] != first[k]), length))
        if length < MIN_SHARED_PREFIX:
            return None
        ids = torch.as_tensor([first[:length]], dtype=torch.long, device=device)
        kwargs = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        output = model(input_ids=ids, use_cache=True, **kwargs)
        # transformers >= 5.25 calls the cache `cache` (`past_key_values` is deprecated); earlier 5.x: past_key_values.
        cache = output.cache if "cache" in accepted else output.past_key_values
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return None  # sliding-window or recurrent caches would see the padding between prefix and suffix
        return length, cache

    def _last_logits(self, model, rows, prefix, pad_id, device, accepted) -> torch.Tensor:
        """Logits after the last token of each row, in one left-padded forward pass (after the shared prefix)."""
        start, cache = (0, None) if prefix is None else prefix
        tails = [torch.as_tensor(row[start:], dtype=torch.long) for row in rows]
        input_ids = pad(tails, padding_value=pad_id, padding_side="left")
        attention_mask = pad([torch.ones_like(tail) for tail in tails], padding_value=0, padding_side="left")
        position_ids = (start + attention_mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"input_ids": input_ids.to(device)}
        if cache is not None:
            # The rows continue the cached prefix; their padding sits between the prefix and their own tokens.
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
            attention_mask = torch.cat([torch.ones((len(rows), start), dtype=torch.long), attention_mask], dim=1)
            kwargs.update({"cache" if "cache" in accepted else "past_key_values": cache, "use_cache": True})
        else:
            kwargs["use_cache"] = False
        kwargs["attention_mask"] = attention_mask.to(device)
        if "position_ids" in accepted:
            kwargs["position_ids"] = position_ids.to(device)
        if "logits_to_keep" in accepted:
            kwargs["logits_to_keep"] = 1
        return model(**kwargs).logits[:, -1, :]

    def greedy(self, texts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuation of each text, special tokens removed: [`sample_completions`] at temperature 0, with
        texts of similar length batched together."""
        lengths = [len(ids) for ids in self.tokenize(texts)]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        samples = sample_completions(
            self.model,
            self.tokenizer,
            [texts[i] for i in order],
            num_samples=1,
            params=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens),
            batch_size=self.batch_size,
            add_special_tokens=self.add_special_tokens,
        )
        outputs = [""] * len(texts)
        for i, (sample,) in zip(order, samples, strict=True):
            outputs[i] = sample.text
        return outputs

    def fingerprint_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"model": self.name, "use_chat_template": self.use_chat_template}
        if isinstance(self._source, str):
            fields["revision"] = self.model_init_kwargs.get("revision")
            fields["dtype"] = str(self.model_init_kwargs.get("dtype", "auto"))
            quantization = self.quantization_config or self.model_init_kwargs.get("quantization_config")
            fields["quantization"] = _quantization_fields(quantization)
        else:
            model = self._source
            fields["revision"] = getattr(model.config, "_commit_hash", None)
            fields["dtype"] = str(model.dtype)
            fields["quantization"] = _quantization_fields(getattr(model.config, "quantization_config", None))
            fields["quantized"] = is_quantized(model)
            # An object may be retrained in memory (or re-saved under the same path): its weights identify it.
            fields["weights"] = weights_digest(model)
        if self.use_chat_template:
            fields["chat_template"] = self.tokenizer.chat_template
            fields["chat_template_kwargs"] = self.chat_template_kwargs
        return fields

    def prompt_fingerprint_fields(self) -> dict[str, Any]:
        """What decides the prompt text alone (for a served judge that renders prompts with this tokenizer)."""
        fields: dict[str, Any] = {
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "use_chat_template": self.use_chat_template,
        }
        if self.use_chat_template:
            fields["chat_template"] = self.tokenizer.chat_template
            fields["chat_template_kwargs"] = self.chat_template_kwargs
        return fields

    def __repr__(self) -> str:
        return f"JudgeLM(model={self.name!r}, use_chat_template={self.use_chat_template}, loaded={self.loaded})"


def _quantization_fields(config) -> dict | None:
    if config is None:
        return None
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    keys = ("quant_method", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype")
    return {k: str(data[k]) for k in keys if k in data}
