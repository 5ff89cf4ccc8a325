"""The synthetic preference world behind `trl-won demo`, and the pipeline that measures the three methods in it.

- `world`: tasks, the oracle reward, mixed-quality demonstrations.
- `labels`: noisy human labels, gold labels, the judge's position-biased targets.
- `data`: everything drawn from the seed before any model exists.
- `tokenizer`, `training`: the world tokenizer; SFT, reward-model and judge training.
- `judge`: the world's RLAIF template and the texts the judge LM is trained on (what `TransformersJudge` renders).
- `evaluation`: the measurements; `names`: the names results are reported under.
- `pipeline`: the stages, timed, through the package's public API; `sizes`: the quick and full sizes.
- `report`, `figure`: `report.md` (a verdict per paper claim, against its standard error) and `demo.png`.
"""

from .pipeline import DemoPipeline
from .sizes import DemoSizes
from .world import Task, oracle_reward, oracle_reward_func


__all__ = ["DemoPipeline", "DemoSizes", "Task", "oracle_reward", "oracle_reward_func"]
