"""The benchmark harness: quick mode writes every column, ratios come from the same run, timing interleaves."""

from __future__ import annotations

import csv

import pytest

from mnet_tasks.bench import (
    COLUMNS,
    RUNTIMES,
    TRAINING_COLUMNS,
    Subject,
    Timer,
    main,
    time_interleaved,
)


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == COLUMNS or tuple(reader.fieldnames) == TRAINING_COLUMNS
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

    training = read_rows(tmp_path / "training.csv")
    assert [row["loop"] for row in training] == ["lightning", "bare"]
    assert all(row[column] != "" for row in training for column in TRAINING_COLUMNS)
    bare = float(training[1]["images_per_s"])
    assert float(training[0]["vs_bare"]) == pytest.approx(float(training[0]["images_per_s"]) / bare)

    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.count(f"| {ours} | 64 |") == len(RUNTIMES)
    assert f"- {ours} (64px): " in markdown  # its int8 speed-up
    assert "| lightning |" in markdown and "| bare |" in markdown


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
    main(["--quick", "--threads", "1", "--no-training", "--out-dir", str(tmp_path)])
    rows = read_rows(tmp_path / "bench.csv")
    models = ["timm_mobilenetv1_100", "torchvision_mobilenet_v2", "torchvision_mobilenet_v3_large"]
    assert [row["model"] for row in rows] == [m for m in [*models, "mnet_tasks MobileNetV1 a=0.25"] for _ in RUNTIMES]
    assert all(float(row["latency_ms"]) > 0 for row in rows)
    assert not (tmp_path / "training.csv").exists()
