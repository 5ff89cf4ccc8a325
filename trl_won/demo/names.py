"""Names of the demo's reward models and policies, as they appear in `results.json`, the report and the figure."""

HF50, HF100 = "HF50%", "HF100%"
WEST_OF_N, NAIVE, BEST_RANDOM = "HF50% + West-of-N", "HF50% + naive self-training", "HF50% + (best, random)"
JUDGE_LABELS = "RLAIF (judge labels)"
ORACLE = "oracle reward"
SFT = "SFT policy"
RRHF_OFFLINE, RRHF_ON_POLICY = "RRHF", "RRHF on-policy"  # policy names: f"{RRHF_ON_POLICY} ({reward model})"
