"""Data-free distillation methods, one file each, behind one interface (methods/base.py)."""
from ..errors import EdgekdError
from ..registry import Registry

METHODS = Registry("method")

from . import bnstats, cgdd, condbn, dafl, dafl_zo, ddad, fast, proxy  # noqa: E402,F401  (each registers itself)

# `--method auto` takes the first one the teacher's access allows. The order is what the
# benchmarks measured (README, "Time to accuracy", benchmarks/time_to_accuracy.py): condbn leads
# on teachers with BatchNorm, dafl on teachers without, dafl-zo on teachers that can only be run
# or answer labels only; proxy, the other method for those, measured below it (README, "Query-only
# teachers"), is there by name.
AUTO_ORDER = ["condbn", "bnstats", "fast", "ddad", "dafl", "cgdd", "dafl-zo", "proxy"]


def usable_methods(access: set) -> list[str]:
    return [name for name, cls in METHODS.items() if cls.needs <= access]


def resolve_method(name: str, access: set) -> str:
    if name == "auto":
        return next(m for m in AUTO_ORDER if METHODS.get(m).needs <= access)
    cls = METHODS.get(name)
    missing = cls.needs - access
    if missing:
        what = {"bn": "BatchNorm layers", "features": "a final linear layer",
                "gradients": "gradients (a differentiable graph answering more than labels)"}
        raise EdgekdError(
            f"method '{name}' needs {' and '.join(what[m] for m in sorted(missing))} in the teacher, "
            f"which this teacher does not expose; usable here: {', '.join(usable_methods(access))}")
    return name
