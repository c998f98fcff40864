"""What every task shares: decay groups that spare depthwise filters, and the lr schedules."""

import math

import pytest
import torch

from mnet_tasks import MobileNetV1
from mnet_tasks.task_module import lr_multiplier, parameter_groups


def test_weight_decay_spares_depthwise_filters_bn_and_biases():
    model = MobileNetV1(alpha=0.25, num_classes=10)
    decay, no_decay = parameter_groups(model, 4e-5)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (4e-5, 0.0)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.stem.conv.weight) in decayed
    assert id(model.classifier.weight) in decayed
    for block in model.blocks:
        assert id(block.pw.conv.weight) in decayed
        assert id(block.dw.conv.weight) not in decayed
        assert id(block.pw.bn.weight) not in decayed
    assert id(model.classifier.bias) not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(decay["params"]) == 1 + 13 + 1  # stem, 13 pointwise convs, classifier


def test_full_conv_ablation_decays_every_conv():
    model = MobileNetV1(alpha=0.25, separable=False)
    decay, _ = parameter_groups(model, 1e-4)
    assert len(decay["params"]) == 1 + 13 + 1


def test_released_exponential_schedule_decays_094_every_25_epochs():
    steps_per_epoch = 100
    factors = [lr_multiplier(s, steps_per_epoch, 10_000, name="exponential") for s in (0, 249, 250, 499, 500)]
    assert factors == pytest.approx([1.0, 1.0, 0.94, 0.94, 0.94**2])


def test_cosine_with_warmup():
    def at(step):
        return lr_multiplier(step, 10, 100, name="cosine", warmup_epochs=1)

    assert at(0) == pytest.approx(0.1)
    assert at(9) == pytest.approx(1.0)
    assert at(10) == pytest.approx(1.0)
    assert at(55) == pytest.approx(0.5)
    assert at(100) == pytest.approx(0.0, abs=1e-9)
    assert all(at(s) >= at(s + 1) for s in range(10, 100))


def test_unknown_schedule_names_the_key():
    with pytest.raises(ValueError, match=r"task\.lr_schedule\.name"):
        lr_multiplier(0, 1, 1, name="linear")


def test_optimizer_and_scheduler_from_config():
    from mnet_tasks.config import compose_config
    from mnet_tasks.task_module import build_task

    module = build_task(compose_config(["backbone.alpha=0.25", "task.lr_schedule.name=exponential"]), num_classes=3)

    class FakeTrainer:
        estimated_stepping_batches = 50
        max_epochs = 5

    module.trainer = FakeTrainer()  # type: ignore[assignment]
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert type(optimizer).__name__ == "RMSpropTF"
    assert [g["weight_decay"] for g in optimizer.param_groups] == [4e-5, 0.0]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.045)
    for _ in range(25):  # 2.5 epochs of 10 steps
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.045 * 0.94)
    assert not math.isnan(optimizer.param_groups[1]["lr"])
    assert isinstance(module(torch.zeros(1, 3, 64, 64)), torch.Tensor)
