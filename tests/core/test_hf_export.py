"""format=hf: a classifier checkpoint as a timm / Hugging Face model folder, which timm loads alone (timm's own
widths) or after ``import mnet_tasks`` (the others), reproducing the checkpoint's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import TINY_DATA, export_config, reference_outputs, tiny_data, train_tiny
from safetensors.torch import load_file

from mnet_tasks import MobileNetV1
from mnet_tasks.config import ConfigError
from mnet_tasks.data.drawing import SHAPE_NAMES
from mnet_tasks.export import export
from mnet_tasks.hf_export import hub_architecture, label_names
from mnet_tasks.trained import load_trained

CLASSIFICATION = TINY_DATA["classification"]
# What Hydra's app writes into a run folder (train_tiny composes in-process and writes none).
OVERRIDES = "- backbone.alpha={alpha}\n- data.root=/data/my shapes\n"
# Loads both folders in a fresh process: timm's own architecture before anything imports mnet_tasks, ours after.
LOADER = """
import sys
import timm
import torch

images_path, timm_folder, own_folder, out_path = sys.argv[1:]
images = torch.load(images_path)
with torch.inference_mode():
    timm_model = timm.create_model("local-dir:" + timm_folder, pretrained=True).eval()
    timm_logits = timm_model(images)
    data_config = timm.data.resolve_data_config({}, model=timm_model)
    try:
        timm.create_model("local-dir:" + own_folder, pretrained=True)
        unknown_without_mnet_tasks = False
    except RuntimeError as error:
        unknown_without_mnet_tasks = "Unknown model" in str(error)
    timm_alone = "mnet_tasks" not in sys.modules
    import mnet_tasks  # noqa: F401  registers mnet_mobilenet_v1_*
    own_model = timm.create_model("local-dir:" + own_folder, pretrained=True).eval()
    own_logits = own_model(images)
torch.save(
    {
        "timm_logits": timm_logits,
        "own_logits": own_logits,
        "classes": [type(timm_model).__name__, type(own_model).__name__],
        "timm_alone": timm_alone,
        "unknown_without_mnet_tasks": unknown_without_mnet_tasks,
        "data_config": {key: list(value) if isinstance(value, tuple) else value for key, value in data_config.items()},
    },
    out_path,
)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir) -> dict[float, tuple[Path, dict, list[str]]]:
    """One-epoch checkpoints at α 1.0 (timm's mobilenetv1_100) and 0.25 (ours), each exported with format=hf: the
    checkpoint, the export report and the data overrides, by α."""
    runs = {}
    for alpha in (1.0, 0.25):
        run_dir = tmp_path_factory.mktemp(f"alpha_{alpha}")
        checkpoint, data, _ = train_tiny([*CLASSIFICATION, f"backbone.alpha={alpha}"], run_dir, data_dir)
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text(OVERRIDES.format(alpha=alpha))
        cheap_latency = ["hf.latency_batches=[1,2]", "hf.latency_runs=1"]
        runs[alpha] = checkpoint, export(export_config(checkpoint, *data, "format=hf", *cheap_latency)), data
    return runs


def test_timm_loads_timms_width_alone_and_ours_after_import_with_the_checkpoints_logits(exported, tmp_path):
    (timm_checkpoint, timm_report, _), (own_checkpoint, own_report, _) = exported[1.0], exported[0.25]
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.save(images, tmp_path / "images.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    folders = [timm_report["model"], own_report["model"]]
    command = [sys.executable, "-c", LOADER, str(tmp_path / "images.pt"), *folders, str(tmp_path / "out.pt")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.load(tmp_path / "out.pt")

    assert loaded["timm_alone"] and loaded["unknown_without_mnet_tasks"]
    assert loaded["classes"] == ["EfficientNet", "MobileNetV1"]  # timm's own network, then ours
    expected_timm, expected_own = (
        reference_outputs(timm_checkpoint, images)[0],
        reference_outputs(own_checkpoint, images)[0],
    )
    assert expected_timm.abs().max() > 1e-3 and expected_own.abs().max() > 1e-3
    torch.testing.assert_close(loaded["timm_logits"], expected_timm, atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded["own_logits"], expected_own, atol=1e-5, rtol=0)
    # timm's preprocessing from config.json is the run's validation transform
    assert loaded["data_config"] == {
        "input_size": [3, 64, 64],
        "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "crop_pct": 0.875,
        "crop_mode": "center",
    }


def test_folder_holds_timm_config_unfolded_weights_and_a_model_card(exported):
    checkpoint, report, _ = exported[1.0]
    folder = Path(report["model"])
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert report["parity"]["passed"] and report["hf"]["architecture"] == "mobilenetv1_100"
    assert Path(report["model"]).with_name("last_hf.export.json").is_file()

    config = json.loads((folder / "config.json").read_text())
    module = load_trained(checkpoint, crop_pct=1.0).module
    assert config["architecture"] == "mobilenetv1_100" and config["num_classes"] == 4
    assert config["num_features"] == 1024 and config["model_args"] == {"drop_rate": 0.001}
    assert config["label_names"] == sorted(SHAPE_NAMES[:4])  # the synthetic data's class folders, in label order
    pretrained_cfg = config["pretrained_cfg"]
    assert pretrained_cfg["input_size"] == [3, 64, 64] and pretrained_cfg["crop_pct"] == 0.875
    assert {"mean": pretrained_cfg["mean"], "std": pretrained_cfg["std"]} == module.normalize
    assert pretrained_cfg["first_conv"] == "conv_stem" and pretrained_cfg["num_classes"] == 4

    # timm's names and shapes; BatchNorm unfolded (its statistics kept), the checkpoint's values
    weights = load_file(folder / "model.safetensors")
    reference = timm.create_model("mobilenetv1_100", num_classes=4).state_dict()
    assert {key: tensor.shape for key, tensor in weights.items()} == {key: t.shape for key, t in reference.items()}
    torch.testing.assert_close(weights["blocks.3.5.bn2.running_var"], module.backbone.blocks[10].pw.bn.running_var)
    torch.testing.assert_close(weights["conv_stem.weight"], module.backbone.stem.conv.weight)

    card = (folder / "README.md").read_text()
    record = json.loads((checkpoint.parents[1] / "metrics.json").read_text())
    assert card.startswith("---\nlibrary_name: timm\nlicense: apache-2.0\n")
    for name, value in record["metrics"]["final"].items():
        assert f"| `{name}` | {value:.4f} | {record['metrics']['best'][name]:.4f} |" in card
    assert f"{record['madds'] / 1e6:.1f} M" in card and "synthetic_shapes" in card and "`mobilenetv1_100`" in card
    assert "python -m mnet_tasks backbone.alpha=1.0 'data.root=/data/my shapes'" in card
    assert "| 1 |" in card and "| 2 |" in card  # the latency at each batch size
    assert "import mnet_tasks" not in card  # timm alone loads it


def test_other_widths_and_ablations_use_our_registered_architecture_with_model_args(exported):
    _, report, _ = exported[0.25]
    config = json.loads((Path(report["model"]) / "config.json").read_text())
    assert config["architecture"] == "mnet_mobilenet_v1_025"
    assert config["model_args"] == {
        "alpha": 0.25,
        "min_depth": 8,
        "activation": "relu6",
        "separable": True,
        "shallow": False,
        "drop_rate": 0.001,
    }
    assert "import mnet_tasks" in (Path(report["model"]) / "README.md").read_text()

    relu = hub_architecture(MobileNetV1(alpha=1.0, activation="relu"), {"alpha": 1.0, "activation": "relu"})
    assert (relu.name, relu.model_args) == ("mnet_mobilenet_v1_100", {"alpha": 1.0, "activation": "relu"})
    assert hub_architecture(MobileNetV1(alpha=1.0, shallow=True), {"shallow": True}).name == "mnet_mobilenet_v1_100"
    between = hub_architecture(MobileNetV1(alpha=0.35, num_classes=3), {"alpha": 0.35, "pretrained": None})
    assert (between.name, between.model_args) == ("mnet_mobilenet_v1_025", {"alpha": 0.35})
    built = timm.create_model(between.name, num_classes=3, **between.model_args)
    built.load_state_dict(between.state_dict)  # strict: every name and shape fits
    assert built.alpha == 0.35


def test_label_names_come_from_the_dataset_the_run_trained_on_only(exported, tmp_path):
    checkpoint, _, data = exported[0.25]
    trained = load_trained(checkpoint, crop_pct=0.875)
    assert label_names(export_config(checkpoint, *data), trained, "synthetic_shapes") == sorted(SHAPE_NAMES[:4])
    assert label_names(export_config(checkpoint, *data), trained, "imagenet") == []  # the run says another dataset
    assert label_names(export_config(checkpoint, *data, f"data.root={tmp_path}"), trained, None) == []  # no files


def test_alpha_125_is_timms_mobilenetv1_125_with_its_names_and_shapes():
    architecture = hub_architecture(MobileNetV1(alpha=1.25, num_classes=10), {"alpha": 1.25})
    reference = timm.create_model("mobilenetv1_125", num_classes=10).state_dict()
    assert architecture.name == "mobilenetv1_125"
    assert {key: t.shape for key, t in architecture.state_dict.items()} == {
        key: t.shape for key, t in reference.items()
    }


def test_a_non_classifier_checkpoint_is_refused_naming_format_hf(tmp_path, data_dir):
    checkpoint, data, _ = train_tiny(tiny_data("attributes"), tmp_path / "run", data_dir)
    with pytest.raises(ConfigError, match=r"format=hf .* attributes model is not one: it has 1 sigmoid head"):
        export(export_config(checkpoint, *data, "format=hf", f"output_dir={tmp_path / 'export'}"))
    assert not (tmp_path / "export").exists()
