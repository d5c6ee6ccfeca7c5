"""What every benchmark shares: the machine it ran on (printed with every result), the best
of repeated timings, and the record of a run (printed, and written as JSON on request)."""

import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "system": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def best(fn, repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls of ``fn`` (a shared machine's noise only
    ever adds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def report(json_path: str | None, **results) -> None:
    """Print the machine; with ``json_path``, also write ``results`` and the machine there."""
    info = machine()
    print(info)
    if json_path:
        Path(json_path).write_text(json.dumps({**results, "machine": info}, indent=2))
