"""Running one of the scripts that start a whole system (chaos, soak) from a test, as `make` would."""

import signal
import subprocess
import sys

from scripts.run import ROOT


def run_script(module, argv, log_path, deadline, result_mark):
    """Run `python -m module argv` from the repository root with its output in `log_path`, for at most `deadline`
    seconds (then SIGTERM, which makes it stop the system it started). Returns its exit status (None when it had
    to be stopped), its output, and the payloads of its lines that start with `result_mark`."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        code = None
        try:
            code = process.wait(deadline)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
    output = log_path.read_text(errors="replace")
    results = [line[len(result_mark) :] for line in output.splitlines() if line.startswith(result_mark)]
    return code, output, results
