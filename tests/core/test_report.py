"""report.html: a run's page (from run() and from the command), a sweep's page, and the page in a real browser."""

import base64
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import QUICK
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError
from PIL import Image

from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.report import CURVES_CSV, MAX_TABLE_ROWS, SweepReport, read_curves
from mnet_tasks.report import main as report_main
from mnet_tasks.run import run, summary
from mnet_tasks.sweeps import SweepSummary

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package chromium; .ci/run installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Page(HTMLParser):
    """What a test reads of a page: its section titles, tables (header and rows of cell text), images, links,
    figure captions, notes and <pre> blocks."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.source = path.read_text()
        self.sections: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.captions: list[str] = []
        self.notes: list[str] = []
        self.pres: list[str] = []
        self._text: list[str] | None = None
        self._row: list[str] | None = None
        self.feed(self.source)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th", "h2", "figcaption", "pre") or attributes.get("class") == "note":
            self._text = []
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "a":
            self.links.append(attributes["href"])

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text or [])
        if tag in ("td", "th"):
            self._row.append(text)
        elif tag == "tr":
            self.tables[-1].append(self._row)
        elif tag == "h2":
            self.sections.append(text)
        elif tag == "figcaption":
            self.captions.append(text)
        elif tag == "pre":
            self.pres.append(text)
        elif tag == "p" and self._text is not None:
            self.notes.append(text)
        if tag in ("td", "th", "h2", "figcaption", "pre", "p"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def table(self, first_header: str) -> list[list[str]]:
        (table,) = [table for table in self.tables if table and table[0][0] == first_header]
        return table

    def pictures(self) -> list[Image.Image]:
        """Every image, decoded: each must be an embedded PNG."""
        prefix = "data:image/png;base64,"
        assert all(image["src"].startswith(prefix) for image in self.images)
        return [Image.open(io.BytesIO(base64.b64decode(image["src"][len(prefix) :]))) for image in self.images]


def _png(path: Path, width: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, 6), (200, 30, 30)).save(path)


def _record(**changes) -> dict:
    """A metrics.json record as run() writes it."""
    record = {
        "task": "classification",
        "dataset": "synthetic_shapes",
        "split": "val",
        "mode": "train",
        "alpha": 0.25,
        "rho": 0.571,
        "input_size": 64,
        "madds": 3_329_536,
        "params": 214_100,
        "monitor": "val/top1",
        "monitor_mode": "max",
        "metrics": {"final": {"val/top1": 0.5, "val/loss": 1.25}, "best": {"val/top1": 0.625, "val/loss": 1.5}},
        "best_epoch": 0,
        "epochs": 2,
        "checkpoint": None,
        "checkpoint_bytes": None,
        "train_images_per_s": 300.0,
        "commit": "abc1234",
        "date": "2026-11-30T12:00:00+00:00",
        "status": "completed",
        "error": None,
        "output_dir": "somewhere",
        "duration_s": 3.5,
    }
    return {**record, **changes}


def _folder(folder: Path, record: dict | None, overrides: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if record is not None:
        (folder / "metrics.json").write_text(json.dumps(record))
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> tuple[dict, Path]:
    """Two epochs of the quick config, report on: its record and run folder."""
    run_dir = tmp_path_factory.mktemp("report_run")
    overrides = [*QUICK, "report=true", "trainer.max_epochs=2", f"paths.data_dir={data_dir}"]
    return run(compose_config([*overrides, f"paths.output_dir={run_dir}"])), run_dir


@pytest.mark.xdist_group("report_run")
def test_a_run_writes_one_self_contained_page_with_its_metrics_cost_curves_and_config(tiny_run):
    record, run_dir = tiny_run
    report = run_dir / "report.html"
    assert record["report"] == str(report)
    assert f"  report: {report}" in summary(record).splitlines()
    page = Page(report)
    assert page.sections == ["Model and cost", "Metrics", "Curves", "Data", "Config"]

    final, best = record["metrics"]["final"], record["metrics"]["best"]
    names = ["val/top1", *sorted(name for name in final if name != "val/top1")]  # the primary metric first
    assert page.table("metric") == [
        ["metric", "final", f"best (epoch {record['best_epoch']})"],
        *([name, f"{final[name]:.4f}", f"{best[name]:.4f}"] for name in names),
    ]
    cost = dict(page.table("network"))
    assert cost["MAdds"] == f"{record['madds'] / 1e6:.1f} M ({record['madds']:,})"
    assert cost["parameters"] == f"{record['params'] / 1e6:.2f} M ({record['params']:,})"
    assert cost["input size"] == "64 px" and cost["checkpoint"].startswith("checkpoints/epoch")
    assert page.table("")[1:] == [["train", "32"], ["val", "16"]]  # data_report.json: 4 classes x 8 + 4 images

    # the curves: one value per epoch, the same as metrics.json's
    curves = read_curves(run_dir / CURVES_CSV)
    assert list(curves["val/top1"]) == [0, 1]
    assert curves["val/top1"][1] == pytest.approx(final["val/top1"])
    assert curves["val/top1"][record["best_epoch"]] == pytest.approx(best["val/top1"])
    learning_rates = [key for key in curves if key.startswith("lr-")]
    assert learning_rates and all(list(curves[key]) == [0, 1] for key in learning_rates)
    (curves_picture,) = [p for p, i in zip(page.pictures(), page.images, strict=True) if "curves" in i["alt"]]
    assert curves_picture.format == "PNG" and curves_picture.width > 500

    # the config this in-process run was given (it has no .hydra/), resolved
    (config,) = page.pres
    assert f"output_dir: {run_dir}" in config and "max_epochs: 2" in config and "resolution: 64" in config
    # nothing fetched: no script, and every picture, stylesheet or icon is in the page itself
    assert "<script" not in page.source
    assert all(link.startswith("data:") for link in re.findall(r'(?:src|href)="([^"]*)"', page.source))


def test_a_run_that_fails_still_writes_its_page_with_the_error_and_the_config(tmp_path, quick):
    cfg = compose_config([*quick, "backbone.resolution=16", "report=true", f"paths.output_dir={tmp_path}"])
    with pytest.raises(InterpolationResolutionError, match=r"backbone\.resolution must be an integer >= 32"):
        run(cfg)
    page = Page(tmp_path / "report.html")
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"
    assert page.sections == ["Model and cost", "Config"]
    error, config = page.pres
    assert error.startswith("InterpolationResolutionError: ConfigError raised while resolving interpolation")
    assert "resolution: 16" in config and "${mnet.input_size:" in config  # as composed: it does not resolve


def test_a_report_that_fails_is_a_warning_and_the_run_keeps_its_own_error(tmp_path, quick, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr("mnet_tasks.run.write_run_report", broken)
    cfg = compose_config([*quick, "backbone.alpha=-1", "report=true", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"backbone\.alpha"):
        run(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["error"].startswith("ConfigError: backbone.alpha")
    (warning,) = [record for record in caplog.records if record.levelname == "WARNING"]
    assert warning.getMessage() == f"no report written in {tmp_path}" and "the disk is full" in caplog.text


def test_report_false_writes_no_page(tmp_path, quick):
    cfg = compose_config([*quick, "backbone.alpha=-1", "report=false", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"backbone\.alpha"):
        run(cfg)
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / "report.html").exists()


def test_report_command_writes_the_page_of_a_failed_run_folder_escaping_its_text(tmp_path, capsys):
    error = "RuntimeError: <boom> & more"
    run_dir = _folder(tmp_path / "run", _record(status="failed", error=error, metrics={"final": {}, "best": {}}))

    assert report_main([str(run_dir)]) == [run_dir / "report.html"]

    assert capsys.readouterr().out.splitlines() == [str(run_dir / "report.html")]
    page = Page(run_dir / "report.html")
    assert page.sections == ["Model and cost"]  # no metrics, no CSV log, no config
    assert page.pres == [error] and "&lt;boom&gt; &amp; more" in page.source
    assert dict(page.tables[0])["status"] == "failed"


def test_run_page_shows_the_latest_of_each_picture_series_the_analysis_tables_and_the_data_files(tmp_path):
    run_dir = _folder(tmp_path / "run", _record(), ["task=detection", "data.root=/my data"])
    (run_dir / ".hydra" / "config.yaml").write_text("task:\n  name: detection\n")
    for epoch in range(3):
        _png(run_dir / "pictures" / f"detections_epoch{epoch:03d}.png", width=10 + epoch)
    _png(run_dir / "geolocation" / "val_epoch001.png")
    _png(run_dir / "roc.png")
    _png(run_dir / "checkpoints" / "not_shown.png")
    _png(run_dir / "analysis" / "confusion.png")
    rows = "\n".join(f"class{i},<{i}>,{i / 3!r}" for i in range(MAX_TABLE_ROWS + 10))
    (run_dir / "analysis" / "per_class.csv").write_text(f"class,ap,share\n{rows}\n")
    data_report = {"dataset": "coco", "train": {"samples": 30, "unreadable, skipped": 2}, "val": {"samples": 10}}
    (run_dir / "data_report.json").write_text(json.dumps(data_report))
    (run_dir / "skipped_files.csv").write_text("split,file,reason\ntrain,a.jpg,truncated file\n")

    report_main([str(run_dir)])

    page = Page(run_dir / "report.html")
    assert page.sections == ["Model and cost", "Metrics", "Error analysis", "Pictures", "Data", "Config"]
    assert page.captions == [
        "analysis/confusion.png",
        "roc.png",
        "geolocation/val_epoch001.png (the latest of 1 epoch)",
        "pictures/detections_epoch002.png (the latest of 3 epochs)",
    ]
    assert [picture.width for picture in page.pictures()] == [8, 8, 8, 12]
    per_class = page.table("class")
    assert len(per_class) == 1 + MAX_TABLE_ROWS and per_class[1] == ["class0", "<0>", "0.0000"]
    assert per_class[2] == ["class1", "<1>", "0.3333"]  # written in full, shown to four decimals
    assert f"the first {MAX_TABLE_ROWS} of {MAX_TABLE_ROWS + 10} rows; all of them are in per_class.csv" in page.notes
    assert page.table("") == [["", "samples", "unreadable, skipped"], ["train", "30", "2"], ["val", "10", ""]]
    assert page.table("split") == [["split", "file", "reason"], ["train", "a.jpg", "truncated file"]]
    assert page.pres == ["python -m mnet_tasks task=detection 'data.root=/my data'", "task:\n  name: detection\n"]


def test_sweep_page_has_a_row_per_job_links_to_their_pages_and_the_leaderboard_plot(tmp_path):
    sweep = tmp_path / "sweep"
    _folder(sweep / "0", _record(), ["task=classification", "backbone.alpha=0.25"])
    (sweep / "0" / "report.html").write_text("<html></html>")
    _folder(
        sweep / "1", _record(alpha=0.5, madds=9_000_000, params=500_000), ["task=classification", "backbone.alpha=0.5"]
    )
    failed = _record(alpha=-1, status="failed", error="ConfigError: backbone.alpha", metrics={"final": {}, "best": {}})
    _folder(sweep / "2", failed, ["task=classification", "backbone.alpha=-1"])

    end_sweep(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "report": True}))

    page = Page(sweep / "report.html")
    assert (sweep / "summary.csv").is_file() and page.sections == ["Jobs", "Leaderboard"]
    header, *rows = page.table("job")
    assert header == [
        "job",
        "status",
        "backbone.alpha",
        "val/top1",
        "val/loss",
        "MAdds (M)",
        "params (M)",
        "input",
        "epochs",
        "duration",
        "error",
    ]
    assert [row[:5] for row in rows] == [
        ["0", "completed", "0.25", "0.5000", "1.2500"],
        ["1", "completed", "0.5", "0.5000", "1.2500"],
        ["2", "failed", "-1", "", ""],
    ]
    assert rows[1][5:7] == ["9.0", "0.50"] and rows[2][-1] == "ConfigError: backbone.alpha"
    assert page.links == ["0/report.html", "summary.csv"]  # job 1 has no page of its own
    assert "overrides of every job: task=classification" in page.notes
    (plot,) = page.pictures()
    assert plot.format == "PNG" and page.captions == ["classification: primary metric against MAdds and parameters"]


def end_sweep(config):
    """The end of a multirun as conf/hydra/default.yaml's callbacks see it, in their order."""
    for callback in (SweepSummary(), SweepReport()):
        callback.on_multirun_end(config)


def test_sweep_callback_writes_no_page_when_report_is_off(tmp_path):
    _folder(tmp_path / "0", _record(), ["backbone.alpha=0.25"])
    end_sweep(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "report": False}))
    assert (tmp_path / "summary.csv").is_file() and not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("name", ["empty", "missing"])
def test_report_command_names_a_folder_that_is_neither_a_run_nor_runs(tmp_path, capsys, name):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / name)])
    assert exit_info.value.code == 2
    assert f"{tmp_path / name} is neither a run folder (no metrics.json in it) nor a folder of runs" in (
        capsys.readouterr().err
    )


def _browser_unavailable() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (Debian package chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Python Playwright (pip install playwright; the browser is the system's Chromium)"
    return None


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium_without_errors_and_shows_the_metrics(tmp_path, quick):
    """A real browser opens the page of a run with its error analysis: no console or page error, no request
    anywhere, every picture decoded, the metrics visible. The screenshot goes to $MNET_REPORT_SCREENSHOT if set."""
    if reason := _browser_unavailable():
        if os.environ.get("MNET_REQUIRE_BROWSER") == "1":  # .ci/run: the browser test must run there
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import Error, sync_playwright

    overrides = ["report=true", "task.error_analysis=true", "trainer.max_epochs=2", f"paths.output_dir={tmp_path}"]
    record = run(compose_config([*quick, *overrides]))
    report = Path(record["report"])
    errors, requests = [], []
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as error:
            if os.environ.get("MNET_REQUIRE_BROWSER") == "1":
                raise
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {error}")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: request.url.startswith(("file:", "data:")) or requests.append(request.url))
        page.goto(report.as_uri(), wait_until="load")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"
        )
        image_count = page.evaluate("document.images.length")
        text = page.inner_text("body")
        screenshot = tmp_path / "report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    if target := os.environ.get("MNET_REPORT_SCREENSHOT"):
        shutil.copy(screenshot, target)

    assert errors == [] and requests == [] and broken == []
    assert image_count >= 2  # the curves and the error analysis's pictures
    final = record["metrics"]["final"]
    assert all(name in text and f"{value:.4f}" in text for name, value in final.items())
    assert f"{record['madds']:,}" in text and "completed" in text
    assert Image.open(screenshot).size[0] == 1280
