"""The Python API: the README's example runs as written, and the commands are layers over it."""
import contextlib
import io
import json
import re

import pytest

import edgekd
from conftest import REPO
from edgekd.errors import EdgekdError


def readme_example() -> str:
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its paths are relative to the repository root: mirror the one it reads
    (tmp_path / "edgekd" / "assets").mkdir(parents=True)
    (tmp_path / "edgekd" / "assets" / "mnist_lenet5.pt2").symlink_to(REPO / "edgekd" / "assets" / "mnist_lenet5.pt2")
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(readme_example(), namespace)
    summary, exported, result = namespace["summary"], namespace["exported"], namespace["result"]
    assert summary["iterations"] == 30 and summary["run_dir"] == "runs/api"
    assert summary == json.loads((tmp_path / "runs/api/summary.json").read_text())
    assert exported == json.loads((tmp_path / "runs/api/export/export.json").read_text())
    assert [a["precision"] for a in exported["artifacts"]] == ["fp32", "int8"]
    assert result["source"] == "measured" and result["latency_ms"]["p50"] > 0
    assert (tmp_path / "runs/api/export/probes/student.int8.onnx.host.json").is_file()
    assert (tmp_path / "runs/api/report/report.html").is_file()
    assert printed.getvalue().startswith("(1, 28, 28) 10 ")


def test_names_are_checked_with_a_suggestion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgekdError, match="unknown export format 'tflit'; did you mean 'tflite'"):
        edgekd.export("runs/x", formats=["tflit"])
    with pytest.raises(EdgekdError, match="no run under ./runs to use"):
        edgekd.report()
    with pytest.raises(EdgekdError, match="did you mean 'raspberry-pi-5'"):
        edgekd.run(device="raspberry-pi5")
