"""edgekd report on a run directory with training logs, a generator, exports and real probe results."""
import base64
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import skip_unless_ci

from edgekd.cli import cli
from edgekd.devices import load_profile
from edgekd.fileio import write_json
from edgekd.generators import Generator
from edgekd.probes import ProbeOptions, probe, save_probe
from edgekd.reporting import PLOTS, build_report


@pytest.fixture(scope="module")
def run_dir(shared, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    with open(run / "metrics.jsonl", "w") as f:
        for i in range(1, 9):
            f.write(json.dumps({"iteration": 100 * i, "seconds": 30.0 * i, "losses": {"kd": 1 / i},
                                "fidelity": 40 + 6 * i, "student_top1": 35 + 7 * i}) + "\n")
        f.write('{"iteration": 900, "seco')  # a torn last line, as after a crash
    write_json(run / "summary.json", {"method": "dafl", "student": "resnet8", "iterations": 800,
                                      "fidelity": 88.0, "student_top1": 91.0})
    (run / "config.yaml").write_text(yaml.safe_dump({
        "teacher": {"path": "/data/resnet56.pt2"},
        "preprocessing": {"range": [0, 1], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}))
    g = Generator(16, (3, 32, 32), width=16)
    torch.save({"state_dicts": [g.state_dict()], "latent_dim": 16, "image_shape": [3, 32, 32], "width": 16,
                "num_classes": 0}, run / "generator.pt")
    export = run / "export"
    export.mkdir()
    artifacts = []
    for name, precision in (("pretrainedResnet_quant.tflite", "int8"), ("pretrainedResnet.tflite", "float32")):
        path = export / f"student_{precision}.tflite"
        shutil.copy(shared / "reference-models/mlperf-tiny-ic" / name, path)
        artifacts.append({"path": str(path), "format": "tflite", "precision": precision,
                          "size_bytes": path.stat().st_size, "agreement": 99.1, "top1": 86.9,
                          "latency_ms": 0.2 if precision == "int8" else 0.5,
                          "ops": ["CONV_2D", "FULLY_CONNECTED"]})
        for device in ("nucleo-l4r5zi", "stm32h7", "nrf52840"):
            save_probe(probe(path, load_profile(device), ProbeOptions()))
        save_probe(probe(path, load_profile("host"), ProbeOptions(runs=10, threads=1, input_range=255)))
    save_probe(probe(export / "student_int8.tflite", load_profile("raspberry-pi-4"), ProbeOptions()))
    write_json(export / "export.json", {"artifacts": artifacts})
    return run


def test_full_report(run_dir):
    md, page, missing = build_report(run_dir)
    assert missing == []
    text = md.read_text()
    for heading in ("## Run", "## Exports", "## Probes", "## Accuracy and fidelity", "## Synthetic samples",
                    "## Latency per device", "## Memory against"):
        assert heading in text
    assert "student_int8.tflite | nucleo-l4r5zi (tflm-cmsis-nn) | estimated" in text and "| host | measured |" in text
    for key in ("training", "samples", "latency", "memory"):
        assert (md.parent / f"report-{key}.png").read_bytes()[:4] == b"\x89PNG"
    html = page.read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(images) == 4 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched


def test_partial_run_says_what_is_missing(tmp_path):
    write_json(tmp_path / "summary.json", {"method": "dafl", "fidelity": 50.0})
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "not found: export/export.json" in result.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Not in this run directory" in text and "metrics.jsonl" in text


def test_empty_or_missing_run_dir(tmp_path):
    from edgekd.errors import EdgekdError

    with pytest.raises(EdgekdError, match="nothing edgekd can report"):
        build_report(tmp_path)
    with pytest.raises(EdgekdError, match="not found"):
        build_report(tmp_path / "nope")


# Injected into a copy of the page: a policy that blocks (and reports) any request leaving the
# page, and a script that writes what the browser loaded into the DOM for --dump-dom.
BROWSER_CHECK = """<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<script>
const blocked = [];
document.addEventListener("securitypolicyviolation", e => blocked.push(e.blockedURI));
window.addEventListener("load", () => setTimeout(() => {
  const out = document.createElement("pre");
  out.id = "edgekd-check";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0})),
    blocked, overflows: document.documentElement.scrollWidth > window.innerWidth});
  document.body.appendChild(out);
}, 200));
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    skip_unless_ci("Chromium not found: apt-get install chromium (.ci/run does)")


def headless(browser, page, *args) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,4000", "--virtual-time-budget=5000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def seen_by_browser(browser, page, tmp_path) -> dict:
    checked = tmp_path / f"checked-{page.name}"
    checked.write_text(page.read_text().replace("<head>", "<head>" + BROWSER_CHECK, 1))
    dom = headless(browser, checked, "--dump-dom").stdout
    found = re.search(r'<pre id="edgekd-check">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_the_report_in_a_real_browser(run_dir, tmp_path):
    """What a person sees: every plot loads, nothing is fetched from outside the page, the page
    fits a laptop-wide window; and the screenshot is a rendered page, not a blank one."""
    browser = chromium()
    _, page, _ = build_report(run_dir, tmp_path / "report")
    seen = seen_by_browser(browser, page, tmp_path)
    assert [i["alt"] for i in seen["images"]] == [title for _, title in PLOTS]
    assert all(i["loaded"] for i in seen["images"]) and seen["blocked"] == [] and not seen["overflows"], seen
    # The check can fail: a page that fetches an image from the network is caught.
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("</body>", "<img alt='remote' src='https://example.com/x.png'></body>"))
    seen = seen_by_browser(browser, leaky, tmp_path)
    assert seen["blocked"] == ["https://example.com/x.png"] and not seen["images"][-1]["loaded"]

    shot = tmp_path / "report.png"
    headless(browser, page, f"--screenshot={shot}")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (4000, 1280) and pixels.std() > 20  # text, tables and plots, not an empty page
