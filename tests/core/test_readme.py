"""The README stays true: its Python snippets run, and CI runs its test command."""

import re
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from mnet_tasks import MobileNetV1
from mnet_tasks import weights as weights_module

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_python_snippets_run(tmp_path, monkeypatch):
    # the snippets name timm's hub weights and a local file: serve both from here, offline
    monkeypatch.setattr(
        weights_module, "timm_state_dict", lambda name: timm.create_model("mobilenetv1_100").state_dict()
    )
    monkeypatch.chdir(tmp_path)
    Path("path/to").mkdir(parents=True)
    save_file(MobileNetV1(alpha=1.0).state_dict(), "path/to/weights.safetensors")
    snippets = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(snippets) >= 2
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert isinstance(namespace["features"](torch.randn(1, 3, 64, 64)), list)
    # a built-in task module trained by the user's own Trainer and DataModule; SSD as a plain detector
    assert namespace["trainer"].state.status == "finished" and namespace["trainer"].current_epoch == 1
    assert 0.0 <= float(namespace["trainer"].callback_metrics["val/top1"]) <= 1.0
    assert set(namespace["detections"][0]) == {"boxes", "labels", "scores"}


def test_first_lines_give_the_two_commands_and_ci_runs_the_test_command():
    commands = re.findall(r"^(pip install .*?)\s+#", README.split("```")[1], re.M)
    assert len(commands) == 2
    install_and_run, install_and_test = commands
    assert "python -m mnet_tasks" in install_and_run
    test_command = install_and_test.split("&&")[1].strip()
    assert test_command in (REPO / ".ci" / "run").read_text()
