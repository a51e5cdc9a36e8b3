"""Fault-injection points for the fault tests, each off unless its environment variable is set.

The tests kill real processes (a generation actor, a training worker, a job's driver) from
outside; these hooks only hold a process still at a known point so the kill lands mid-stage.
None of them changes what a run computes. A job gets them through `mdrec submit --env`, which
puts them in the job's runtime_env, so every process of that job sees them.
"""

from __future__ import annotations

import os
import time

# Generation: the driver hangs once this many shards are written (then it is killed).
HANG_AFTER_SHARDS = "MDREC_TEST_GENERATE_HANG_AFTER_SHARDS"
# Generation: each popularity-backend actor sleeps this long per batch, so a kill finds batches in flight.
BATCH_SECONDS = "MDREC_TEST_GENERATE_BATCH_SECONDS"
# Training: every worker sleeps this long after reporting the first epoch's checkpoint of a fresh run.
PAUSE_AFTER_FIRST_CHECKPOINT = "MDREC_TEST_TRAIN_PAUSE_SECONDS"


def _seconds(name: str) -> float:
    value = os.environ.get(name)
    return float(value) if value else 0.0


def hang_after_shards(written: int) -> None:
    after = os.environ.get(HANG_AFTER_SHARDS)
    if after and written >= int(after):
        print(f"generate: test hook: hanging after {written} shards", flush=True)
        time.sleep(3600)


def slow_batch() -> None:
    seconds = _seconds(BATCH_SECONDS)
    if seconds:
        time.sleep(seconds)


def pause_after_first_checkpoint(epoch: int, resumed: bool, rank: int) -> None:
    seconds = _seconds(PAUSE_AFTER_FIRST_CHECKPOINT)
    if seconds and epoch == 0 and not resumed:
        print(f"train: test hook: worker {rank} (pid {os.getpid()}) pausing {seconds:g}s after epoch 0's checkpoint",
              flush=True)
        time.sleep(seconds)
