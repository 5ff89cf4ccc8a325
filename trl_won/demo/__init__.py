"""The synthetic preference world behind `trl-won demo`, and the pipeline that measures the three methods in it.

- `world`: tasks, the oracle reward, mixed-quality demonstrations.
- `labels`: noisy human labels, gold labels, the judge's position-biased targets.
- `data`: everything drawn from the seed before any model exists.
- `tokenizer`, `training`: the world tokenizer; SFT, reward-model and judge training.
- `stand_ins`: stand-ins for method APIs that land later (judge reading, West-of-N pairs), one for one.
- `evaluation`: the measurements.
- `pipeline`: the stages, timed; `sizes`: the quick and full sizes.
"""

from .pipeline import DemoPipeline
from .sizes import DemoSizes
from .world import Task, oracle_reward, oracle_reward_func


__all__ = ["DemoPipeline", "DemoSizes", "Task", "oracle_reward", "oracle_reward_func"]
