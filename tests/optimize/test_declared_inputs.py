"""An archive declares its inputs (model-config.yaml's optimize_inputs) and optimize reads only that:
a user's archive made with torch-model-archiver gets real calibration and label accuracy as the
bundled mnist does; a bad declaration is an exit 2 that names the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launchkit.archive.inputs import AccuracyTask, InputDeclaration, InputKind, read_declaration
from launchkit.core.errors import ArchiveError

ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"
HANDLER = Path(__file__).parent.parent / "fixtures" / "handlers" / "echo_handler.py"

# --- the declaration, read --------------------------------------------------------------------------


def test_no_declaration_is_the_default_and_a_full_one_is_read():
    assert read_declaration({}, "m.mar") == InputDeclaration()
    declared = read_declaration({"optimize_inputs": {"kind": "image", "shape": [3, 224, 224], "task": "classifier",
                                                     "calibration": "c.pt", "held_out": "h.pt"}}, "m.mar")
    assert declared == InputDeclaration(InputKind.IMAGE, (3, 224, 224), None, None, "c.pt", "h.pt",
                                        AccuracyTask.CLASSIFIER)
    assert declared.files() == {"calibration": "c.pt", "held_out": "h.pt"}
    text = read_declaration({"optimize_inputs": {"kind": "text", "tokenizer": "t.json", "samples": "s.txt"}}, "m")
    assert text.kind is InputKind.TEXT and text.task is AccuracyTask.AUTO


@pytest.mark.parametrize(("declared", "named"), [
    ([1, 2], "must be a mapping"),
    ({"shapes": [4]}, "unknown key(s) shapes"),
    ({"kind": "audio"}, "kind is 'audio'; expected one of tensor, image, text"),
    ({"task": "regression"}, "task is 'regression'"),
    ({"shape": []}, "shape is []"),
    ({"shape": [3, 0]}, "shape is [3, 0]"),
    ({"shape": [True]}, "shape is [True]"),
    ({"shape": "3,224,224"}, "expected a list of positive sizes"),
    ({"kind": "text", "tokenizer": "t.json"}, "kind text needs tokenizer"),
    ({"tokenizer": "t.json"}, "tokenizer and samples are for kind text"),
    ({"held_out": "/etc/passwd"}, "held_out is '/etc/passwd'; expected a file name inside the archive"),
    ({"calibration": "../c.pt"}, "calibration is '../c.pt'"),
    ({"held_out": 3}, "held_out is 3"),
])
def test_a_bad_declaration_names_the_key_and_what_was_expected(declared, named):
    with pytest.raises(ArchiveError) as refused:
        read_declaration({"optimize_inputs": declared}, "m.mar")
    assert named in str(refused.value) and "m.mar" in str(refused.value)


def test_a_named_file_must_be_in_the_archive(tmp_path):
    (tmp_path / "h.pt").write_bytes(b"")
    assert read_declaration({"optimize_inputs": {"held_out": "h.pt"}}, "m.mar", tmp_path).held_out == "h.pt"
    with pytest.raises(ArchiveError, match="names c.pt, which the archive does not hold.*--extra-files"):
        read_declaration({"optimize_inputs": {"calibration": "c.pt"}}, "m.mar", tmp_path)


# --- a user's archive, end to end -------------------------------------------------------------------

CLASSIFIER = """import torch


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def forward(self, x):
        return self.layers(x)
"""


def _user_archive(folder: Path, declaration: str, extra: dict[str, object]) -> Path:
    """A classifier of 4 well-separated clusters, archived with TorchServe's own torch-model-archiver."""
    (folder / "classifier.py").write_text(CLASSIFIER)
    namespace: dict = {}
    exec(CLASSIFIER, namespace)  # noqa: S102 - the model defined just above
    torch.manual_seed(0)
    centres = torch.randn(4, 16) * 4
    labels = torch.arange(200) % 4
    inputs = centres[labels] + 0.3 * torch.randn(200, 16)
    model = namespace["Classifier"]()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):  # trained, so label accuracy means something
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / "classifier.pth")
    files = {"calibration.pt": inputs[:64].clone(), "held_out.pt": {"inputs": inputs[100:], "labels": labels[100:]},
             **extra}
    for name, value in files.items():
        torch.save(value, folder / name)
    (folder / "model-config.yaml").write_text(declaration)
    made = subprocess.run([str(ARCHIVER), "--model-name", "classifier", "--version", "1.0", "--model-file",
                           str(folder / "classifier.py"), "--serialized-file", str(folder / "classifier.pth"),
                           "--handler", str(HANDLER), "--config-file", str(folder / "model-config.yaml"),
                           "--extra-files", ",".join(str(folder / name) for name in files), "--export-path",
                           str(folder)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return folder / "classifier.mar"


def _optimize(archive: Path, folder: Path, *more: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launchkit", "optimize", str(archive), "--dtype", "int8",
                           "--no-channels-last", "--graph", "torchscript", "--batch-sizes", "8", "--seconds", "0.2",
                           "--report-dir", str(folder / "report"), "-o", str(folder / "out.mar"), "--force", *more],
                          capture_output=True, text=True, timeout=300)


def test_a_users_archive_is_calibrated_and_scored_on_what_it_declares(tmp_path):
    archive = _user_archive(tmp_path, "optimize_inputs:\n  shape: [16]\n  calibration: calibration.pt\n"
                                      "  held_out: held_out.pt\n  task: classifier\n", {})
    done = _optimize(archive, tmp_path)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())  # the terminal's lines wrap
    assert "calibrating static int8 on 64 of the model's calibration inputs" in said
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["task"] == "classifier"
    assert summary["labels"]["samples"] == 100 and summary["labels"]["original"] >= 0.95, summary["labels"]


def test_a_declaration_that_does_not_hold_is_exit_2_before_anything_runs(tmp_path):
    for name, declaration, extra, said in [
        ("missing", "optimize_inputs:\n  shape: [16]\n  held_out: missing.pt\n", {},
         "optimize_inputs.held_out names missing.pt, which the archive does not hold"),
        ("labels", "optimize_inputs:\n  held_out: labels.pt\n",
         {"labels.pt": {"inputs": torch.randn(10, 16), "labels": torch.zeros(3)}}, "one label per input row (10 rows)"),
        ("kind", "optimize_inputs:\n  kind: audio\n", {}, "optimize_inputs.kind is 'audio'"),
        ("none", "minWorkers: 1\n", {}, "give --input-shape"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        done = _optimize(_user_archive(folder, declaration, extra), folder)
        assert done.returncode == 2 and said in " ".join(done.stderr.split()), (name, done.stderr)
        assert "Traceback" not in done.stderr and not (folder / "out.mar").exists()
