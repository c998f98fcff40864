"""predict: a checkpoint (PyTorch) and its ONNX export label a folder of images alike and write CSV and JSON."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUICK

from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.data.images import read_rgb
from mnet_tasks.export import export
from mnet_tasks.predict import main, predict
from mnet_tasks.run import run
from mnet_tasks.trained import (
    compose_for_checkpoint,
    load_trained,
)

TINY = [*QUICK, "trainer.max_epochs=1"]
NOT_PREDICTED = ("notes.txt", "broken.jpg")


@pytest.fixture(scope="module")
def model(tmp_path_factory, data_dir) -> dict[str, Path]:
    """A tiny classification checkpoint, its ONNX export and a folder of its validation images, one of them
    nested, one broken, and a file that is no image."""
    root = tmp_path_factory.mktemp("predict")
    data = [*TINY, f"paths.data_dir={data_dir}"]
    run(compose_config([*data, f"paths.output_dir={root / 'run'}"]))
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    export(compose_for_checkpoint("export", [f"ckpt_path={checkpoint}", f"output_dir={root / 'export'}"], "ckpt_path"))
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    val_images = sorted(next(data_dir.glob("synthetic_shapes*")).glob("val/*/*.jpg"))[::4]
    for index, path in enumerate(val_images):
        shutil.copy(path, images / ("nested" if index == 0 else "") / path.name)
    (images / "broken.jpg").write_bytes(b"not an image")
    (images / "notes.txt").write_text("not an image either")
    return {"checkpoint": checkpoint, "onnx": root / "export" / "last.onnx", "images": images}


def predict_with(model_path: Path, images: Path, output_dir: Path) -> dict:
    overrides = [f"model={model_path}", f"images={images}", f"output_dir={output_dir}", "num_workers=0", "batch_size=3"]
    return predict(compose_for_checkpoint("predict", overrides, "model"))


def test_checkpoint_and_onnx_predict_the_same_and_write_both_files(model, tmp_path):
    from_checkpoint = predict_with(model["checkpoint"], model["images"], tmp_path / "ckpt")
    from_onnx = predict_with(model["onnx"], model["images"], tmp_path / "onnx")
    readable = sorted(str(p) for p in model["images"].rglob("*.jpg") if p.name != "broken.jpg")

    for result, folder in ((from_checkpoint, tmp_path / "ckpt"), (from_onnx, tmp_path / "onnx")):
        assert sorted(record["image"] for record in result["predictions"]) == readable
        # every file is predicted or listed with why not: the file no reader takes, then the unreadable image
        assert [entry["image"] for entry in result["skipped"]] == [str(model["images"] / n) for n in NOT_PREDICTED]
        assert "extension not supported" in result["skipped"][0]["error"]
        assert json.loads((folder / "predictions.json").read_text()) == result
        with open(folder / "predictions.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        assert [row["image"] for row in rows] == [record["image"] for record in result["predictions"]]
        assert list(rows[0]) == ["image", "label", "probability", "top_k"]
        assert all(len(row["top_k"].split()) == 4 for row in rows)  # 4 classes, fewer than top_k=5
    assert from_checkpoint["runtime"].startswith("pytorch") and from_onnx["runtime"] == "onnxruntime"
    for ours, theirs in zip(from_checkpoint["predictions"], from_onnx["predictions"], strict=True):
        assert ours["label"] == theirs["label"]
        assert ours["probability"] == pytest.approx(theirs["probability"], abs=1e-4)

    # the label is the checkpoint's own forward on the validation preprocessing of the image
    trained = load_trained(model["checkpoint"], crop_pct=0.875)
    first = from_checkpoint["predictions"][0]
    image = trained.card.transform()(image=read_rgb(first["image"]))["image"]
    with torch.inference_mode():
        probabilities = trained.reference()(image[None])[1][0]
    assert first["label"] == str(int(probabilities.argmax()))
    assert first["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)


def test_the_command_writes_to_its_default_folder_and_logs_skipped_images(model, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.chdir(tmp_path)
    main([f"model={model['onnx']}", f"images={model['images']}", "num_workers=0"])
    assert "broken.jpg" in caplog.text and "notes.txt" in caplog.text
    assert "2 skipped" in capsys.readouterr().out
    assert (tmp_path / "predictions" / "predictions.csv").is_file()
    assert (tmp_path / "predictions" / "predictions.json").is_file()


def test_bad_inputs_name_the_key(model, tmp_path):
    with pytest.raises(ConfigError, match="images: no folder"):
        predict_with(model["onnx"], tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="images: no image files"):
        predict_with(model["onnx"], tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="model: no file"):
        predict_with(tmp_path / "absent.onnx", model["images"], tmp_path / "out")
    with pytest.raises(ConfigError, match="model is required"):
        compose_for_checkpoint("predict", [f"images={model['images']}"], "model")
