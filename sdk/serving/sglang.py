"""SGLang behind the gateway: starting it and waiting until it is ready (its launch command and request naming are
planned at apply time by :mod:`sdk.backends.serve.engines`)."""

from __future__ import annotations

import subprocess
import time
from typing import Callable, Optional

from sdk.backends.serve.engines import launch_command, model_name  # noqa: F401 - re-exported


def start(cmd: list[str], port: int, timeout: float = 900.0, log: Optional[Callable[[str], None]] = None,
          check_installed: bool = True) -> subprocess.Popen:
    """Start SGLang and wait until its ``/health`` answers 200 (needs CUDA: see docs/serving.md). Raises DslError
    when sglang is not installed, exits early, or is not ready within ``timeout`` seconds."""
    import importlib.util

    import httpx

    from sdk.errors import DslError

    if check_installed and cmd[1:3] == ["-m", "sglang.launch_server"] and importlib.util.find_spec("sglang") is None:
        raise DslError("serve.engine = sglang, but sglang is not installed here: pip install 'domain-dsl[sglang]' "
                       "on a machine with CUDA GPUs, or use engine = local")
    if log:
        log("starting SGLang: " + " ".join(cmd))
    proc = subprocess.Popen(cmd)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise DslError(f"sglang exited with code {proc.returncode} before it was ready (its output is above)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                if log:
                    log(f"SGLang is ready on port {port}")
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    raise DslError(f"sglang did not become ready on port {port} within {timeout:.0f}s")
