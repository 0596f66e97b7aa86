"""Lightning callbacks: the side effects of a run."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import lightning as L


class DiscardFailedRun(L.Callback):
    """Removes the run directory of a run that fails, when everything in it was written by
    this run and it holds no checkpoint to resume from: a failed run leaves no empty
    ``version_N`` folder behind, and nothing that was there before is touched."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if not trainer.is_global_zero or getattr(trainer.logger, "log_dir", None) is None:
            return
        log_dir = Path(trainer.logger.log_dir)  # not trainer.log_dir: a collective under DDP
        written = list(log_dir.glob("**/*")) if log_dir.is_dir() else []
        if written and all(path.stat().st_mtime >= self.started - 1 for path in written) \
                and not any(path.suffix == ".ckpt" for path in written):
            shutil.rmtree(log_dir)
            parent = log_dir.parent  # e.g. lightning_logs/, if this run made it
            if not any(parent.iterdir()) and parent.stat().st_mtime >= self.started - 1:
                parent.rmdir()
