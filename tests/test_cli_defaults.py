"""The names and defaults people type: student families, the closest name for a typo, and
export / probe / report taking the latest run when none is named."""
import yaml
from test_distill import assert_one_line_error, edgekd

from edgekd.cli import EMBEDDED_TEACHER

TINY = ["--set", "batch_size=8", "--set", "student_steps=1", "--no-progress"]


def test_student_family_names(tmp_path):
    out = tmp_path / "run"
    result = edgekd("distill", "--student", "mobilenet", "--iterations", 2, "--out", out, *TINY)
    assert result.returncode == 0, result.stderr
    assert "student mobilenet -> mobilenet_v2 for 1x28x28" in result.stdout
    assert yaml.safe_load((out / "config.yaml").read_text())["student"] == "mobilenet_v2"
    small, large = edgekd("students"), edgekd("students", "--input-shape", "3,224,224")
    assert "resnet -> resnet20" in small.stdout and "resnet -> resnet18" in large.stdout


def test_a_typo_gets_the_closest_name(tmp_path):
    for args, fragment in (
            (["distill", "--student", "resnt20"], "unknown student 'resnt20'; did you mean 'resnet20'?"),
            (["distill", "--method", "condbm"], "unknown method 'condbm'; did you mean 'condbn'?"),
            (["probe", EMBEDDED_TEACHER, "--device", "nucleo-l4r5z"], "did you mean 'nucleo-l4r5zi'?")):
        assert_one_line_error(edgekd(*args, "--out", tmp_path / "never") if args[0] == "distill" else edgekd(*args),
                              fragment)
    assert not (tmp_path / "never").exists()


def test_export_probe_and_report_take_the_latest_run(tmp_path):
    def here(*args):
        return edgekd(*args, cwd=tmp_path)

    assert_one_line_error(here("export", "--onnx"), "no run under ./runs to use")
    assert here("distill", "--iterations", 3, *TINY).returncode == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert_one_line_error(here("probe", "--device", "nucleo-l4r5zi"), "has no int8 TFLite file yet")
    exported = here("export", "--tflite", "--no-progress")
    assert exported.returncode == 0, exported.stderr
    assert f"using the latest run, runs/{run.name}" in exported.stdout
    probed = here("probe", "--device", "nucleo-l4r5zi", "--no-save")
    assert probed.returncode == 0, probed.stderr
    assert f"probing the latest run's runs/{run.name}/export/" in " ".join(probed.stdout.split())
    reported = here("report")
    assert reported.returncode == 0 and (run / "report" / "report.html").is_file(), reported.stderr
