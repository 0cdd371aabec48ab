"""Data-free distillation methods, one file each, behind one interface (methods/base.py)."""
from ..errors import EdgekdError
from ..registry import Registry

METHODS = Registry("method")

from . import bnstats, cgdd, condbn, dafl, dafl_zo, ddad, fast, procedural, proxy  # noqa: E402,F401  (each registers itself)

# `--method auto` takes the first method of its list that the teacher's access allows. The
# orders are what the benchmarks measured (docs/benchmarks.md, "Time to accuracy" and "Query-only teachers",
# benchmarks/time_to_accuracy.py). condbn leads on teachers with BatchNorm. On colour images
# (CIFAR-10) procedural comes next: after 10 minutes it had taught resnet20 30 %, bnstats, fast,
# ddad, dafl and cgdd with the teacher's gradients 14 % or less, dafl-zo without them 10 %.
# On greyscale digits (MNIST) the generators lead: dafl on teachers without BatchNorm, dafl-zo on
# teachers that can only be run or answer labels only. proxy, the other method for those,
# measured below them, is there by name.
AUTO_ORDER = {
    "colour": ["condbn", "procedural", "bnstats", "fast", "ddad", "dafl", "cgdd", "dafl-zo", "proxy"],
    "greyscale": ["condbn", "bnstats", "fast", "ddad", "dafl", "cgdd", "dafl-zo", "procedural", "proxy"],
}


def usable_methods(access: set) -> list[str]:
    return [name for name, cls in METHODS.items() if cls.needs <= access]


def resolve_method(name: str, access: set, channels: int) -> str:
    """The method `name` names, checked against the teacher's access; for auto, the first of
    AUTO_ORDER for images of `channels` channels that the access allows."""
    if name == "auto":
        order = AUTO_ORDER["greyscale" if channels == 1 else "colour"]
        return next(m for m in order if METHODS.get(m).needs <= access)
    cls = METHODS.get(name)
    missing = cls.needs - access
    if missing:
        what = {"bn": "BatchNorm layers", "features": "a final linear layer",
                "gradients": "gradients (a differentiable graph answering more than labels)"}
        raise EdgekdError(
            f"method '{name}' needs {' and '.join(what[m] for m in sorted(missing))} in the teacher, "
            f"which this teacher does not expose; usable here: {', '.join(usable_methods(access))}")
    return name
