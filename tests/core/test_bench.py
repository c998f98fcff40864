"""The benchmark harness: quick mode writes every column, ratios come from the same run, timing interleaves."""

from __future__ import annotations

import csv

import pytest

from mnet_tasks.bench import COLUMNS, RUNTIMES, Subject, Timer, main, model_overrides, time_interleaved
from mnet_tasks.training_bench import LOADER_COLUMNS, TRAINING_COLUMNS


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) in (COLUMNS, TRAINING_COLUMNS, LOADER_COLUMNS)
        return list(reader)


def test_quick_mode_writes_every_column_for_every_model_and_runtime(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("MNET_DATA_DIR", str(data_dir))  # the training benchmark's synthetic data
    main(["--quick", "--threads", "1", "--anchors", "timm_mobilenetv1_100", "--out-dir", str(tmp_path)])

    rows = read_rows(tmp_path / "bench.csv")
    ours = "mnet_tasks MobileNetV1 a=0.25"
    assert [(row["model"], row["runtime"]) for row in rows] == [
        (model, runtime) for model in ("timm_mobilenetv1_100", ours) for runtime in RUNTIMES
    ]
    assert all(row[column] != "" for row in rows for column in COLUMNS if column not in ("alpha",))
    latency = {(row["model"], row["runtime"]): float(row["latency_ms"]) for row in rows}
    for row in rows:
        expected = latency[row["model"], row["runtime"]] / latency["timm_mobilenetv1_100", row["runtime"]]
        assert float(row["latency_vs_anchor"]) == pytest.approx(expected)
        assert float(row["throughput_images_per_s"]) > 0 and row["throughput_batch"] == "4"
        assert row["input_size"] == "64" and row["threads"] == "1"
    assert float(next(r for r in rows if r["model"] == ours)["madds"]) < float(rows[0]["madds"])

    training = {row["loop"]: row for row in read_rows(tmp_path / "training.csv")}
    assert list(training) == ["bare step", "bare step NCHW", "bare loop", "lightning", "run"]
    assert all(float(row["images_per_s"]) > 0 and row["input_size"] == "64" for row in training.values())
    assert [row["memory_format"] for row in training.values()] == ["channels_last", "NCHW", *["channels_last"] * 3]
    step, loop = (float(training[name]["images_per_s"]) for name in ("bare step", "bare loop"))
    for name, row in training.items():  # every ratio against the anchors of the same run
        assert float(row["vs_step"]) == pytest.approx(float(row["images_per_s"]) / step)
        expected = float(row["images_per_s"]) / loop if name in ("lightning", "run") else None
        assert (float(row["vs_loop"]) if row["vs_loop"] else None) == pytest.approx(expected)
    assert 0 <= float(training["bare loop"]["data_wait"]) < 1
    # one round of 2 timed steps per loop; the anchor also takes a turn right before and after the run
    steps = {name: row["steps"] for name, row in training.items()}
    assert steps == {"bare step": "6", "bare step NCHW": "2", "bare loop": "2", "lightning": "2", "run": ""}

    loader = {row["pipeline"]: row for row in read_rows(tmp_path / "loader.csv")}
    assert list(loader) == ["PIL decode (full size)", "train pipeline", "val pipeline"]
    decode = float(loader["PIL decode (full size)"]["ms_per_image"])
    for row in loader.values():
        assert float(row["vs_decode"]) == pytest.approx(decode / float(row["ms_per_image"]))
        assert float(row["images_per_s"]) == pytest.approx(1000 / float(row["ms_per_image"]))

    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.count(f"| {ours} | 64 |") == len(RUNTIMES)
    assert f"- {ours} (64px): " in markdown  # its int8 speed-up
    assert "| lightning | channels_last |" in markdown and "| bare step | channels_last |" in markdown
    assert "At 64px: 2 worker(s) x" in markdown and "limits a run" in markdown


def test_train_models_become_overrides():
    assert model_overrides([]) == [[]]
    assert model_overrides(["1.0@224", "0.25@128"]) == [
        ["backbone.alpha=1.0", "backbone.resolution=224"],
        ["backbone.alpha=0.25", "backbone.resolution=128"],
    ]
    with pytest.raises(SystemExit, match="not ALPHA@SIZE"):
        model_overrides(["0.25x128"])


def test_timers_take_turns_within_each_round():
    calls = []
    timers = [
        Timer(Subject(name, lambda: None, 32, None), "eager_nchw", 1, lambda name=name: calls.append(name))
        for name in "ab"
    ]
    time_interleaved(timers, warmup=2, rounds=2, per_round=2)
    # warm-up, then per round and timer one untimed call (caches) and two timed ones
    assert calls == ["a", "a", "b", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert [len(timer.times) for timer in timers] == [4, 4]


@pytest.mark.slow
def test_quick_mode_exports_and_quantizes_every_anchor(tmp_path):
    main(["--quick", "--threads", "1", "--no-training", "--no-loader", "--out-dir", str(tmp_path)])
    rows = read_rows(tmp_path / "bench.csv")
    models = ["timm_mobilenetv1_100", "torchvision_mobilenet_v2", "torchvision_mobilenet_v3_large"]
    assert [row["model"] for row in rows] == [m for m in [*models, "mnet_tasks MobileNetV1 a=0.25"] for _ in RUNTIMES]
    assert all(float(row["latency_ms"]) > 0 for row in rows)
    assert not (tmp_path / "training.csv").exists()


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_compile_both_ways(tmp_path, data_dir, monkeypatch):
    """The GPU check's every path (loader, loops, torch.compile) on this CPU: the script is tested where no GPU is."""
    monkeypatch.setenv("MNET_DATA_DIR", str(data_dir))
    tiny = [
        "trainer=cpu",
        "data.synthetic.num_classes=4",
        "data.synthetic.train_per_class=8",
        "data.synthetic.val_per_class=2",
        "data.synthetic.image_size=48",
        "data.batch_size=8",
    ]
    small = ["--train-models", "0.25@64", "--train-steps", "2", "--train-warmup", "1", "--train-workers", "1"]
    loader = ["--loader-sizes", "64", "--loader-images", "4", "--loader-rounds", "1"]
    main(["--gpu-check", "--train-overrides", *tiny, *small, *loader, "--out-dir", str(tmp_path)])
    training = {row["loop"]: row for row in read_rows(tmp_path / "training.csv")}
    assert list(training) == ["bare step", "bare step NCHW", "bare loop", "lightning", "lightning + compile"]
    assert all(float(row["images_per_s"]) > 0 for row in training.values())
    assert not (tmp_path / "bench.csv").exists()  # no inference tables in the GPU check
    assert "data wait" in (tmp_path / "bench.md").read_text()
