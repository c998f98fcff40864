"""Pretrained weights: timm names, local files in every supported format, and clear errors."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from mnet_tasks import MobileNetV1, load_pretrained
from mnet_tasks import weights as weights_module


def _random_timm_mobilenetv1() -> torch.nn.Module:
    torch.manual_seed(1)
    return timm.create_model("mobilenetv1_100", num_classes=1000)


def _same_body(model: MobileNetV1, reference: MobileNetV1) -> bool:
    ours, theirs = model.state_dict(), reference.state_dict()
    return all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("classifier."))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".ckpt"])
def test_local_files_load_with_a_new_head(tmp_path, suffix):
    source = MobileNetV1(alpha=0.25, num_classes=10)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), path)
    elif suffix == ".ckpt":  # a Lightning checkpoint of a task module holding the model as `backbone`
        torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    else:
        torch.save(source.state_dict(), path)
    target = MobileNetV1(alpha=0.25, num_classes=4)
    load_pretrained(target, path)
    assert _same_body(target, source)
    assert target.classifier.weight.shape == (4, 256)  # a different class count keeps the fresh head


def test_timm_files_and_names_are_converted(tmp_path, monkeypatch):
    reference = _random_timm_mobilenetv1()
    path = tmp_path / "timm_mobilenetv1_100.pth"
    torch.save(reference.state_dict(), path)
    from_file = MobileNetV1()
    load_pretrained(from_file, path)
    # the `timm:` form asks timm for the weights (a download when online); here timm is asked offline
    monkeypatch.setattr(weights_module, "timm_state_dict", lambda name: reference.state_dict())
    from_name = MobileNetV1()
    load_pretrained(from_name, "timm:mobilenetv1_100.ra4_e3600_r224_in1k")
    assert torch.equal(from_file.classifier.weight, reference.classifier.weight)
    assert _same_body(from_name, from_file)


def test_checkpoints_that_need_unpickling_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": MobileNetV1(alpha=0.25).state_dict(), "extra": object()}, path)
    with pytest.raises(Exception, match=r"weights_only|Unsupported global|WeightsUnpickler"):
        load_pretrained(MobileNetV1(alpha=0.25), path)


def test_wrong_alpha_and_missing_file_are_named(tmp_path):
    path = tmp_path / "alpha050.pth"
    torch.save(MobileNetV1(alpha=0.5).state_dict(), path)
    with pytest.raises(ValueError, match=r"alpha050\.pth.*different alpha"):
        load_pretrained(MobileNetV1(alpha=0.25), path)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_pretrained(MobileNetV1(alpha=0.25), tmp_path / "nowhere.pth")


def test_features_only_model_loads_a_full_checkpoint(tmp_path):
    source = MobileNetV1(alpha=0.25)
    path = tmp_path / "full.pth"
    torch.save(source.state_dict(), path)
    detector_backbone = MobileNetV1(alpha=0.25, features_only=True, out_indices=(3,))
    load_pretrained(detector_backbone, path)
    assert torch.equal(detector_backbone.blocks[10].pw.conv.weight, source.blocks[10].pw.conv.weight)
