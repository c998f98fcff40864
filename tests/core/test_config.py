"""Config composition, the resolved input size, and errors that name the key before data is touched."""

import json
import re

import pytest
from omegaconf import OmegaConf

from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.run import run, validate_config
from mnet_tasks.task_module import build_task


@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        ([], 128),  # the quick start: 0.25 MobileNet-128
        (["backbone.rho=1.0"], 224),
        (["backbone.rho=0.857"], 192),
        (["backbone.rho=0.714"], 160),
        (["backbone.rho=0.571"], 128),
        (["backbone.resolution=100"], 100),
        (["backbone.rho=0.5", "backbone.resolution=96"], 96),
    ],
)
def test_input_size_is_resolved_once_and_read_by_data(overrides, size):
    cfg = compose_config(overrides)
    assert cfg.input_size == size
    assert cfg.data.image_size == size


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("backbone.alpha=0", "backbone.alpha"),
        ("backbone.alpha=-0.5", "backbone.alpha"),
        ("backbone.rho=0", "backbone.rho"),
        ("backbone.rho=0.1", "backbone.rho"),
        ("backbone.resolution=16", "backbone.resolution"),
        ("train=false", "ckpt_path"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path"),
    ],
)
def test_invalid_values_fail_naming_the_key(override, key):
    with pytest.raises(Exception, match=re.escape(key)):
        validate_config(compose_config([override]))


def test_errors_come_before_any_data_is_generated(tmp_path):
    cfg = compose_config(["backbone.alpha=0", f"paths.data_dir={tmp_path}/data", f"paths.output_dir={tmp_path}/run"])
    with pytest.raises(ConfigError, match=r"backbone\.alpha"):
        run(cfg)
    assert not (tmp_path / "data").exists()
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "backbone.alpha" in record["error"]


def test_task_module_takes_backbone_from_config_and_head_from_data():
    cfg = compose_config(["backbone.alpha=0.5", "backbone.activation=relu", "backbone.separable=false"])
    module = build_task(cfg, num_classes=3)
    assert module.backbone.alpha == 0.5
    assert module.backbone.classifier.out_features == 3
    assert type(module.backbone.stem.act).__name__ == "ReLU"
    assert module.backbone.blocks[0].conv.kernel_size == (3, 3)


def test_fast_dev_run_in_process_writes_metrics_json(tmp_path, quick):
    cfg = compose_config([*quick, "trainer.fast_dev_run=true", f"paths.output_dir={tmp_path}"])
    record = run(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["status"] == "completed"
    assert (saved["task"], saved["dataset"], saved["alpha"], saved["input_size"]) == (
        "classification",
        "synthetic_shapes",
        0.25,
        64,
    )
    assert saved["params"] == sum(p.numel() for p in build_task(cfg, num_classes=4).parameters())
    assert 0 < saved["madds"] < 41e6 * (64 / 224) ** 2 * 1.1
    assert set(saved["metrics"]["final"]) == {"val/loss", "val/top1", "val/top5"}
    assert saved["train_images_per_s"] > 0  # the training phase, validation excluded


def test_bad_data_root_names_the_path_and_key(tmp_path, quick):
    cfg = compose_config([*quick, f"data.root={tmp_path}/imagenet", f"paths.output_dir={tmp_path}/run"])
    with pytest.raises(Exception, match=r"imagenet.*data\.root|data\.root.*imagenet"):
        run(cfg)


def test_backbone_pretrained_in_config_loads_the_weights(tmp_path):
    import torch

    from mnet_tasks import MobileNetV1

    source = MobileNetV1(alpha=0.5, num_classes=7)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    module = build_task(
        compose_config(["backbone.alpha=0.5", f"backbone.pretrained={tmp_path}/weights.pth"]), num_classes=7
    )
    assert torch.equal(module.backbone.blocks[5].pw.conv.weight, source.blocks[5].pw.conv.weight)
    assert torch.equal(module.backbone.classifier.weight, source.classifier.weight)


def test_an_experiment_for_real_data_requires_data_root(tmp_path):
    cfg = compose_config(["experiment=imagenet_paper", "trainer=cpu", f"paths.data_dir={tmp_path}/data"])
    assert (cfg.backbone.alpha, cfg.input_size, cfg.task.lr_schedule.name) == (1.0, 224, "exponential")
    with pytest.raises(Exception, match=r"data\.root is required"):
        run(OmegaConf.merge(cfg, {"paths": {"output_dir": str(tmp_path / "run")}}))
    assert not (tmp_path / "data").exists()
