"""Settings shared by the tests (and test scripts) that train."""

import os
import sys

from transformers import TrainerCallback


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


def exit_distributed_script() -> None:
    """End a test script launched with several processes (torchrun, `accelerate launch`) once its outputs are written.

    The process group is torn down as the CLI tears it down (`end_distributed`: a barrier, then
    `destroy_process_group`), and the process then leaves without interpreter finalization: objects that gloo's worker
    threads still reference can be finalized after the interpreter is gone, which aborts a rank that finished its work
    ("terminate called without an active exception", SIGABRT) and fails the launch. Rare, but one such abort fails the
    suite; what the tests compare is written and closed before this is called.
    """
    from trl_won.cli.main import end_distributed

    end_distributed()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class StopAtStep(TrainerCallback):
    """Stop training after optimizer step `step` (to save a checkpoint mid-run and resume from it)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
