"""Task plug-ins: a package installed beside mnet_tasks adds a task through the registry, as the built-ins do."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK

from mnet_tasks.config import compose_config, config_dir
from mnet_tasks.registry import config_packages, registered_names

EXAMPLE = Path(__file__).resolve().parents[1] / "plugin_example"
ROOT = Path(__file__).resolve().parents[2]
BUILTIN_TASKS = ROOT / "mnet_tasks" / "tasks"
# The core: every module outside the task packages. It may only reach a task through its config and the registry.
CORE_MODULES = sorted(
    path.relative_to(ROOT).as_posix()
    for path in (ROOT / "mnet_tasks").rglob("*.py")
    if BUILTIN_TASKS not in path.parents or path.parent == BUILTIN_TASKS
)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plug-in installed with pip into a folder of its own, put on PYTHONPATH as a user's venv would be."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            site,
            EXAMPLE,
        ],
        check=True,
        capture_output=True,
    )
    return site


def run_with_plugin(args: list[str], site: Path, cwd: Path, module: str = "mnet_tasks") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-3000:]}"
    return result


def test_an_installed_plugin_task_trains_sweeps_and_is_benchmarked(plugin_site, tmp_path, data_dir):
    overrides = [*QUICK, f"paths.data_dir={data_dir}", "task=scenes", "trainer.max_epochs=1"]
    searchpath = run_with_plugin(["--info", "searchpath"], plugin_site, tmp_path).stdout
    assert "pkg://scenes_plugin.conf" in searchpath

    run_with_plugin([*overrides, "hydra.run.dir=run"], plugin_site, tmp_path)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["task"] == "scenes"
    assert record["monitor"] == "val/accuracy" and "val/accuracy" in record["metrics"]["final"]
    assert record["madds"] > 0 and record["input_size"] == 64

    # Its checkpoint names its registered class: export rebuilds it, custom head included (4 classes out).
    run_with_plugin(
        [f"ckpt_path={record['checkpoint']}", "output_dir=export"], plugin_site, tmp_path, "mnet_tasks.export"
    )
    report = json.loads(next((tmp_path / "export").glob("*.export.json")).read_text())
    assert report["parity"]["passed"] and report["card"]["family"] == "scenes"
    assert report["card"]["heads"] == [{"name": "classes", "num_outputs": 4, "labels": [], "centroids": [], "ids": []}]

    sweep = ["-m", *overrides, "trainer.fast_dev_run=true", "backbone.alpha=0.25,0.5", "hydra.sweep.dir=sweep"]
    run_with_plugin(sweep, plugin_site, tmp_path)
    summary = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all(",scenes," in row for row in summary[1:])

    board = ["run", "sweep", "--tasks-dir", "boards", "--latency-repeats", "2"]
    run_with_plugin(board, plugin_site, tmp_path, "mnet_tasks.leaderboard")
    with open(tmp_path / "boards" / "scenes" / "leaderboard.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and {row["source"] for row in rows} == {"ours"}
    trained = next(row for row in rows if row["epochs"] == "1")
    assert float(trained["latency_ms"]) > 0 and trained["val/accuracy"] != ""  # rebuilt from its checkpoint
    assert "leaderboard.png" in (tmp_path / "boards" / "scenes" / "LEADERBOARD.md").read_text()

    bench = ["--task", "scenes", "--quick", "--threads", "1", "--no-training", "--runtimes", "eager_nchw"]
    run_with_plugin(
        [*bench, "--anchors", "timm_mobilenetv1_100", "--out-dir", "bench"], plugin_site, tmp_path, "mnet_tasks.bench"
    )
    assert "mnet_tasks MobileNetV1 a=0.25" in (tmp_path / "bench" / "bench.csv").read_text()


def test_a_plugin_datamodule_that_inherits_nothing_from_mnet_tasks_trains(plugin_site, tmp_path):
    """The contract asks a DataModule for ``dataset_name`` and ``head_kwargs()`` only: the bad-file report has less to
    say about a plain torchvision one, and the run completes."""
    from mnet_tasks.tasks.classification.synthetic import SHAPES

    root = SHAPES.generate(tmp_path / "data", num_classes=3, train_per_class=6, val_per_class=2, image_size=48)
    overrides = ["task=scenes", "data=scene_folders", f"data.root={root}", "backbone.alpha=0.25"]
    run_with_plugin(
        [*overrides, "backbone.resolution=64", "trainer.max_epochs=1", "hydra.run.dir=run"], plugin_site, tmp_path
    )
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["dataset"] == root.name
    assert "val/accuracy" in record["metrics"]["final"]
    assert json.loads((tmp_path / "run" / "data_report.json").read_text()) == {"dataset": root.name}


def test_the_plugin_guide_shows_the_example_plugin_as_it_is_tested():
    guide = (EXAMPLE / "README.md").read_text()
    files = ["task.py", "data.py", "conf/task/scenes.yaml", "conf/data/scenes.yaml", "conf/data/scene_folders.yaml"]
    for path in files:
        assert (EXAMPLE / "scenes_plugin" / path).read_text().strip() in guide, path
    entry_points = (EXAMPLE / "pyproject.toml").read_text().split("\n\n[project.entry-points")[1:]
    assert all(f"[project.entry-points{block.strip()}" in guide for block in entry_points)


def builtin_packages() -> list[str]:
    return sorted(path.name for path in BUILTIN_TASKS.iterdir() if (path / "__init__.py").is_file())


def test_the_builtin_tasks_are_registered_like_any_plugin():
    """Every built-in task package with a task module of its own registers its class (fine-grained reuses
    classification's)."""
    assert {"attributes", "classification", "detection", "geolocalization"} <= set(registered_names())
    assert registered_names() == [name for name in builtin_packages() if (BUILTIN_TASKS / name / "module.py").is_file()]


def builtin_task_names() -> set[str]:
    """Every built-in task package, task config and registered task class name."""
    packages = {path.name for path in BUILTIN_TASKS.iterdir() if (path / "__init__.py").is_file()}
    return packages | {path.stem for path in BUILTIN_TASKS.glob("*/conf/task/*.yaml")} | set(registered_names())


def test_the_builtin_tasks_bring_their_configs_as_a_plugin_does():
    """The core config tree holds no task's yaml: every task and data config comes from a registered package."""
    core = config_dir()
    assert not [path for group in ("task", "data", "task_defaults") for path in core.glob(f"{group}/*.yaml")]
    assert config_packages() == [f"mnet_tasks.tasks.{name}.conf" for name in builtin_packages()]
    task_configs = sorted(path.stem for path in BUILTIN_TASKS.glob("*/conf/task/*.yaml"))
    assert {"classification", "finegrained", "attributes", "detection", "detection_frcnn"} <= set(task_configs)
    for name in task_configs:
        cfg = compose_config([f"task={name}"])
        assert cfg.task.name == name or name == "detection_frcnn"
        assert cfg.data._target_.startswith("mnet_tasks.tasks.")


def import_graph(modules: list[str]) -> dict[str, set[str]]:
    """Which of ``modules`` (dotted names) each imports, at the top or inside a function."""
    graph = {}
    for module in modules:
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[module] = (imported & set(modules)) - {module}
    return graph


def test_the_package_has_no_import_cycle():
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "mnet_tasks").rglob("*.py")
    ]
    graph = import_graph(modules)
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(module) :], module]))
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, [*trail, module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])


def code_words(path: Path) -> set[str]:
    """The identifiers and string constants of a module's code; docstrings (documentation) left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words |= set(node.value.replace(".", " ").replace("_", " ").replace("=", " ").split())
        elif isinstance(node, ast.Name):
            words |= set(node.id.lower().split("_"))
        elif isinstance(node, ast.Attribute):
            words |= set(node.attr.lower().split("_"))
    return words


@pytest.mark.parametrize("module", CORE_MODULES)
def test_the_core_names_no_builtin_task(module):
    assert code_words(ROOT / module) & builtin_task_names() == set()
