"""edgekd: data-free distillation of black-box image classifiers for edge devices."""

__version__ = "0.1.0"
