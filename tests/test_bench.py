"""The latency benchmark's table: every row is compared with the anchor measured in the same format."""

from mnet_tasks import MobileNetV1
from mnet_tasks.bench import benchmark, detection_models, format_table


def test_benchmark_rows_and_ratios_against_the_anchor():
    models = {"anchor": lambda: MobileNetV1(alpha=0.5), "thin": lambda: MobileNetV1(alpha=0.25)}
    rows = benchmark(models, size=64, batch=1, repeats=3, warmup=1)
    assert [(r["model"], r["format"]) for r in rows] == [
        ("anchor", "NCHW"),
        ("thin", "NCHW"),
        ("anchor", "channels_last"),
        ("thin", "channels_last"),
    ]
    assert all(r["ms"] > 0 for r in rows)
    assert rows[1]["madds"] < rows[0]["madds"]
    table = format_table(rows, anchor="anchor").splitlines()
    assert table[1].endswith("1.00x") and table[3].endswith("1.00x")
    expected = rows[1]["ms"] / rows[0]["ms"]
    assert table[2].endswith(f"{expected:.2f}x")


def test_detection_benchmark_runs_ssd_beside_torchvisions_ssdlite():
    anchor, models = detection_models([0.25], size=128)
    rows = benchmark(models, size=128, batch=1, repeats=2, warmup=1)
    assert {r["model"] for r in rows} == {anchor, "mnet_tasks SSD128 a=0.25"}
    ours = next(r for r in rows if r["model"] != anchor)
    assert ours["params"] == sum(p.numel() for p in models[ours["model"]]().parameters())
