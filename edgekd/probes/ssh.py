"""Probe a Linux board over SSH with the system's OpenSSH client (so ~/.ssh/config aliases, agents
and known_hosts work as they do for the user).

Copies the model and runner.py to a fresh temporary directory on the device, lets the runner check
the copy's sha256, runs it with the device's python3, streams images for top-1 when asked, and
removes the directory. BatchMode and ConnectTimeout make every failure fast and one line.
"""
import shlex
import subprocess

from ..errors import EdgekdError
from ..fileio import sha256
from . import RUNNER, eval_chunks, input_range, measured, runner_args, stream_runner

# ssh's own messages -> what went wrong and what to do, in one line.
FAILURES = [
    ("Connection refused", "connection refused by {host}{port}: is sshd running there, and is the port right?"),
    ("Permission denied", "{host} refused the SSH key: check --identity, the user name and ~/.ssh/authorized_keys on the device"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the host key of {host} does not match known_hosts: if the device was reinstalled, remove the old key (ssh-keygen -R {host})"),
    ("Host key verification failed", "the host key of {host} could not be verified against known_hosts"),
    ("timed out", "connecting to {host}{port} timed out: is the device on and reachable?"),
    ("Could not resolve hostname", "unknown host {host}: check the address or your ~/.ssh/config alias"),
    ("No route to host", "no route to {host}: is the device on this network?"),
    ("Network is unreachable", "network unreachable for {host}"),
    ("Connection closed", "{host} closed the connection during the SSH handshake"),
]


class Remote:
    def __init__(self, target: str, options):
        if not target or target.startswith("-"):  # ssh would read it as an option (-oProxyCommand=...)
            raise EdgekdError(f"--host {target!r} is not an SSH destination: give user@address or an alias")
        self.target, self.options = target, options
        self.base = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(options.connect_timeout))}",
                     # new hosts are remembered; a changed key is refused (ssh's safe default)
                     "-o", "StrictHostKeyChecking=accept-new",
                     "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if options.ssh_config:
            self.base += ["-F", options.ssh_config]
        if options.port:
            self.base += ["-p", str(options.port)]
        if options.identity:
            self.base += ["-i", options.identity, "-o", "IdentitiesOnly=yes"]
        self.base += ["--", target]  # options end here, whatever the destination says

    def explain(self, rc: int, stderr: str) -> str:
        host = self.target.split("@")[-1]
        port = f" port {self.options.port}" if self.options.port else ""
        for pattern, message in FAILURES:
            if pattern.lower() in stderr.lower():
                return message.format(host=host, port=port)
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return f"ssh to {self.target} failed (exit {rc}): {lines[-1] if lines else 'no message'}"

    def run(self, command: str, stdin=None, timeout: float = 30) -> str:
        """Run a shell command on the device; any failure raises one clear line."""
        try:
            done = subprocess.run(self.base + [command], stdin=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgekdError(f"ssh to {self.target} did not answer within {timeout:.0f} s") from None
        except FileNotFoundError:
            raise EdgekdError("the ssh client was not found: install OpenSSH (apt-get install openssh-client)") from None
        if done.returncode == 255:
            raise EdgekdError(self.explain(255, done.stderr.decode(errors="replace")))
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            raise EdgekdError(f"on {self.target}, `{command}` failed: {err[-1] if err else f'exit {done.returncode}'}")
        return done.stdout.decode(errors="replace")

    def copy(self, local, remote_path: str):
        # Bytes over ssh's stdin: no scp/sftp needed on the device; the runner checks the sha256.
        size_mb = local.stat().st_size / 1e6
        with open(local, "rb") as f:
            self.run(f"cat > {shlex.quote(remote_path)}", stdin=f, timeout=30 + size_mb)


def probe(path, fmt, profile, options):
    target = options.host or profile["connect"].get("host")
    python = profile["connect"].get("python", "python3")
    remote = Remote(target, options)
    handshake = 2 * options.connect_timeout + 10
    out = remote.run(f"d=$(mktemp -d /tmp/edgekd-probe.XXXXXX) && echo $d && (command -v {python} || echo NO-PYTHON)",
                     timeout=handshake).split()
    workdir = out[0]
    try:
        if out[-1] == "NO-PYTHON":
            raise EdgekdError(f"{target} has no {python}: install Python 3 and numpy there "
                              "(sudo apt install python3-numpy), then pip install ai-edge-litert")
        value_range = input_range(path, options.input_range)
        options.threads = options.threads or profile["cpu"].get("cores") or 1
        model_remote = f"{workdir}/{path.name}"
        remote.copy(RUNNER, f"{workdir}/runner.py")
        remote.copy(path, model_remote)
        chunks, labels = eval_chunks(options.eval_data, options.eval_limit) if options.eval_data else (None, None)
        args = runner_args(model_remote, options, value_range, digest=sha256(path))
        command = remote.base + [f"cd {shlex.quote(workdir)} && {python} runner.py " + " ".join(map(shlex.quote, args))]
        run = stream_runner(command, chunks, labels, options.timeout, remote.explain)
    finally:
        try:
            remote.run(f"rm -rf {shlex.quote(workdir)}", timeout=handshake)
        except EdgekdError:
            pass  # the probe's own error (or result) matters more than a failed clean-up
    return measured(profile, path, fmt, run, value_range, host=target)
