"""Start or join Ray once per process, with settings that work on a 2-core laptop and a cluster."""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from mdrec import placement
from mdrec.config import RayConfig, ShuffleStrategy


def ensure_ray(cfg: RayConfig) -> None:
    """Initialise Ray unless this process already did (tests share one session across tests)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict = dict(
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        if address:
            ray.init(address=address, **kwargs)
            placement.mark_started_here(False)
        else:
            # Unix socket paths must stay short: keep Ray's temp dir near /tmp, one per user.
            tmp = os.environ.get("RAY_TMPDIR") or cfg.tmpdir or os.path.join(tempfile.gettempdir(), "mdrec-ray")
            os.makedirs(tmp, exist_ok=True)
            os.environ.setdefault("RAY_TMPDIR", tmp)
            _start_local(lambda: ray.init(num_cpus=cfg.num_cpus, _temp_dir=tmp, **kwargs))
            placement.mark_started_here(True)
    configure_data_context(cfg)


STARTUP_TIMEOUT = ("timed out during startup", "while waiting for node to startup")


def _start_local(start, attempts: int = 2) -> None:
    """Start a local Ray, again once if its node missed Ray's fixed 30 s start-up wait: on a
    laptop whose cores are busy (another Ray, a build) the raylet can be that slow to register."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            start()
            return
        except Exception as e:  # Ray raises a bare Exception (or TimeoutError) for this
            if attempt == attempts or not any(text in str(e) for text in STARTUP_TIMEOUT):
                raise
            ray.shutdown()  # the half-started node's processes go before the next try


def configure_data_context(cfg: RayConfig) -> None:
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    show = cfg.progress_bars if cfg.progress_bars is not None else sys.stderr.isatty()
    ctx.enable_progress_bars = show
    ctx.enable_operator_progress_bars = show
    ctx.print_on_execution_start = False
    # Every dataset made from now on runs where the CPU stages may (the backend's, see generate).
    ctx.execution_options.label_selector = placement.cpu_selector(cfg) or None
    from ray.data.context import ShuffleStrategy as RayShuffle

    ctx.shuffle_strategy = (
        RayShuffle.HASH_SHUFFLE if cfg.shuffle is ShuffleStrategy.hash else RayShuffle.SORT_SHUFFLE_PULL_BASED
    )
    # Hash shuffles default to 200 partitions, each served by actors; on a small Ray that is
    # pure overhead. Scale with the CPUs actually there.
    cpus = int(ray.cluster_resources().get("CPU", 2))
    ctx.default_hash_shuffle_parallelism = max(4, min(200, 2 * cpus))
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # "Progress bars disabled" is a warning about our own choice: keep it out of the output.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
