"""The names and defaults people type: student families, the closest name for a typo,
export / probe / report taking the latest run when none is named, and `edgekd run` for the chain."""
import json
import signal
import subprocess
import sys
import time

from test_distill import assert_one_line_error, edgekd_here

from edgekd.api import EMBEDDED_TEACHER

TINY = ["--set", "batch_size=8", "--set", "student_steps=1", "--no-progress"]


def test_student_family_names(capfd):
    """`--student mobilenet` in a run: test_the_commands_of_the_design_on_a_file_named_teacher_pt."""
    small, large = edgekd_here(capfd, "students"), edgekd_here(capfd, "students", "--input-shape", "3,224,224")
    assert "resnet -> resnet20" in small.stdout and "resnet -> resnet18" in large.stdout


def test_a_typo_gets_the_closest_name(tmp_path, capfd):
    for args, fragment in (
            (["distill", "--student", "resnt20"], "unknown student 'resnt20'; did you mean 'resnet20'?"),
            (["distill", "--method", "condbm"], "unknown method 'condbm'; did you mean 'condbn'?"),
            (["probe", EMBEDDED_TEACHER, "--device", "nucleo-l4r5z"], "did you mean 'nucleo-l4r5zi'?")):
        result = edgekd_here(capfd, *args, "--out", tmp_path / "never") if args[0] == "distill" \
            else edgekd_here(capfd, *args)
        assert_one_line_error(result, fragment)
    assert not (tmp_path / "never").exists()


def test_export_probe_and_report_take_the_latest_run(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)

    def here(*args):
        return edgekd_here(capfd, *args)

    assert_one_line_error(here("export", "--onnx"), "no run under ./runs to use")
    assert here("distill", "--iterations", 3, *TINY).returncode == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert_one_line_error(here("probe", "--device", "nucleo-l4r5zi"), "has no int8 model yet")
    exported = here("export", "--tflite", "--no-progress")
    assert exported.returncode == 0, exported.stderr
    assert f"using the latest run, runs/{run.name}" in exported.stdout
    probed = here("probe", "--device", "nucleo-l4r5zi", "--no-save")
    assert probed.returncode == 0, probed.stderr
    assert f"probing the latest run's runs/{run.name}/export/" in " ".join(probed.stdout.split())
    reported = here("report")
    assert reported.returncode == 0 and (run / "report" / "report.html").is_file(), reported.stderr


def test_run_chains_the_stages_resumes_after_ctrl_c_and_skips_what_is_done(tmp_path, mnist, monkeypatch, capfd):
    args = ["run", "--time-budget", "0.3", "--device", "nucleo-l4r5zi", "--out", "chain", "--eval-data", mnist,
            "--no-progress"]
    out = tmp_path / "chain"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *map(str, args)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "] it 1 " in line:  # the first progress line: training has started
            break
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "checkpoint saved; run the same command again to continue" in err, err
    assert (out / "checkpoint.pt").is_file() and not (out / "summary.json").exists()
    assert not (out / "export").exists()

    monkeypatch.chdir(tmp_path)  # the rest in this process: only Ctrl-C needed one of its own
    second = edgekd_here(capfd, *args)
    assert second.returncode == 0, second.stderr
    text = " ".join(second.stdout.split())
    assert "distill: resuming chain" in text and "resumed chain at iteration" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wall_seconds"] >= 0.3 * 60  # the budget counts the training before Ctrl-C too
    probe_file = out / "export" / "probes" / "student.int8.tflite.nucleo-l4r5zi.json"
    assert (out / "export" / "export.json").is_file() and probe_file.is_file()
    assert (out / "report" / "report.html").is_file()
    assert "latency on nucleo-l4r5zi" in text and "distill resumed, export ran, probe ran" in text
    assert "top-1 on real data" in text and "float student" in text  # the values: the JSON below

    written = {p: p.stat().st_mtime for p in (out / "student.pt2", out / "export" / "export.json", probe_file)}
    third = edgekd_here(capfd, *args, "--json")
    assert third.returncode == 0, third.stderr
    result = json.loads(third.stdout)
    assert result["stages"] == {"distill": "done before", "export": "done before", "probe": "done before"}
    assert {p: p.stat().st_mtime for p in written} == written
    assert result["model"] == "chain/export/student.int8.tflite" and result["size_bytes"] > 1000
    assert result["latency_ms"]["low"] < result["latency_ms"]["estimate"] < result["latency_ms"]["high"]
    assert result["fits"] is True and result["device"] == "nucleo-l4r5zi"
    exported = json.loads((out / "export" / "export.json").read_text())["artifacts"]
    assert result["int8_top1"] == next(a["top1"] for a in exported if a["path"].endswith("int8.tflite"))
    assert result["student_top1"] == summary["student_top1"] and result["teacher_top1"] > 99

    assert_one_line_error(edgekd_here(capfd, "run", "--student", "resnet", "--out", "chain"),
                          "chain holds a run with another student")
