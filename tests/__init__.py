"""Shared settings of the tests."""

#: Trainer options of a quiet fit: no logger, checkpoints, progress bar, model summary or
#: sanity validation.
QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)
