"""edgekd: data-free distillation of black-box image classifiers for edge devices.

The Python API (edgekd/api.py) is one function per stage: load_teacher, distill, export, probe,
report, and run for the whole chain."""

__version__ = "0.1.0"

from .api import distill, export, load_teacher, probe, report, run  # noqa: E402

__all__ = ["distill", "export", "load_teacher", "probe", "report", "run"]
