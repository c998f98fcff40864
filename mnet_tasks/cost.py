"""Cost of a model as the paper counts it: multiply-adds of convolutions and fully connected layers, and params.

``python -m mnet_tasks.cost backbone.alpha=0.5 backbone.rho=0.714`` prints the cost of the configured task's
network at its resolved input size, with the paper's Table 2 breakdown by layer type.

Command line: Hydra overrides composed in-process (``compose_config``), not ``@hydra.main``: it prints and writes no
run folder.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelCost:
    madds: int
    params: int
    input_size: int
    madds_by_layer_type: dict[str, int]
    params_by_layer_type: dict[str, int]


def layer_type(module: nn.Module) -> str | None:
    """The paper's Table 2 categories."""
    if isinstance(module, nn.Linear):
        return "fully connected"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise conv"
        return "1x1 conv" if module.kernel_size == (1, 1) else f"{module.kernel_size[0]}x{module.kernel_size[1]} conv"
    return None


@torch.no_grad()
def profile_model(model: nn.Module, input_size: int, in_chans: int = 3) -> ModelCost:
    """MAdds (one per multiply-accumulate) of one forward pass on a single image, and the trainable parameters of
    the modules that pass runs (a head used only in training, such as an identity classifier, is not the model)."""
    was_training = model.training
    model.eval()
    # A model whose work depends on the image (e.g. proposals kept by NMS) fixes it for counting.
    cost_mode = getattr(model, "cost_mode", contextlib.nullcontext)
    called: set[nn.Module] = set()  # parameters count where their module runs: not a training-only head
    hook = nn.modules.module.register_module_forward_hook(lambda module, args, output: called.add(module))
    try:
        with FlopCounterMode(display=False) as counter, cost_mode():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        hook.remove()
        model.train(was_training)
    madds_by_type: Counter[str] = Counter()
    params_by_type: Counter[str] = Counter()
    flops_by_module = counter.get_flop_counts()
    for name, module in model.named_modules():
        kind = layer_type(module)
        if kind is None or module not in called:
            continue
        key = f"{type(model).__name__}.{name}" if name else type(model).__name__
        madds_by_type[kind] += sum(flops_by_module.get(key, {}).values()) // 2
        params_by_type[kind] += sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    run = {id(p): p.numel() for module in called for p in module.parameters(recurse=False) if p.requires_grad}
    return ModelCost(
        madds=counter.get_total_flops() // 2,
        params=sum(run.values()),
        input_size=input_size,
        madds_by_layer_type=dict(madds_by_type),
        params_by_layer_type=dict(params_by_type),
    )


def format_cost(cost: ModelCost) -> str:
    lines = [
        f"input {cost.input_size}x{cost.input_size}: {cost.madds / 1e6:.1f} M MAdds, {cost.params / 1e6:.3f} M params",
        f"{'layer type':<16}{'MAdds %':>9}{'params %':>10}",
    ]
    for kind in sorted(cost.madds_by_layer_type, key=cost.madds_by_layer_type.get, reverse=True):
        madds_share = 100 * cost.madds_by_layer_type[kind] / max(cost.madds, 1)
        params_share = 100 * cost.params_by_layer_type[kind] / max(cost.params, 1)
        lines.append(f"{kind:<16}{madds_share:>9.2f}{params_share:>10.2f}")
    return "\n".join(lines)


def main(overrides: list[str]) -> None:
    from mnet_tasks.config import compose_config
    from mnet_tasks.task_module import build_task

    cfg = compose_config(overrides)
    module = build_task(cfg)
    print(f"{cfg.task.name}: alpha={cfg.backbone.alpha} rho={cfg.backbone.rho}")
    print(format_cost(profile_model(module, cfg.input_size)))


if __name__ == "__main__":
    main(sys.argv[1:])
