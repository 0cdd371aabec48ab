"""Device profiles: one YAML file per target (kind, CPU, memory, runtimes, how to connect, latency
model and the source of every number).

Profiles are searched in $EDGEKD_DEVICES, ~/.config/edgekd/devices, the project's devices/ folder
and <prefix>/share/edgekd/devices (where a pip install puts them); the first file of a name wins,
so a user can override a shipped profile. `--device` also takes a path to a YAML file.
"""
import os
import platform
import sys
from pathlib import Path

import yaml

from .errors import EdgekdError
from .registry import did_you_mean

KINDS = ("mcu", "mpu", "phone", "host")
REQUIRED = ("name", "kind", "cpu", "ram_bytes", "connect")


def search_path() -> list:
    paths = [Path(p) for p in os.environ.get("EDGEKD_DEVICES", "").split(os.pathsep) if p]
    return paths + [Path.home() / ".config" / "edgekd" / "devices",
                    Path(__file__).resolve().parents[1] / "devices",
                    Path(sys.prefix) / "share" / "edgekd" / "devices"]


def _load(path: Path) -> dict:
    try:
        profile = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgekdError(f"device profile {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    missing = [k for k in REQUIRED if k not in profile]
    if missing or profile.get("kind") not in KINDS:
        raise EdgekdError(f"device profile {path} needs {', '.join(REQUIRED)} and a kind in {', '.join(KINDS)}")
    if profile["kind"] == "mcu" and profile.get("default_runtime") not in profile.get("runtimes", {}):
        raise EdgekdError(f"device profile {path}: default_runtime must name one of its runtimes")
    # What every runtime of the board shares (its RAM and flash outside the model), said once.
    shared = profile.pop("runtime_defaults", {})
    profile["runtimes"] = {name: {**shared, **runtime} for name, runtime in profile.get("runtimes", {}).items()}
    profile["path"] = str(path)
    return _fill_host(profile) if profile["kind"] == "host" else profile


def _fill_host(profile: dict) -> dict:
    """Replace the host profile's `auto` values with this machine's."""
    cpu = dict(profile["cpu"])
    if cpu.get("cores") == "auto":
        cpu["cores"] = os.cpu_count()
    if cpu.get("core") == "auto":
        cpu["core"] = _cpu_model() or platform.machine()
    if cpu.get("clock_hz") == "auto":
        cpu["clock_hz"] = None  # /proc/cpuinfo's MHz is the current, throttled clock: not a spec
    profile["cpu"] = cpu
    if profile.get("ram_bytes") == "auto":
        try:
            profile["ram_bytes"] = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            profile["ram_bytes"] = None
    return profile


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def list_profiles() -> list:
    seen = {}
    for folder in search_path():
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            seen.setdefault(path.stem, path)
    return [_load(p) for _, p in sorted(seen.items())]


def load_profile(name_or_path) -> dict:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _load(path)
    for folder in search_path():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return _load(candidate)
    names = [p["name"] for p in list_profiles()]
    raise EdgekdError(f"unknown device '{name_or_path}'{did_you_mean(str(name_or_path), names)} "
                      f"(known: {', '.join(names)}; or give a profile .yaml)")
