"""Pretrained weights bring their preprocessing: every task normalises its inputs with the mean and std of the
weights ``backbone.pretrained`` names, and records them for export and for runs that start from its checkpoint."""

from __future__ import annotations

import pytest
import timm
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file

from mnet_tasks import weights
from mnet_tasks.config import compose_config
from mnet_tasks.model_card import CARD_KEY
from mnet_tasks.registry import CHECKPOINT_KEY, registered_name
from mnet_tasks.task_module import build_task
from mnet_tasks.trained import load_trained

TIMM_WEIGHTS = "timm:mobilenetv1_100.ra4_e3600_r224_in1k"  # timm's pretrained_cfg: inputs in [-1, 1]
HALF = {"mean": [0.5] * 3, "std": [0.5] * 3}
# Each built-in task on a few synthetic images.
TASKS = {
    "classification": ["num_classes=2", "train_per_class=2", "val_per_class=2", "image_size=48"],
    "finegrained": ["num_classes=2", "train_per_class=2", "test_per_class=2", "image_size=64"],
    "attributes": ["train_images=4", "unlabeled_images=0", "val_images=4", "test_images=0", "image_width=48"],
    "geolocalization": ["train_size=200", "test_size=4", "image_size=48"],
    "detection": ["train_images=2", "val_images=2", "image_size=96"],
    "detection_frcnn": ["train_images=2", "val_images=2", "image_size=96"],
}


def first_images(loader) -> torch.Tensor | list[torch.Tensor]:
    batch = next(iter(loader))
    return batch["image"] if isinstance(batch, dict) else batch[0]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_timm_named_weights_bring_their_mean_and_std_to_the_data_and_the_model(task, tmp_path, data_dir, monkeypatch):
    random_timm = timm.create_model("mobilenetv1_100").state_dict()  # timm's layout; nothing is downloaded
    monkeypatch.setattr(weights, "timm_state_dict", lambda name: random_timm)
    cfg = compose_config(
        [
            f"task={task}",
            f"backbone.pretrained={TIMM_WEIGHTS}",
            "backbone.alpha=1.0",
            "backbone.resolution=64",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path}",
            *(f"data.synthetic.{size}" for size in TASKS[task]),
        ]
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_task(cfg, **datamodule.head_kwargs())
    assert module.normalize == HALF and module.hparams.normalize == HALF  # recorded in the checkpoint
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        images = first_images(loader)  # uint8 out of the loader, made the network's input on the device
        prepared = module.on_after_batch_transfer((images, None), 0)[0]
        if task.startswith("detection"):  # [0, 1] images: the detectors normalise themselves
            transform = module.detector.transform
            assert (transform.image_mean, transform.image_std) == (HALF["mean"], HALF["std"])
            torch.testing.assert_close(prepared[0], images[0].float() / 255)
        else:
            assert images.dtype == torch.uint8 and prepared.dtype == torch.float32
            torch.testing.assert_close(prepared, images.float() / 255 * 2 - 1)  # (x - 0.5) / 0.5

    # a checkpoint of this run carries them on: into its export's card, and into a run that starts from it
    checkpoint = tmp_path / "run.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            CHECKPOINT_KEY: {"task_class": registered_name(type(module))},
        },
        checkpoint,
    )
    card = load_trained(checkpoint, crop_pct=1.0).card
    assert (card.mean, card.std) == (HALF["mean"], HALF["std"])
    assert dict(compose_config([f"task={task}", f"backbone.pretrained={checkpoint}"]).normalize) == HALF


def test_files_that_record_their_preprocessing_are_read_and_others_default_to_imagenet(tmp_path):
    exported = tmp_path / "model.safetensors"
    save_file(
        {"w": torch.zeros(1)}, exported, metadata={CARD_KEY: '{"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}'}
    )
    assert weights.pretrained_normalize(str(exported)) == {"mean": [0.5] * 3, "std": [0.25] * 3}
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(1)}, plain)
    assert weights.pretrained_normalize(str(plain)) == weights.IMAGENET_NORMALIZE
    assert weights.pretrained_normalize(None) == weights.IMAGENET_NORMALIZE
    assert list(compose_config(["normalize.mean=[0.1,0.2,0.3]"]).normalize.mean) == [0.1, 0.2, 0.3]  # set by hand


def test_unreadable_weights_are_named_when_the_config_is_resolved(tmp_path):
    cfg = compose_config([f"backbone.pretrained={tmp_path / 'missing.pth'}"])
    with pytest.raises(Exception, match=r"backbone.pretrained=.*missing.pth: its input normalisation cannot be read"):
        cfg.normalize.mean  # noqa: B018
    with pytest.raises(Exception, match="timm has no pretrained config named 'no_such_model'"):
        compose_config(["backbone.pretrained=timm:no_such_model"]).normalize.std  # noqa: B018
