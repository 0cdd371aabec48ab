"""edgekd probe on this machine, over SSH to a real OpenSSH server on 127.0.0.1, and the adb parser.

The SSH tests start their own sshd (run as root on a free port, with a temporary host key, client
key and config); they skip where /usr/sbin/sshd is not installed. The end-to-end adb test runs only
when EDGEKD_ADB_SERIAL (a device serial) and EDGEKD_BENCHMARK_BINARY (TFLite's android_aarch64
benchmark_model) are set.
"""
import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.devices import list_profiles, load_profile
from edgekd.errors import EdgekdError
from edgekd.probes import ProbeOptions, probe, save_probe
from edgekd.probes.adb import parse_benchmark_output
from edgekd.probes.mcu_latency import runtime_model
from conftest import skip_unless_ci

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {"host", "raspberry-pi-4", "raspberry-pi-5", "android-arm64", "pixel-3", "nucleo-l4r5zi",
            "stm32h7", "nucleo-u575zi-q", "ek-ra6m4", "ek-ra8d1", "nrf52840", "esp32-s3"}
EVAL_LIMIT = 300


def test_profiles_complete():
    profiles = {p["name"]: p for p in list_profiles()}
    assert REQUIRED <= set(profiles)
    for p in profiles.values():
        assert p["sources"], p["name"]
        assert p["connect"]["method"] in ("none", "local", "ssh", "adb")
        if p["kind"] == "mcu":
            for runtime in p["runtimes"].values():
                assert runtime_model(runtime)["calibration"] and {"ram_bytes", "flash_bytes"} <= set(runtime)
    assert profiles["host"]["cpu"]["cores"] == os.cpu_count()
    result = CliRunner().invoke(cli, ["devices", "--json"])
    assert result.exit_code == 0 and REQUIRED <= {p["name"] for p in json.loads(result.output)}


def test_unknown_device_is_one_line():
    with pytest.raises(EdgekdError, match="unknown device 'toaster'"):
        load_profile("toaster")


@pytest.fixture(scope="module")
def int8_model(shared, tmp_path_factory):
    """The MLPerf Tiny int8 ResNet-8 (raw 0-255 NHWC int8 input), copied so probes/ can be written."""
    path = tmp_path_factory.mktemp("models") / "resnet8_int8.tflite"
    shutil.copy(shared / "reference-models/mlperf-tiny-ic/pretrainedResnet_quant.tflite", path)
    return path


@pytest.fixture(scope="module")
def cifar(shared):
    return str(shared / "datasets/cifar10/cifar-10-batches-bin")


@pytest.fixture(scope="module")
def host_int8(int8_model, cifar):
    options = ProbeOptions(runs=30, warmup=3, threads=1, eval_data=cifar, eval_limit=EVAL_LIMIT, input_range=255)
    return probe(int8_model, load_profile("host"), options)


def test_host_probe_int8(host_int8, int8_model):
    r = host_int8
    assert r["source"] == "measured" and r["device"] == "host" and r["runtime"] == "ai_edge_litert"
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert r["init_ms"] > 0 and r["ram_bytes"] > r["rss_before_model_bytes"]
    assert r["input"] == {"shape": [1, 32, 32, 3], "dtype": "int8", "quantization": [1.0, -128]}
    # The published accuracy of this model is 86.97 % on the full test set.
    assert r["eval_samples"] == EVAL_LIMIT and 78 < r["top1"] < 96
    saved = save_probe(r)
    assert saved == int8_model.parent / "probes" / "resnet8_int8.tflite.host.json"
    assert json.loads(saved.read_text())["top1"] == r["top1"]


def test_onnx_on_host_matches_numpy(tmp_path, shared):
    """A tiny ONNX linear classifier on MNIST: the runner's top-1 equals numpy's on the same data."""
    import onnx
    from onnx import TensorProto, helper

    from edgekd.data import load_dataset

    rng = np.random.default_rng(0)
    w = rng.standard_normal((784, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor("w", TensorProto.FLOAT, [784, 10], w.ravel())])
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    mnist = str(shared / "datasets/mnist")
    r = probe(path, load_profile("host"), ProbeOptions(runs=5, threads=1, eval_data=mnist, eval_limit=200))
    ds = load_dataset(mnist, "test", 200)
    expected = np.mean((np.asarray(ds.x).reshape(200, -1) @ w).argmax(1) == np.asarray(ds.y)) * 100
    assert r["runtime"] == "onnxruntime" and abs(r["top1"] - expected) < 1e-6


def test_unreachable_board_is_estimated(int8_model):
    r = probe(int8_model, load_profile("raspberry-pi-4"), ProbeOptions())
    assert r["source"] == "estimated" and "26.4 ms" in r["calibration"] and "median 24 %" in r["calibration"]
    # MLPerf Tiny v0.5 published this model on a Raspberry Pi 4 (LEIP, int8): 1.07355 ms. The
    # profile's costs, fitted on it and four other networks, give 1.26 ms (+17 %); a rate alone
    # (MobileNetV2's MACs per second) gave 1.10 ms here and missed the other small networks by
    # 45 to 88 %.
    assert r["latency_ms"]["estimate"] == pytest.approx(1.26, abs=0.01)


# ---------------------------------------------------------------- a real sshd on 127.0.0.1

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path("/usr/sbin/sshd").exists() or shutil.which("ssh") is None:
        skip_unless_ci("openssh-server is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        skip_unless_ci("the test sshd runs as root (it must switch to the logged-in user)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "other_key"):
        _keygen(d / name)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    # The client side: its own known_hosts and config, as a user's ~/.ssh/config would hold.
    (d / "ssh_config").write_text(f"UserKnownHostsFile {d}/known_hosts\n")
    # A profile like raspberry-pi-4 whose python3 is this interpreter (it has ai-edge-litert).
    profile = load_profile("raspberry-pi-4")
    profile.update(name="loopback-board", connect={"method": "ssh", "python": sys.executable})
    (d / "loopback-board.yaml").write_text(yaml.safe_dump({k: v for k, v in profile.items() if k != "path"}))
    yield {"dir": d, "port": port, "user": getpass.getuser(), "profile": str(d / "loopback-board.yaml")}
    server.terminate()
    server.wait(timeout=10)


def _ssh_options(sshd, **overrides):
    d = sshd["dir"]
    values = dict(host=f"{sshd['user']}@127.0.0.1", port=sshd["port"], identity=str(d / "client_key"),
                  ssh_config=str(d / "ssh_config"), connect_timeout=3, runs=30, warmup=3, threads=1)
    values.update(overrides)
    return ProbeOptions(**values)


def test_ssh_probe_matches_host(sshd, int8_model, cifar, host_int8):
    before = set(glob.glob("/tmp/edgekd-probe.*"))
    r = probe(int8_model, load_profile(sshd["profile"]),
              _ssh_options(sshd, eval_data=cifar, eval_limit=EVAL_LIMIT, input_range=255))
    assert r["source"] == "measured" and r["device"] == "loopback-board"
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]
    assert abs(r["top1"] - host_int8["top1"]) <= 0.5 and r["eval_samples"] == EVAL_LIMIT
    assert set(glob.glob("/tmp/edgekd-probe.*")) == before  # the device's temporary folder is gone


def test_ssh_probe_of_a_file_named_with_spaces_and_a_star(sshd, int8_model, tmp_path):
    model = tmp_path / "my model *.tflite"
    shutil.copy(int8_model, model)
    before = set(glob.glob("/tmp/edgekd-probe.*"))
    r = probe(model, load_profile(sshd["profile"]), _ssh_options(sshd, runs=5, warmup=1, input_range=255))
    assert r["source"] == "measured" and r["latency_ms"]["p50"] > 0
    assert set(glob.glob("/tmp/edgekd-probe.*")) == before


def _fails_fast(sshd, model, match, seconds=8, **overrides):
    start = time.monotonic()
    with pytest.raises(EdgekdError, match=match) as err:
        probe(model, load_profile(sshd["profile"]), _ssh_options(sshd, **overrides))
    assert time.monotonic() - start < seconds
    assert "\n" not in str(err.value)


def test_ssh_wrong_port(sshd, int8_model):
    _fails_fast(sshd, int8_model, "connection refused", port=_free_port())


def test_ssh_wrong_key(sshd, int8_model):
    _fails_fast(sshd, int8_model, "refused the SSH key", identity=str(sshd["dir"] / "other_key"))


def test_ssh_host_key_mismatch(sshd, int8_model, tmp_path):
    other = (sshd["dir"] / "other_key.pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd['port']} {other[0]} {other[1]}\n")
    (tmp_path / "ssh_config").write_text(f"UserKnownHostsFile {tmp_path}/known_hosts\n")
    _fails_fast(sshd, int8_model, "host key of 127.0.0.1 does not match", ssh_config=str(tmp_path / "ssh_config"))


def test_ssh_silent_server_times_out(sshd, int8_model):
    """A port that accepts TCP but never speaks SSH: ConnectTimeout ends the handshake."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        _fails_fast(sshd, int8_model, "timed out", seconds=12, port=silent.getsockname()[1], connect_timeout=2)


def test_ssh_missing_numpy_says_what_to_install(sshd, int8_model, tmp_path):
    profile = yaml.safe_load(Path(sshd["profile"]).read_text())
    profile["connect"]["python"] = "/usr/bin/python3"
    if subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.skip("the system python3 has numpy")
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(profile))
    with pytest.raises(EdgekdError, match="pip install numpy"):
        probe(int8_model, load_profile(tmp_path / "bare.yaml"), _ssh_options(sshd))


def test_cli_ssh_failure_is_one_line(sshd, int8_model):
    d = sshd["dir"]
    done = subprocess.run(
        [sys.executable, "-m", "edgekd.cli", "probe", str(int8_model), "--device", sshd["profile"],
         "--host", f"{sshd['user']}@127.0.0.1", "--port", str(_free_port()), "--identity", str(d / "client_key"),
         "--ssh-config", str(d / "ssh_config"), "--connect-timeout", "3"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: connection refused")


# ---------------------------------------------------------------- adb / benchmark_model

# Real benchmark_model output, as printed by the tool and published in its users' reports.
# Newer format with percentiles (TFLite benchmark_model on an arm64 board, Toradex/NXP style docs):
NEW_OUTPUT = """INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""
# Newer format without percentiles (Android, yolov5s fp32, 4 threads):
NEW_NO_PERCENTILES = """count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""
# Older format (TFLite docs of 2019, mobilenet_v1_1.0_224_quant on a phone):
OLD_OUTPUT = """Loaded model mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 4.452ms
Running benchmark for 1 iterations
count=1 curr=146161

Running benchmark for 50 iterations
count=50 first=137789 curr=137254 min=137079 max=143416 avg=137722 std=896

Average inference timings in us: Warmup: 146161, Init: 4452, no stats: 137722
"""
# The line shared/REFERENCES.md quotes (Android):
REFERENCE_LINES = """Inference timings in us: Init: 34939, First inference: 130492, Warmup (avg): 116523, Inference (avg): 112533
Memory footprint delta from the start of the tool (MB): init=6.70312 overall=63.4023
"""


def test_parse_new_format_with_percentiles():
    r = parse_benchmark_output(NEW_OUTPUT)
    assert r["init_ms"] == pytest.approx(5.579) and r["first_ms"] == pytest.approx(1357.602)
    lat = r["latency_ms"]
    assert lat["p50"] == pytest.approx(1239.807) and lat["p95"] == pytest.approx(1247.415)
    assert lat["mean"] == pytest.approx(1240.27) and lat["p5"] <= lat["p50"] <= lat["p95"] <= lat["max"]
    assert "p90" not in lat and "p99" not in lat  # the tool does not print them: none is made up
    assert r["runs"] == 50 and r["memory_mb"] == {"init": 6.36328, "overall": 109.832}


def test_parse_new_format_without_percentiles_keeps_mean_and_std_only():
    r = parse_benchmark_output(NEW_NO_PERCENTILES)
    lat = r["latency_ms"]
    assert lat["mean"] == pytest.approx(249.684) and lat["std"] == pytest.approx(1.442)
    assert not {"p50", "p90", "p99"} & set(lat)
    assert r["ram_bytes"] == int(138.809 * 2**20)


def test_mean_only_result_is_shown_saved_and_reported(tmp_path):
    """A phone result with a mean and no percentiles goes through `edgekd probe`'s display, the
    probes folder and `edgekd report` (all of which once read p50/p90/p99 unconditionally)."""
    from edgekd.probes import latency_text
    from edgekd.probes.command import show

    model = tmp_path / "student.int8.tflite"
    model.write_bytes(b"not read")
    result = {"device": "android-arm64", "kind": "phone", "source": "measured", "model": str(model),
              "format": "tflite", "runtime": "benchmark_model",
              **parse_benchmark_output(NEW_NO_PERCENTILES)}
    assert latency_text(result["latency_ms"]) == "mean 249.684 ± 1.442 ms"
    show(result)
    saved = save_probe(result)
    done = CliRunner().invoke(cli, ["report", str(tmp_path), "--out", str(tmp_path / "report")])
    assert done.exit_code == 0, done.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert "mean 249.684 ± 1.442 ms" in html and saved.parent.name == "probes"


def test_probe_result_cannot_leave_the_probes_folder(tmp_path):
    model = tmp_path / "m.tflite"
    out = save_probe({"device": "../../../escaped", "model": str(model), "latency_ms": {"mean": 1.0}})
    assert out.parent == tmp_path / "probes" and out.name == "m.tflite._.._.._escaped.json"


ADB_STAND_IN = """#!/bin/sh
# adb for the test: `-s SERIAL push LOCAL REMOTE` copies, `-s SERIAL shell WORDS` runs the words
# through sh as adbd does on a phone, so quoting is exercised by a real shell.
shift 2
cmd=$1; shift
case $cmd in
  push) cp "$1" "$2" ;;
  shell) exec sh -c "$*" ;;
esac
"""
BENCHMARK_STAND_IN = """#!/bin/sh
echo 'Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06'
"""


def test_adb_quotes_every_argument_on_a_real_shell(tmp_path, monkeypatch):
    """A model named `a b *.tflite`: with unquoted words the clean-up `rm -f DIR/a b *.tflite`
    would delete every file of the phone's folder; quoted, only the copies go."""
    bin_dir, phone = tmp_path / "bin", tmp_path / "phone"
    bin_dir.mkdir(), phone.mkdir()
    (bin_dir / "adb").write_text(ADB_STAND_IN)
    (bin_dir / "adb").chmod(0o755)
    tool = tmp_path / "benchmark_model"
    tool.write_text(BENCHMARK_STAND_IN)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (phone / "keep.txt").write_text("the user's file")
    (phone / "a").write_text("a file named like the model's first word")
    model = tmp_path / "a b *.tflite"
    model.write_bytes(b"model bytes")
    profile = load_profile("android-arm64")
    profile["connect"].update(remote_dir=str(phone), big_cores="1")
    r = probe(model, profile, ProbeOptions(serial="emulator-5554", benchmark_binary=str(tool), runs=3))
    assert r["latency_ms"] == {"mean": 1240.27}
    assert sorted(p.name for p in phone.iterdir()) == ["a", "keep.txt"]


def test_ssh_destination_that_looks_like_an_option_is_refused(tmp_path):
    """`-oProxyCommand=...` as a host would make ssh run a local command."""
    marker = tmp_path / "ran"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    done = subprocess.run([sys.executable, "-m", "edgekd.cli", "probe", str(model), "--device", "raspberry-pi-5",
                           "--host", f"-oProxyCommand=touch {marker}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: --host") and done.stderr.count("\n") == 1
    assert not marker.exists()


def test_parse_old_format():
    r = parse_benchmark_output(OLD_OUTPUT)
    assert r["init_ms"] == pytest.approx(4.452) and r["warmup_ms"] == pytest.approx(146.161)
    assert r["latency_ms"]["mean"] == pytest.approx(137.722) and r["latency_ms"]["max"] == pytest.approx(143.416)


def test_parse_reference_lines_and_garbage():
    r = parse_benchmark_output(REFERENCE_LINES)
    assert r["latency_ms"] == {"mean": 112.533} and r["memory_mb"]["overall"] == 63.4023
    with pytest.raises(EdgekdError, match="no inference timings; its last line: Segmentation fault"):
        parse_benchmark_output("STARTING!\nSegmentation fault\n")


@pytest.mark.skipif(not (os.environ.get("EDGEKD_ADB_SERIAL") and os.environ.get("EDGEKD_BENCHMARK_BINARY")),
                    reason="set EDGEKD_ADB_SERIAL and EDGEKD_BENCHMARK_BINARY to probe a real phone")
def test_adb_end_to_end(int8_model):
    r = probe(int8_model, load_profile("android-arm64"),
              ProbeOptions(serial=os.environ["EDGEKD_ADB_SERIAL"], runs=20,
                           benchmark_binary=os.environ["EDGEKD_BENCHMARK_BINARY"]))
    assert r["source"] == "measured" and r["latency_ms"]["mean"] > 0
