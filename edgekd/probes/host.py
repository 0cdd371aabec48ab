"""Probe on this machine: the same runner the boards get, in a child process, so its peak memory
is the model's and not edgekd's."""
import os
import sys

from . import RUNNER, eval_chunks, input_range, measured, runner_args, stream_runner


def probe(path, fmt, profile, options):
    value_range = input_range(path, options.input_range)
    options.threads = options.threads or os.cpu_count()
    chunks, labels = eval_chunks(options.eval_data, options.eval_limit) if options.eval_data else (None, None)
    command = [sys.executable, str(RUNNER)] + runner_args(str(path), options, value_range)
    run = stream_runner(command, chunks, labels, options.timeout,
                        lambda rc, err: f"the runner failed (exit {rc}): {_last_line(err)}")
    return measured(profile, path, fmt, run, value_range)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
