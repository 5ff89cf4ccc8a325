"""How big the demo is: every count, model size and training length, and the world's noise settings.

`DemoSizes.full()` is the default `trl-won demo` (all three methods in at most 10 minutes on 2 CPU cores) and
`DemoSizes.quick()` the reduced run of the test suite (about a minute, sane but not significant numbers). Every
random draw of the demo derives from `seed`, so one seed gives one exact run.
"""

from dataclasses import dataclass, field, fields, replace

from .labels import JudgeBias, LabelNoise


@dataclass(frozen=True)
class DemoSizes:
    """Sizes and settings of one demo run.

    Args:
        name (`str`): Name shown in the report (`"full"`, `"quick"` or your own).
        seed (`int`, *optional*, defaults to `0`): Seed every random draw derives from.
        sft_prompts (`int`): Demonstrations the policy is fine-tuned on.
        sft_epochs (`float`): Epochs of policy SFT.
        human_pairs (`int`): Human-labeled pairs in the full set (HF100%); HF50% is its first half.
        eval_pairs (`int`): Held-out pairs (before dropping oracle ties) every accuracy is measured on.
        rm_epochs (`float`): Epochs of reward-model training.
        won_prompts (`int`): Unlabeled prompts West-of-N generates pairs for.
        won_n (`int`): Policy samples per prompt for West-of-N.
        bon_prompts (`int`): Prompts Best-of-N and the policies are evaluated on.
        bon_n (`int`): Samples per prompt for Best-of-N.
        judge_pairs (`int`): Pairs the judge LM is trained on.
        judge_epochs (`float`): Epochs of judge training.
        rrhf_prompts (`int`): Prompts RRHF trains on.
        rrhf_k (`int`): Policy samples per prompt for RRHF.
        rrhf_epochs (`float`): Epochs of RRHF (both arms).
        rrhf_on_policy_prompts (`int`, *optional*): Prompts on-policy RRHF trains on (the first of RRHF's prompts);
            `None`: all of them. It samples `rrhf_k` responses per prompt from the policy being trained.
        hidden_size (`int`): Hidden size of the tiny policy (the reward models and the judge start from it).
        num_layers (`int`): Layers of the tiny policy.
        num_heads (`int`), num_kv_heads (`int`): Attention heads and key/value heads of the tiny policy.
        tie_embeddings (`bool`): Tie the policy's input and output embeddings (it learns to copy and to avoid
            tokens of the prompt much faster).
        sft_learning_rate, rm_learning_rate, judge_learning_rate, rrhf_learning_rate (`float`): Peak learning rates.
        temperature (`float`, *optional*, defaults to `0.7`): Sampling temperature (the West-of-N paper's).
        max_new_tokens (`int`, *optional*, defaults to `12`): Token limit of a sampled response.
        label_noise ([`LabelNoise`]): How the simulated human labelers err.
        judge_bias ([`JudgeBias`]): What the judge LM is trained to answer.
    """

    name: str
    sft_prompts: int
    sft_epochs: float
    human_pairs: int
    eval_pairs: int
    rm_epochs: float
    won_prompts: int
    won_n: int
    bon_prompts: int
    bon_n: int
    judge_pairs: int
    judge_epochs: float
    rrhf_prompts: int
    rrhf_k: int
    rrhf_epochs: float
    rrhf_on_policy_prompts: int | None = None
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    tie_embeddings: bool = False
    sft_learning_rate: float = 3e-3
    rm_learning_rate: float = 2e-3
    judge_learning_rate: float = 1e-3
    rrhf_learning_rate: float = 1e-3
    seed: int = 0
    temperature: float = 0.7
    max_new_tokens: int = 12
    label_noise: LabelNoise = field(default_factory=LabelNoise)
    judge_bias: JudgeBias = field(default_factory=JudgeBias)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and f.name != "seed" and value <= 0:
                raise ValueError(f"`{f.name}` must be > 0, got {value}.")
        if self.human_pairs < 4:
            raise ValueError(f"`human_pairs` must be >= 4 (HF50% is half of it), got {self.human_pairs}.")
        for name in ("won_n", "bon_n", "rrhf_k"):
            if getattr(self, name) < 2:
                raise ValueError(f"`{name}` must be >= 2, got {getattr(self, name)}.")

    @classmethod
    def full(cls, **overrides) -> "DemoSizes":
        """The default demo: the mechanisms show with some margin, in at most 10 minutes on 2 CPU cores."""
        sizes = cls(
            name="full",
            sft_prompts=3000,
            sft_epochs=8,
            human_pairs=1500,
            eval_pairs=2000,
            rm_epochs=8,
            won_prompts=750,
            won_n=16,
            bon_prompts=300,
            bon_n=16,
            judge_pairs=2000,
            judge_epochs=5,
            rrhf_prompts=500,
            rrhf_k=4,
            rrhf_epochs=1,
        )
        return replace(sizes, **overrides)

    @classmethod
    def quick(cls, **overrides) -> "DemoSizes":
        """The test-suite run: every stage in well under a minute, numbers sane but not significant."""
        sizes = cls(
            name="quick",
            sft_prompts=1000,
            sft_epochs=3,
            human_pairs=300,
            eval_pairs=300,
            rm_epochs=3,
            won_prompts=150,
            won_n=4,
            bon_prompts=50,
            bon_n=4,
            judge_pairs=400,
            judge_epochs=3,
            rrhf_prompts=48,
            rrhf_k=3,
            rrhf_epochs=1,
            hidden_size=32,
        )
        return replace(sizes, **overrides)
