"""SGLang behind the gateway: the launch command for the trained adapters, readiness, and request naming."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, Optional


def launch_command(base: str, adapters: dict[str, str], options: dict[str, Any], port: int,
                   host: str = "127.0.0.1") -> list[str]:
    """``python -m sglang.launch_server --model-path BASE --enable-lora --lora-paths name=path ...``"""
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", base, "--host", host, "--port", str(port),
           "--tp", str(options.get("tp", 1)), "--dp", str(options.get("dp", 1))]
    if adapters:
        cmd += ["--enable-lora", "--lora-paths"] + [f"{name}={path}" for name, path in sorted(adapters.items())]
        cmd += ["--max-loras-per-batch", str(options.get("max_loras_per_batch", 4))]
    if options.get("mem_fraction") is not None:
        cmd += ["--mem-fraction-static", str(options["mem_fraction"])]
    return cmd + list(options.get("extra_args", []))


def model_name(base: str, adapter: Optional[str]) -> str:
    """SGLang addresses a LoRA adapter as ``base:adapter`` in the request's model field."""
    return f"{base}:{adapter}" if adapter else base


def start(cmd: list[str], port: int, timeout: float = 600.0) -> subprocess.Popen:
    """Start SGLang and wait until its /health answers (needs CUDA: see docs/serving.md)."""
    import httpx

    proc = subprocess.Popen(cmd)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sglang exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(2)
    proc.terminate()
    raise RuntimeError(f"sglang did not become ready on port {port} within {timeout:.0f}s")
