"""Training progress: a rich bar on a terminal, plain periodic lines otherwise (logs, CI)."""
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

PLAIN_EVERY_SECONDS = 15
STEPS = 1000  # the bar shows the fraction of the budget (iterations or time, whichever is nearer)


def describe(iteration, seconds, losses, images_per_second, last_eval, queries=0, query_limit=None) -> str:
    loss_text = " ".join(f"{k} {v:.3g}" for k, v in losses.items())
    text = f"it {iteration}  {loss_text}  {images_per_second:.0f} img/s  queries {queries:,}"
    if query_limit is not None:
        text += f"/{query_limit:,}"
    # The figures of the last evaluation, said to be from its iteration: never shown as current.
    if "student_top1" in last_eval:
        text += f"  top-1 {last_eval['student_top1']:.1f}%"
    if "fidelity" in last_eval:
        text += f"  agrees with teacher {last_eval['fidelity']:.1f}%"
    if "student_top1" in last_eval or "fidelity" in last_eval:
        text += f" (at it {last_eval['iteration']})"
    return text


class Progress:
    def __init__(self, budget, enabled: bool, log=print):
        self.budget, self.log = budget, log
        self.rich = enabled and sys.stdout.isatty()
        self.last_print = 0.0
        self.window = (0, 0.0)  # (iteration, seconds) at the start of the speed window
        if self.rich:
            self.bar = RichProgress(TextColumn("distilling"), BarColumn(), TimeRemainingColumn(),
                                    TextColumn("{task.fields[status]}"), console=Console(), transient=False)
            self.task = self.bar.add_task("distill", total=STEPS, status="starting")

    def __enter__(self):
        if self.rich:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.rich:
            self.bar.__exit__(*exc)

    def update(self, iteration, seconds, losses, batch_size, last_eval, queries=0, query_limit=None):
        start_it, start_s = self.window
        speed = (iteration - start_it) * batch_size / max(seconds - start_s, 1e-9)
        if seconds - start_s > 10:
            self.window = (iteration, seconds)
        text = describe(iteration, seconds, losses, speed, last_eval, queries, query_limit)
        if self.rich:
            self.bar.update(self.task, completed=STEPS * self.budget.fraction(iteration, seconds), status=text)
        elif time.monotonic() - self.last_print >= PLAIN_EVERY_SECONDS:
            self.last_print = time.monotonic()
            self.log(f"[{seconds / 60:5.1f} min] {text}")
