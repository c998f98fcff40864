"""``python -m mnet_tasks`` (and the ``mnet-tasks`` script): a thin Hydra entry point around :func:`run`."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnet_tasks.config import config_dir
from mnet_tasks.run import run, summary

log = logging.getLogger("mnet_tasks")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the primary metric's best value, the objective for Hydra sweepers."""
    try:
        record = run(cfg)
    except Exception:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # One failed job must not stop the sweep: its metrics.json already says status=failed.
        log.exception("job %s failed; the sweep goes on", HydraConfig.get().job.num)
        return None
    print(summary(record))
    return record["metrics"]["best"].get(cfg.task.monitor)


if __name__ == "__main__":
    main()
