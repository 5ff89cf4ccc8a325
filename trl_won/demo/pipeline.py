"""The demo pipeline: build the world's models, run the three methods' mechanisms, and measure them against the oracle.

Stages, each timed: world data, tokenizer, policy SFT, preference pairs (policy samples labeled by noisy "humans"
and by the oracle), judge training, reward models (HF50%, HF100%), West-of-N and its controls, Best-of-N, RRHF,
RLAIF (judge alignment, position bias, and a reward model trained on the judge's labels).

Models come in as arguments (`policy`, `reward_model`, `judge`: paths, or `None` for the tiny ones built here), so the
same pipeline runs on real models; the world only supplies prompts, the oracle and labels.
"""

import json
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as transformers_logging

from ..data_utils import as_completion
from ..generation import Sample, SamplingParams, sample_completions
from ..rewards import RewardModelScorer
from ..rlaif import LabelStore, PairwiseJudgement, label_preferences
from ..rlaif.labeling import alignment_metrics
from ..tiny import build_tiny_causal_lm
from ..west_of_n import WestOfNConfig, WestOfNGenerator, mix_preference_datasets
from ..west_of_n.storage import ResumeMismatchError
from .data import Draw, WorldData, as_answer, as_prompt, build_world_data, draw_seed
from .evaluation import judge_hits, mean_and_stderr, paired_difference, pairwise_hits
from .judge import JUDGE_TEMPLATE, build_judge
from .labels import LabeledPair, gold_labels, human_labels, response_pairs
from .names import BEST_RANDOM, HF50, HF100, JUDGE_LABELS, NAIVE, ORACLE, RRHF_ON_POLICY, SFT, WEST_OF_N
from .sizes import DemoSizes
from .tokenizer import build_world_tokenizer
from .training import TrainSettings, answer_token_ids, train_judge_lm, train_reward_model, train_sft
from .world import oracle_reward, oracle_reward_func


logger = logging.getLogger(__name__)

# (better, worse) pairs of reward models whose held-out accuracies the report compares, as the papers do.
RM_COMPARISONS = (
    (HF100, HF50),
    (WEST_OF_N, HF50),
    (WEST_OF_N, HF100),
    (WEST_OF_N, NAIVE),
    (WEST_OF_N, BEST_RANDOM),
    (NAIVE, HF50),
    (BEST_RANDOM, HF50),
    (JUDGE_LABELS, HF50),
    (JUDGE_LABELS, HF100),
)


class Stopwatch:
    """Wall-clock seconds per named stage; with `show_progress`, one progress bar per stage (the training steps of
    its trainers, which all advance `bar`) and a one-line summary when it ends (set by the stage with [`summary`]).
    Libraries' own bars (loading and writing weights, tokenizing datasets) are off during a stage."""

    def __init__(self, show_progress: bool = True):
        self.seconds: dict[str, float] = {}
        self.show_progress = show_progress
        self.bar = None  # the running stage's bar
        self._summary = ""

    def summary(self, text: str) -> None:
        """What the running stage found, printed after its time."""
        self._summary = text

    @contextmanager
    def stage(self, name: str):
        from tqdm.auto import tqdm

        self._summary = ""
        # Shown after a second: stages without training steps finish before that, silently.
        self.bar = tqdm(total=0, desc=name, unit="step", leave=False, delay=1.0, disable=not self.show_progress)
        start = time.perf_counter()
        try:
            with library_progress_bars_off():
                yield
        finally:
            self.bar.close()
            self.bar = None
        self.seconds[name] = round(time.perf_counter() - start, 2)
        if self.show_progress:
            print(f"[demo] {name}: {self.seconds[name]:.1f} s" + (f"  {self._summary}" if self._summary else ""))


@contextmanager
def library_progress_bars_off():
    """The progress bars of `datasets` (tokenizing) and `transformers` (loading and writing weights) off; restored
    after."""
    import datasets

    datasets_on, transformers_on = datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if transformers_on:
            transformers_logging.enable_progress_bar()


def _rows(pairs: list[LabeledPair]) -> tuple[list, list, list]:
    return (
        [as_prompt(p.task) for p in pairs],
        [as_answer(p.chosen) for p in pairs],
        [as_answer(p.rejected) for p in pairs],
    )


def _oracle_gaps(pairs) -> list[float]:
    """Oracle reward of `chosen` minus that of `rejected`, for each row of a preference dataset."""
    rows = zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], strict=True)
    return [oracle_reward(p, c) - oracle_reward(p, r) for p, c, r in rows]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _agreement(gaps: list[float]) -> float:
    """Share of pairs (oracle ties left out) whose `chosen` the oracle prefers."""
    graded = [g > 0 for g in gaps if g != 0]
    return sum(graded) / max(1, len(graded))


def judge_metrics(judgements: list[PairwiseJudgement], a_better: list[bool]) -> dict:
    """A judge against the oracle from its judgements of pairs `(a, b)` in both orders and whether each `a` is truly
    better: alignment from one order (`a` shown first) and with both orders averaged, the share of pairs whose
    preferred *position* is the same in both orders (so its verdict flips with the order; the RLAIF paper's position
    bias), the share of verdicts for the response shown first, the mean P("1"), and the paired gain of averaging.
    Pairs the judge could not label are left out."""
    judged = [(j, better) for j, better in zip(judgements, a_better, strict=True) if j.probability is not None]
    if not judged:
        raise RuntimeError("The judge labeled none of the held-out pairs; see the reasons it logged.")
    judgements, a_better = [j for j, _ in judged], [better for _, better in judged]
    averaged = alignment_metrics(judgements, ["a" if better else "b" for better in a_better])
    # P("1") in each order: P(a) with a shown first, and P(b) = 1 - P(a) with b shown first.
    answer_1 = [(j.probability_a_first, 1.0 - j.probability_a_second) for j in judgements]
    one_order_hits = judge_hits([j.probability_a_first for j in judgements], a_better)
    averaged_hits = judge_hits([j.probability for j in judgements], a_better)
    gain, gain_stderr = paired_difference(averaged_hits, one_order_hits)
    return {
        "alignment_one_order": sum(one_order_hits) / len(one_order_hits),
        "alignment_order_averaged": averaged.accuracy,
        "same_position_rate": averaged.same_position_rate,
        "first_position_preference": sum((x > 0.5) + (y > 0.5) for x, y in answer_1) / (2 * len(answer_1)),
        "mean_p_answer_1": sum(x + y for x, y in answer_1) / (2 * len(answer_1)),
        "pairs_judged": len(judgements),
        "averaging_gain": {"difference": gain, "stderr": gain_stderr},
    }


def pair_details(pairs) -> dict:
    """Number of generated pairs, the share the oracle agrees with (ties left out), the share of oracle ties and the
    mean oracle gap (chosen minus rejected)."""
    gaps = _oracle_gaps(pairs)
    return {
        "pairs": len(gaps),
        "pair_accuracy": _agreement(gaps),
        "oracle_ties": sum(g == 0 for g in gaps) / max(1, len(gaps)),
        "mean_oracle_gap": mean_and_stderr(gaps)[0] if gaps else 0.0,
    }


class DemoPipeline:
    """One demo run. Call [`run`] for everything, or the stage methods in the order `run` calls them.

    Args:
        sizes ([`DemoSizes`]): Sizes and settings.
        output_dir (`str`): Where models and `results.json` go.
        policy (`str`, *optional*): A causal LM to fine-tune on the demonstrations instead of the tiny one built here.
        reward_model (`str`, *optional*): A model to start every reward model from, instead of the SFT policy.
        judge (`str`, *optional*): A causal LM judge used as is, instead of the tiny one trained here.
        show_progress (`bool`, *optional*, defaults to `True`): Stage messages and progress bars.
    """

    def __init__(
        self,
        sizes: DemoSizes,
        output_dir: str,
        policy: str | None = None,
        reward_model: str | None = None,
        judge: str | None = None,
        show_progress: bool = True,
    ):
        self.sizes = sizes
        self.output_dir = Path(output_dir)
        self.policy_source = policy
        self.reward_model_source = reward_model
        self.judge_source = judge
        self.show_progress = show_progress
        self.timer = Stopwatch(show_progress)
        # The bars of sampling, scoring and judging inside a stage: only for real models, where they take a while.
        self.inner_progress = show_progress and any(m is not None for m in (policy, reward_model, judge))
        self.results: dict = {"sizes": asdict(sizes)}
        self.sampling = SamplingParams(temperature=sizes.temperature, max_new_tokens=sizes.max_new_tokens)
        self.reward_models: dict[str, RewardModelScorer] = {}
        self.eval_hits: dict[str, list[float]] = {}  # per held-out pair, for paired comparisons

    # -- helpers ------------------------------------------------------------------------------------------------

    def _dir(self, name: str) -> str:
        path = self.output_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _settings(self, name: str, epochs: float, learning_rate: float, batch_size: int = 32) -> TrainSettings:
        return TrainSettings(
            output_dir=self._dir(f"trainer/{name}"),
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            seed=self.sizes.seed,
            progress=self.timer.bar,
        )

    def _sample_raw(self, model, prompts, n: int, draw: Draw) -> list[list[Sample]]:
        return sample_completions(
            model,
            self.policy_tokenizer,
            prompts,
            n,
            self.sampling,
            batch_size=256,
            seed=draw_seed(self.sizes, draw),
            show_progress=self.inner_progress,
        )

    def _sample(self, model, tasks, n: int, draw: Draw) -> tuple[list, list[list[str]]]:
        prompts = [as_prompt(t) for t in tasks]
        samples = self._sample_raw(model, prompts, n, draw)
        return prompts, [[s.text for s in group] for group in samples]

    def _oracle_rewards(self, name: str, model, tasks, n: int, draw: Draw) -> tuple[list[list[float]], list, list]:
        """Sample `n` responses per task, record the policy's mean oracle reward under `name`, return the rewards."""
        prompts, texts = self._sample(model, tasks, n, draw)
        rewards = [[oracle_reward(p, t) for t in group] for p, group in zip(prompts, texts, strict=True)]
        self._record_policy(name, [sum(group) / len(group) for group in rewards])
        return rewards, prompts, texts

    def _record_policy(self, name: str, per_prompt: list[float]) -> None:
        """Record a policy's mean oracle reward over prompts, and its standard error."""
        mean, stderr = mean_and_stderr(per_prompt)
        self.results.setdefault("policy_oracle_reward", {})[name] = mean
        self.results.setdefault("policy_oracle_reward_stderr", {})[name] = stderr

    def _accuracies(self, *names: str) -> str:
        accuracies = self.results["reward_model_accuracy"]
        return ", ".join(f"{name} {_pct(accuracies[name])}" for name in names)

    def _rewards(self, *names: str) -> str:
        rewards = self.results["policy_oracle_reward"]
        return ", ".join(f"{name} {rewards[name]:.2f}" for name in names if name in rewards)

    # -- world and models ---------------------------------------------------------------------------------------

    def build_world(self) -> WorldData:
        with self.timer.stage("world data"):
            self.world = build_world_data(self.sizes)
            demo_rewards = [oracle_reward(t.prompt, d) for t, d in zip(self.world.sft_tasks, self.world.sft_demos)]
            self.results["world"] = {"mean_demonstration_reward": mean_and_stderr(demo_rewards)[0]}
            mean_reward = self.results["world"]["mean_demonstration_reward"]
            self.timer.summary(f"{len(demo_rewards)} demonstrations, mean oracle reward {mean_reward:.2f}")
        return self.world

    def build_tokenizer(self):
        with self.timer.stage("tokenizer"):
            self.tokenizer = build_world_tokenizer(self.world.corpus(), self._dir("models/tokenizer"))
        return self.tokenizer

    def train_policy(self):
        with self.timer.stage("policy SFT"):
            if self.policy_source is None:
                self.policy_tokenizer = self.tokenizer
                self.policy, self.policy_path = self.train_tiny_lm(
                    "policy",
                    hidden_size=self.sizes.hidden_size,
                    num_layers=self.sizes.num_layers,
                    num_heads=self.sizes.num_heads,
                    num_kv_heads=self.sizes.num_kv_heads,
                )
                return self.policy
            self.policy_tokenizer = AutoTokenizer.from_pretrained(self.policy_source)
            model = AutoModelForCausalLM.from_pretrained(self.policy_source)
            self.policy = self._sft(model, self.policy_tokenizer, "policy")
            self.policy_path = self._dir("models/policy")
            self.policy.save_pretrained(self.policy_path)
            self.policy_tokenizer.save_pretrained(self.policy_path)
        return self.policy

    def _sft(self, model, tokenizer, name: str):
        """`model` fine-tuned on the world's demonstrations with the policy's settings."""
        return train_sft(
            model,
            tokenizer,
            [as_prompt(t) for t in self.world.sft_tasks],
            [as_answer(d) for d in self.world.sft_demos],
            self._settings(name, self.sizes.sft_epochs, self.sizes.sft_learning_rate),
        )

    def train_tiny_lm(self, name: str, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int):
        """A tiny LM of the given architecture (seeded by `sizes.seed`, on the world tokenizer) fine-tuned on the
        world's demonstrations exactly as the tiny policy is, and saved to `models/<name>`: returns it and the path."""
        source = build_tiny_causal_lm(
            self._dir(f"models/{name}_init"),
            self.tokenizer,
            seed=self.sizes.seed,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
        )
        model = self._sft(AutoModelForCausalLM.from_pretrained(source), self.tokenizer, name)
        path = self._dir(f"models/{name}")
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return model, path

    def label_pairs(self):
        """Two policy samples per prompt: noisy human labels (HF100%) and oracle labels (held-out evaluation)."""
        with self.timer.stage("preference pairs"):
            human_tasks, eval_tasks = self.world.human_tasks, self.world.eval_tasks
            _, texts = self._sample(self.policy, human_tasks, 2, Draw.HUMAN)
            pairs = response_pairs(human_tasks, texts)
            self.human_pairs = human_labels(pairs, self.sizes.label_noise, draw_seed(self.sizes, Draw.HUMAN_NOISE))
            self.hf50_pairs = self.human_pairs[: len(self.human_pairs) // 2]
            _, texts = self._sample(self.policy, eval_tasks, 2, Draw.EVAL)
            self.eval_pairs = gold_labels(response_pairs(eval_tasks, texts))
            graded = [p.correct for p in self.human_pairs if p.correct is not None]
            self.results["world"].update(
                human_pairs=len(self.human_pairs),
                human_label_accuracy=sum(graded) / max(1, len(graded)),
                eval_pairs=len(self.eval_pairs),
            )
            world = self.results["world"]
            self.timer.summary(
                f"{world['human_pairs']} human pairs ({_pct(world['human_label_accuracy'])} agree with the oracle), "
                f"{world['eval_pairs']} held-out pairs"
            )

    def train_judge(self):
        """The judge: the SFT policy trained to answer "1"/"2" after the RLAIF prompt, read by `TransformersJudge`."""
        with self.timer.stage("judge training"):
            if self.judge_source is not None:
                tokenizer = AutoTokenizer.from_pretrained(self.judge_source)
                chat = bool(getattr(tokenizer, "chat_template", None))
                self.judge = build_judge(self.judge_source, tokenizer, self.judge_source, chat, self.inner_progress)
                return self.judge
            self.judge = self.train_tiny_judge(self.policy_path, "judge")
        return self.judge

    def train_tiny_judge(self, start_from: str, name: str):
        """The tiny LM at `start_from` trained on the world's judge requests towards the biased targets (the judge's
        settings), saved to `models/<name>`, as a `TransformersJudge` named by that path."""
        model = AutoModelForCausalLM.from_pretrained(start_from)
        model = train_judge_lm(
            model,
            self.tokenizer,
            self.world.judge_requests,
            self.world.judge_targets,
            self._settings(name, self.sizes.judge_epochs, self.sizes.judge_learning_rate),
            answer_token_ids(self.tokenizer, JUDGE_TEMPLATE.ending, ["1", "2"]),
        )
        judge_path = self._dir(f"models/{name}")
        model.save_pretrained(judge_path)
        self.tokenizer.save_pretrained(judge_path)
        # The label store tells judges apart by name and a digest of their weights.
        return build_judge(model, self.tokenizer, judge_path, show_progress=self.inner_progress)

    # -- reward models ------------------------------------------------------------------------------------------

    def _train_rm(self, name: str, prompts, chosen, rejected, soft_labels=None) -> RewardModelScorer:
        source = self.reward_model_source or self.policy_path
        tokenizer = AutoTokenizer.from_pretrained(source)
        torch.manual_seed(self.sizes.seed)  # the new score head
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # not the load report of the new score head, which is by design
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        finally:
            transformers_logging.set_verbosity(verbosity)
        settings = self._settings(f"rm_{len(self.reward_models)}", self.sizes.rm_epochs, self.sizes.rm_learning_rate)
        model = train_reward_model(model, tokenizer, prompts, chosen, rejected, settings, soft_labels=soft_labels)
        scorer = RewardModelScorer(model, tokenizer, batch_size=256)
        self.reward_models[name] = scorer
        self.results.setdefault("reward_model_accuracy", {})[name] = self._rm_accuracy(name, scorer)
        return scorer

    def _rm_accuracy(self, name: str, scorer: RewardModelScorer) -> float:
        """Held-out accuracy; the per-pair hits are kept under `name` for paired comparisons."""
        prompts, chosen, rejected = _rows(self.eval_pairs)
        hits = self.eval_hits[name] = pairwise_hits(scorer(prompts, chosen), scorer(prompts, rejected))
        return sum(hits) / len(hits)

    def train_human_reward_models(self, names: tuple[str, ...] = (HF50, HF100)):
        """The reward models on the human labels: HF50% (the first half of the pairs) and HF100% (all of them)."""
        with self.timer.stage("reward models HF50% / HF100%"):
            if HF50 in names:
                self._train_rm(HF50, *_rows(self.hf50_pairs))
            if HF100 in names:
                self._train_rm(HF100, *_rows(self.human_pairs))
            self.timer.summary(f"held-out accuracy {self._accuracies(*(n for n in (HF50, HF100) if n in names))}")

    def _west_of_n_pairs(self, strategy: str, n: int, tasks=None, pairs_dir: str | None = None, reward_funcs=None):
        """`WestOfNGenerator` pairs for the West-of-N prompts (or `tasks`), labeled by the HF50% reward model (or by
        `reward_funcs`, e.g. the oracle), kept in `pairs_dir` (default `west_of_n/<strategy>`)."""
        args = WestOfNConfig(
            n=n,
            strategy=strategy,
            temperature=self.sizes.temperature,
            max_new_tokens=self.sizes.max_new_tokens,
            sampling_seed=draw_seed(self.sizes, Draw.WEST_OF_N),
            generation_batch_size=256,
            scoring_batch_size=256,
            pairs_dir=pairs_dir or str(self.output_dir / "west_of_n" / strategy),
            show_progress=self.inner_progress,
        )
        if reward_funcs is None:
            base = self.reward_models[HF50]
            labeler = {"reward_model": base.model, "reward_processing_class": base.tokenizer}
        else:
            labeler = {"reward_funcs": reward_funcs}
        generator = WestOfNGenerator(self.policy, args, processing_class=self.policy_tokenizer, **labeler)
        prompts = [as_prompt(t) for t in (self.world.won_tasks if tasks is None else tasks)]
        try:
            return generator.generate(prompts)  # resumes when an identical earlier run left its results
        except ResumeMismatchError:
            logger.info("Replacing West-of-N pairs of an earlier demo run in %s.", args.pairs_dir)
            shutil.rmtree(args.pairs_dir)
            return generator.generate(prompts)

    def _hf50_dataset(self):
        from datasets import Dataset

        return Dataset.from_dict(dict(zip(("prompt", "chosen", "rejected"), _rows(self.hf50_pairs), strict=True)))

    def _train_student(self, name: str, pairs, ratio: float | None = None) -> RewardModelScorer:
        """A student reward model on HF50% mixed with generated `pairs` (`ratio`: generated pairs per HF50% pair, as
        `mix_preference_datasets` takes it; `None`: all of them)."""
        mixed = mix_preference_datasets(self._hf50_dataset(), pairs, ratio=ratio, seed=self.sizes.seed)
        return self._train_rm(name, mixed["prompt"], mixed["chosen"], mixed["rejected"])

    def west_of_n(self):
        """HF50% + West-of-N pairs, and the paper's controls (naive self-training, best/random pairs).

        Every strategy labels samples of the same prompts with the same seed, so West-of-N and (best, random) pick
        from the very same responses. The number of West-of-N prompts equals HF50%'s size: the paper's 1:1 mix.
        """
        details = self.results.setdefault("west_of_n", {})
        strategies = (
            (WEST_OF_N, "west_of_n", self.sizes.won_n),
            (NAIVE, "naive", 2),
            (BEST_RANDOM, "best_random", self.sizes.won_n),
        )
        for name, strategy, n in strategies:
            with self.timer.stage(name):
                pairs = self._west_of_n_pairs(strategy, n)
                details[name] = pair_details(pairs)
                self._train_student(name, pairs)
                self.timer.summary(
                    f"{details[name]['pairs']} pairs ({_pct(details[name]['pair_accuracy'])} agree with the oracle); "
                    f"held-out accuracy {self._accuracies(name)}"
                )

    # -- policies -----------------------------------------------------------------------------------------------

    def best_of_n(self):
        n = self.sizes.bon_n
        with self.timer.stage("Best-of-N"):
            oracle, prompts, texts = self._oracle_rewards(SFT, self.policy, self.world.bon_tasks, n, Draw.BEST_OF_N)
            flat_prompts = [p for p, group in zip(prompts, texts, strict=True) for _ in group]
            flat = [as_completion(p, t) for p, group in zip(prompts, texts, strict=True) for t in group]
            for name, scorer in self.reward_models.items():
                scores = scorer(flat_prompts, flat)
                picks = [max(range(n), key=lambda j, i=i: scores[i * n + j]) for i in range(len(prompts))]
                self._record_policy(f"Best-of-{n} ({name})", [oracle[i][j] for i, j in enumerate(picks)])
            self._record_policy(f"Best-of-{n} ({ORACLE})", [max(group) for group in oracle])
            shown = self._rewards(SFT, f"Best-of-{n} ({HF100})", f"Best-of-{n} ({ORACLE})")
            self.timer.summary(f"mean oracle reward {shown}")

    def rrhf_candidates(self) -> tuple[list, list[list[Sample]]]:
        """The RRHF prompts and the SFT policy's `rrhf_k` samples of each (drawn once, then kept)."""
        if getattr(self, "_rrhf_candidates", None) is None:
            prompts = [as_prompt(t) for t in self.world.rrhf_tasks]
            samples = self._sample_raw(self.policy, prompts, self.sizes.rrhf_k, Draw.RRHF)
            self._rrhf_candidates = prompts, samples
        return self._rrhf_candidates

    def rrhf_offline_rows(self) -> dict[str, list]:
        """The offline RRHF dataset: each prompt with its distinct non-empty samples (prompts with fewer than two are
        left out), as conversational completions that `RRHFTrainer` tokenizes (each then closed by EOS)."""
        rows = {"prompt": [], "completions": []}
        for prompt, group in zip(*self.rrhf_candidates(), strict=True):
            # An empty sample (EOS first) has no token to rank; a prompt needs two different samples to rank.
            kept = list(dict.fromkeys(s.text for s in group if s.text.strip()))
            if len(kept) >= 2:
                rows["prompt"].append(prompt)
                rows["completions"].append([as_answer(t) for t in kept])
        return rows

    def train_rrhf(
        self,
        rows: dict[str, list],
        reward,
        output_name: str,
        epochs: float | None = None,
        num_generations: int | None = None,
        reward_weights: list[float] | None = None,
    ):
        """`RRHFTrainer` from the SFT policy on the dataset `rows` (its columns), ranked by `reward` (reward
        functions or models; `None` for tokenized rows with their own `rewards`), for `epochs` (default `rrhf_epochs`)
        with the demo's RRHF settings; returns the trained trainer.

        With `num_generations` it samples that many responses per prompt from the policy being trained at every step
        (after the row's fixed `completions`, if any), with the offline samples' sampling settings, and logs every
        step. `output_name` must differ between calls with different rewards: `RRHFTrainer` caches the scores in its
        output directory under the reward functions' names, and the demo's reward models share one name.
        """
        from datasets import Dataset

        from ..rrhf import RRHFConfig, RRHFTrainer

        lr = self.sizes.rrhf_learning_rate
        settings = self._settings(output_name, epochs or self.sizes.rrhf_epochs, lr, batch_size=8)
        kwargs = settings.trainer_kwargs()
        if num_generations:
            # Every step logged (into the trainer's history, not printed): the reward of each round's samples.
            kwargs.update(
                logging_strategy="steps",
                logging_steps=1,
                num_generations=num_generations,
                max_completion_length=self.sizes.max_new_tokens,
                temperature=self.sizes.temperature,
                top_p=1.0,
                top_k=0,
            )
            if reward_weights is not None:
                kwargs["reward_weights"] = reward_weights
        args = RRHFConfig(**kwargs, activation_checkpointing=False, max_length=None)
        trainer = RRHFTrainer(
            model=AutoModelForCausalLM.from_pretrained(self.policy_path),
            args=args,
            train_dataset=Dataset.from_dict(rows),
            processing_class=self.policy_tokenizer,
            reward_funcs=reward,
        )
        settings.quiet(trainer).train()
        trainer.model.eval()
        return trainer

    def rrhf_reward(self, name: str):
        """The reward called `name`: the oracle (`ORACLE`), or a reward model trained so far."""
        return oracle_reward_func if name == ORACLE else self.reward_models[name]

    def evaluate_policy(self, name: str, policy) -> None:
        """Record `policy`'s mean oracle reward (and standard error) over the evaluation prompts under `name`."""
        self._oracle_rewards(name, policy, self.world.bon_tasks, self.sizes.bon_n, Draw.BEST_OF_N)

    def rrhf(self, reward_models: tuple[str, ...] = (HF100, JUDGE_LABELS, ORACLE)):
        """RRHF on `rrhf_k` policy samples per prompt, ranked by each of `reward_models` (names of the reward models
        trained so far, or `ORACLE` for the true reward: the ceiling of what better reward models can give)."""
        rows = self.rrhf_offline_rows()
        for i, name in enumerate(reward_models):
            with self.timer.stage(f"RRHF ({name})"):
                # One output directory per reward (see `train_rrhf`).
                trainer = self.train_rrhf(rows, self.rrhf_reward(name), f"rrhf_{i}")
                self.evaluate_policy(f"RRHF ({name})", trainer.model)
                self.timer.summary(f"mean oracle reward {self._rewards(SFT, f'RRHF ({name})')}")

    def rrhf_on_policy(self, reward_model: str = HF100):
        """On-policy RRHF with the reward model `reward_model` (or `ORACLE`, the true reward): a prompt-only dataset
        and `reward_funcs`, so `RRHFTrainer` samples `rrhf_k` responses per prompt from the policy being trained, at
        every step (with the same sampling settings as the offline arm's samples), and ranks them by the reward."""
        name = f"{RRHF_ON_POLICY} ({reward_model})"
        with self.timer.stage(name):
            count = self.sizes.rrhf_on_policy_prompts or len(self.world.rrhf_tasks)
            prompts = [as_prompt(t) for t in self.world.rrhf_tasks[:count]]
            trainer = self.train_rrhf(
                {"prompt": prompts},
                self.rrhf_reward(reward_model),
                "rrhf_on_policy",
                num_generations=self.sizes.rrhf_k,
            )
            # The reward model's mean score of each step's samples: what the policy was resampled and ranked on.
            logged = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
            self.results.setdefault("rrhf_on_policy", {})[reward_model] = {
                "prompts": len(prompts),
                "samples_per_prompt": self.sizes.rrhf_k,
                "steps": trainer.state.global_step,
                "reward_model_score_first_step": logged[0] if logged else None,
                "reward_model_score_last_step": logged[-1] if logged else None,
            }
            self.evaluate_policy(name, trainer.model)
            self.timer.summary(f"mean oracle reward {self._rewards(SFT, name)}")

    # -- RLAIF --------------------------------------------------------------------------------------------------

    def judge_held_out_pairs(self, judge) -> tuple[list[PairwiseJudgement], list[bool]]:
        """`judge`'s judgements of the held-out pairs, both orders, and for each whether its `a` is the truly better
        response: the better one is `a` (shown first in the first order) in every other pair, `b` in the others."""
        pairs = self.eval_pairs
        prompts = [as_prompt(p.task) for p in pairs]
        a = [as_answer(p.chosen if i % 2 == 0 else p.rejected) for i, p in enumerate(pairs)]
        b = [as_answer(p.rejected if i % 2 == 0 else p.chosen) for i, p in enumerate(pairs)]
        return judge.judge_pairs(prompts, a, b), [i % 2 == 0 for i in range(len(pairs))]

    def rlaif(self):
        """The judge against the oracle (one order, both orders averaged), then a reward model on its soft labels."""
        with self.timer.stage("RLAIF judge"):
            self.results["judge"] = judge_metrics(*self.judge_held_out_pairs(self.judge))
            self.timer.summary(
                f"alignment with the oracle {_pct(self.results['judge']['alignment_one_order'])} (one order), "
                f"{_pct(self.results['judge']['alignment_order_averaged'])} (both orders averaged)"
            )
        with self.timer.stage("RM on judge labels"):
            # The judge labels the pairs the humans labeled (HF100%); the store keeps its labels across runs.
            labeled = self.judge_labels(self.judge, self.output_dir / "judge_labels.sqlite")
            self.results["judge"]["label_accuracy"] = _agreement(_oracle_gaps(labeled))
            self._train_rm(
                JUDGE_LABELS, labeled["prompt"], labeled["chosen"], labeled["rejected"], labeled["soft_label"]
            )
            self.timer.summary(
                f"{len(labeled)} labels ({_pct(self.results['judge']['label_accuracy'])} agree with the oracle); "
                f"held-out accuracy {self._accuracies(JUDGE_LABELS)}"
            )

    def judge_labels(self, judge, store_path: Path):
        """`judge`'s labels of the human-labeled pairs (`label_preferences` into the `LabelStore` at `store_path`)."""
        prompts, first, second = _rows(self.human_pairs)
        rows = [
            {"prompt": p, "completion_a": x, "completion_b": y} for p, x, y in zip(prompts, first, second, strict=True)
        ]
        store = LabelStore(store_path)
        try:
            return label_preferences(rows, judge, store=store, chunk_size=256, show_progress=False)
        finally:
            store.close()

    def compare_reward_models(self):
        """Paired differences of held-out accuracy for the comparisons the papers make."""
        comparisons = {}
        for better, worse in RM_COMPARISONS:
            if better in self.eval_hits and worse in self.eval_hits:
                difference, stderr = paired_difference(self.eval_hits[better], self.eval_hits[worse])
                comparisons[f"{better} vs {worse}"] = {"difference": difference, "stderr": stderr}
        self.results["reward_model_comparisons"] = comparisons

    def write_outputs(self) -> dict[str, Path]:
        """Write `results.json`, `report.md` and (with matplotlib) `demo.png` to `output_dir`; return their paths."""
        from .report import render_report

        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = {"results": self.output_dir / "results.json", "report": self.output_dir / "report.md"}
        files["results"].write_text(json.dumps(self.results, indent=2, default=str))
        try:
            from .figure import write_figure

            files["figure"] = write_figure(self.results, self.output_dir / "demo.png")
        except ImportError:
            logger.warning('matplotlib is not installed, so no figure: pip install "trl-won[demo]".')
        files["report"].write_text(render_report(self.results, "demo.png" if "figure" in files else None))
        return files

    def run(self) -> dict:
        """All stages; returns the measurements and timings, and writes them (see [`write_outputs`])."""
        self.build_world()
        self.build_tokenizer()
        self.train_policy()
        self.label_pairs()
        self.train_judge()
        self.train_human_reward_models()
        self.west_of_n()
        self.best_of_n()
        self.rlaif()
        self.rrhf()
        self.rrhf_on_policy(HF100)
        self.rrhf_on_policy(ORACLE)
        self.compare_reward_models()
        self.results["timings_s"] = dict(self.timer.seconds)
        self.results["timings_s"]["total"] = round(sum(self.timer.seconds.values()), 2)
        self.files = self.write_outputs()
        return self.results
