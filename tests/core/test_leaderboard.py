"""Leaderboards: runs and paper rows into leaderboard.csv, LEADERBOARD.md and leaderboard.png; the CSV schema."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import QUICK, run_cli

from mnet_tasks.leaderboard import COLUMNS, LeaderboardError, cost_bracket, read_rows
from mnet_tasks.leaderboard import main as leaderboard_main

REPO = Path(__file__).resolve().parents[2]
TASK_FOLDERS = sorted(path for path in (REPO / "tasks").iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir) -> Path:
    """A finished 2x1 multirun (two widths, one input size), one epoch each, and its summary.csv."""
    cwd = tmp_path_factory.mktemp("sweep")
    run_cli(["-m", *QUICK, f"paths.data_dir={data_dir}", "trainer.max_epochs=1", "backbone.alpha=0.25,0.5"], cwd=cwd)
    (folder,) = (cwd / "outputs" / "classification" / "multiruns").iterdir()
    with (folder / "summary.csv").open(newline="") as handle:
        assert [(row["status"], row["backbone.alpha"]) for row in csv.DictReader(handle)] == [
            ("completed", "0.25"),
            ("completed", "0.5"),
        ]
    return folder


def _records(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*/metrics.json"))]


def test_leaderboard_puts_the_runs_beside_the_paper_rows_and_keeps_them_when_re_rendered(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(sweep.parents[3])  # where the sweep ran: the rows name its run folders from here
    tasks = tmp_path / "tasks"
    (tasks / "classification").mkdir(parents=True)
    shutil.copy(REPO / "tasks" / "classification" / "paper.csv", tasks / "classification")
    paper_rows = read_rows(tasks / "classification" / "paper.csv")

    leaderboard_main([str(sweep), "--tasks-dir", str(tasks), "--latency-repeats", "3"])

    board = tasks / "classification"
    rows = read_rows(board / "leaderboard.csv")
    ours = [row for row in rows if row["source"] == "ours"]
    assert len(rows) == len(paper_rows) + 2
    records = _records(sweep)
    assert [(row["model"], row["madds"], row["params"]) for row in ours] == [
        (f"MobileNetV1 {r['alpha']:g}-64", r["madds"], r["params"]) for r in records
    ]
    assert [row["val/top1"] for row in ours] == pytest.approx([r["metrics"]["final"]["val/top1"] for r in records])
    assert all(row["latency_ms"] > 0 and row["latency_threads"] == 1 for row in ours)
    assert all(row["checkpoint_bytes"] > 0 and row["epochs"] == 1 and row["commit"] for row in ours)
    assert [row["run"] for row in ours] == [f"outputs/classification/multiruns/{sweep.name}/{job}" for job in (0, 1)]

    markdown = (board / "LEADERBOARD.md").read_text()
    assert "## ours: synthetic_shapes (val)" in markdown and "## paper: ImageNet (val)" in markdown
    assert "![val/top1 against MAdds and parameters](leaderboard.png)" in markdown
    assert "| MobileNetV1 0.25-64 |" in markdown and "| Conv MobileNet | Table 4 |" in markdown
    assert (board / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (board / "leaderboard.png").unlink()
    leaderboard_main(["--task", "classification", "--tasks-dir", str(tasks)])  # no runs: re-render what is there
    assert read_rows(board / "leaderboard.csv") == rows
    assert (board / "leaderboard.png").is_file()


def test_a_task_without_paper_rows_gets_a_leaderboard_from_its_records_alone(sweep, tmp_path):
    """A plug-in task: its name, primary metric and direction come from the records; the best per MAdds bracket
    is the lowest when its monitor_mode is min."""
    runs = tmp_path / "runs"
    for number, (record, score) in enumerate(zip(_records(sweep), (0.3, 0.2), strict=True)):
        for index, offset in enumerate((0.0, 0.1)):  # two models in each MAdds bracket
            job = runs / f"{number}{index}"
            job.mkdir(parents=True)
            metrics = {"val/error": score + offset, "val/other": 1.0}
            plugin = {**record, "task": "my_task", "monitor": "val/error", "monitor_mode": "min", "checkpoint": None}
            plugin["metrics"] = {"final": metrics, "best": metrics}
            (job / "metrics.json").write_text(json.dumps(plugin))

    leaderboard_main([str(runs), "--tasks-dir", str(tmp_path / "tasks")])

    rows = read_rows(tmp_path / "tasks" / "my_task" / "leaderboard.csv")
    assert [row["val/error"] for row in rows] == pytest.approx([0.3, 0.4, 0.2, 0.3])
    assert all(row["latency_ms"] is None for row in rows)  # no checkpoint to time
    markdown = (tmp_path / "tasks" / "my_task" / "LEADERBOARD.md").read_text()
    assert markdown.count("**0.3**") == 1 and markdown.count("**0.2**") == 1  # lower is better: 0.3 and 0.2 win
    assert "val/other" in markdown and "## paper" not in markdown


def test_cost_brackets_step_1_3_10():
    assert cost_bracket(14e6) == (10e6, 30e6)
    assert cost_bracket(30e6) == (30e6, 100e6)
    assert cost_bracket(569e6) == (300e6, 1000e6)


def _write(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_leaderboard_csv_errors_name_the_file_and_line(tmp_path):
    header = "source,model,dataset,split,monitor,monitor_mode,val/top1,madds,params"
    good = "paper,m,d,val,val/top1,max,0.5,1000,10"
    with pytest.raises(LeaderboardError, match=r"bad\.csv, line 3: source must be one of"):
        read_rows(_write(tmp_path / "bad.csv", header, good, "theirs,m,d,val,val/top1,max,0.5,1000,10"))
    with pytest.raises(LeaderboardError, match=r"line 2: no value for its monitor 'val/top1'"):
        read_rows(_write(tmp_path / "bad.csv", header, "paper,m,d,val,val/top1,max,,1000,10"))
    with pytest.raises(LeaderboardError, match=r"line 2: madds='many' is not a number"):
        read_rows(_write(tmp_path / "bad.csv", header, "paper,m,d,val,val/top1,max,0.5,many,10"))
    with pytest.raises(LeaderboardError, match=r"bad\.csv: no column params"):
        read_rows(_write(tmp_path / "bad.csv", header.removesuffix(",params"), good.removesuffix(",10")))


def test_a_leaderboard_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text(
        "source,model,dataset,split,monitor,monitor_mode,val/top1,madds,params\npaper,m,d,val,val/top1,max,0.5,1000,10\n",
        encoding="utf-8-sig",
    )
    assert read_rows(path)[0]["source"] == "paper"


@pytest.mark.parametrize("folder", TASK_FOLDERS, ids=[path.name for path in TASK_FOLDERS])
def test_committed_leaderboards_and_paper_rows_follow_the_schema(folder):
    paper = folder / "paper.csv"
    if paper.is_file():
        rows = read_rows(paper)
        assert rows and all(row["source"] == "paper" and row["madds"] > 0 and row["params"] > 0 for row in rows)
    board = folder / "leaderboard.csv"
    if board.is_file():
        with board.open(newline="") as handle:
            header = next(csv.reader(handle))
        assert [column for column in header if column in COLUMNS] == list(COLUMNS)
        rows = read_rows(board)
        assert any(row["source"] == "ours" for row in rows)
        assert (folder / "LEADERBOARD.md").is_file() and (folder / "leaderboard.png").is_file()
