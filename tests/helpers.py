"""Settings shared by the tests (and test scripts) that train."""


def cpu_training_kwargs(output_dir, **overrides) -> dict:
    """`TrainingArguments` for short, deterministic runs on the CPU: float32, no logging backends, no checkpoints, no
    progress bars, every step logged, no gradient checkpointing (tests that need it turn it on)."""
    kwargs = dict(
        output_dir=str(output_dir),
        report_to="none",
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        gradient_checkpointing=False,
        seed=0,
    )
    kwargs.update(overrides)
    return kwargs
