"""Launching a training job: in this process, or in every rank of a torchrun / accelerate launch run.

A job is a plain JSON-able dict and a job function (``pretrain_job``, ``finetune_job``, ...). Each job module owns
its ``python -m`` entry point, which calls :func:`main` with its job function, so nothing here imports a job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from sdk import limits
from sdk.backends import charts
from sdk.backends.models import quiet_library_deprecations
from sdk.errors import DslError
from sdk.progress import Relay, mirror
from sdk.records.job import check_job, load_job, save_job


def launch_command(compute: dict[str, Any], job_path: Path, config_dir: Path,
                   module: str = "sdk.backends.training.finetune") -> list[str]:
    """The command that runs a training job under the compute block's launcher: ``python -m MODULE JOB.json``,
    where MODULE is the job's own module (its ``__main__`` calls :func:`main` with its job function)."""
    n = int(compute.get("num_processes", 1))
    if compute.get("launcher") == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
               f"--nnodes={compute.get('num_machines', 1)}", f"--node_rank={compute.get('machine_rank', 0)}"]
        if int(compute.get("num_machines", 1)) > 1:
            cmd += [f"--master_addr={compute.get('main_process_ip')}", f"--master_port={compute.get('main_process_port', 29500)}"]
        elif int(compute.get("main_process_port", 29500)) != 29500:
            cmd += ["--master_port", str(compute["main_process_port"])]
        else:  # one machine, no port asked for: a free one, so two applies on one machine do not collide
            cmd += ["--standalone"]
        return cmd + ["-m", module, str(job_path)]
    config = accelerate_config(compute)
    config_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = config_dir / "accelerate.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(config, sort_keys=True))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg_path),
            "-m", module, str(job_path)]


def accelerate_config(compute: dict[str, Any]) -> dict[str, Any]:
    """An accelerate config file for the compute block: multi-GPU, multi-node, DeepSpeed ZeRO or FSDP."""
    n, machines = int(compute.get("num_processes", 1)), int(compute.get("num_machines", 1))
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if n * machines > 1 else "NO",
        "num_processes": n * machines,
        "num_machines": machines,
        "machine_rank": int(compute.get("machine_rank", 0)),
        "main_training_function": "main",
        "mixed_precision": compute.get("mixed_precision", "no"),
        "use_cpu": bool(compute.get("cpu", False)),
        "same_network": True,
        "rdzv_backend": "static",
    }
    if machines > 1:
        cfg["main_process_ip"] = compute.get("main_process_ip")
        cfg["main_process_port"] = int(compute.get("main_process_port", 29500))
    if compute.get("deepspeed"):
        ds = compute["deepspeed"]
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {"zero_stage": int(ds.get("stage", 2)), "gradient_accumulation_steps": 1,
                                   "offload_optimizer_device": "cpu" if ds.get("offload") else "none",
                                   "offload_param_device": "cpu" if ds.get("offload") and int(ds.get("stage", 2)) == 3 else "none",
                                   "zero3_init_flag": int(ds.get("stage", 2)) == 3}
    if compute.get("fsdp"):
        fs = compute["fsdp"]
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {"fsdp_sharding_strategy": fs.get("sharding", "full_shard").upper(),
                              "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP" if fs.get("auto_wrap", "transformer") == "transformer" else "SIZE_BASED_WRAP",
                              "fsdp_offload_params": bool(fs.get("offload")), "fsdp_state_dict_type": "SHARDED_STATE_DICT",
                              "fsdp_use_orig_params": True}
    return cfg


def run_job(job: dict[str, Any], job_fn: Callable[..., dict[str, Any]], progress: Any = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run a training job in this process through its kind's job function (each job module owns its function
    and its ``python -m`` entry point, so this module imports none of them). The chart process starts first, so
    matplotlib's import overlaps the job's own (:mod:`sdk.backends.charts`); its charts are drawn before this returns."""
    if is_main_process():
        charts.start()
    try:
        quiet_library_deprecations()
        return job_fn(job, progress, log)
    finally:
        charts.finish()


def run_step_job(ctx: Any, job: dict[str, Any], job_fn: Callable[..., dict[str, Any]], module: str) -> dict[str, Any]:
    """Run a training step's job in this process, or in several through its compute block's launcher (torchrun or
    accelerate starting ``python -m MODULE job.json`` on each rank; rank 0's result comes back)."""
    compute = check_job(job)["block"].get("compute") or {}
    if compute.get("launcher") in ("torchrun", "accelerate"):
        return run_launched(job, compute, Path(ctx.checkpoint_dir) / "launch", ctx.log, module=module,
                            progress=ctx.progress)
    return run_job(job, job_fn, ctx.progress, ctx.log)


def run_launched(job: dict[str, Any], compute: dict[str, Any], work: Path, log: Callable[[str], None],
                 module: str, progress: Any = None) -> dict[str, Any]:
    """Run a job in several processes through the launcher; rank 0 writes the result file, and its progress
    (:class:`sdk.progress.Relay`, ``progress.jsonl``) is shown through ``progress`` while the ranks run."""
    work.mkdir(parents=True, exist_ok=True)
    job = {**job, "result_path": str(work / "result.json")}
    job_path = save_job(job, work)  # checked, then written (sdk.records.job)
    cmd = launch_command(compute, job_path, work, module)
    log("launching: " + " ".join(cmd))
    env = {**os.environ, **limits.child_env(), "OMP_NUM_THREADS": "1", "DSL_DISTRIBUTED": "1"}
    if compute.get("cpu") or not _cuda():
        env["DSL_DDP_BACKEND"] = "gloo"
    (work / "error.txt").unlink(missing_ok=True)
    (work / "progress.jsonl").unlink(missing_ok=True)
    stop = threading.Event()
    shown = threading.Thread(target=mirror, args=(work / "progress.jsonl", progress, stop), daemon=True) \
        if progress is not None else None
    if shown is not None:
        shown.start()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        stop.set()
        if shown is not None:
            shown.join(timeout=10)
    if (work / "error.txt").exists():  # a DslError in a rank: the user's message, not a traceback
        raise DslError((work / "error.txt").read_text(encoding="utf-8"))
    if proc.returncode != 0:
        raise DslError(f"the {compute.get('launcher')} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((work / "result.json").read_text())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """How many processes train together (1 unless a launcher started this one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_args() -> Optional[dict[str, Any]]:
    if os.environ.get("DSL_DISTRIBUTED") != "1":
        return None
    out: dict[str, Any] = {}
    if os.environ.get("DSL_DDP_BACKEND") and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a single process has no group
        out["ddp_backend"] = os.environ["DSL_DDP_BACKEND"]
    return out


def main(job_fn: Callable[..., dict[str, Any]], argv: Optional[list[str]] = None) -> None:
    """Entry point of each launched process, called by a job module's ``__main__`` (``python -m
    sdk.backends.training.finetune JOB.json``)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        job = load_job(Path(argv[0]))  # validated: a damaged job.json is named, no traceback
    except DslError as e:
        print(e, file=sys.stderr)
        raise SystemExit(1) from None
    try:
        relay = Relay(Path(argv[0]).parent / "progress.jsonl") if is_main_process() else None
        result = run_job(job, job_fn, relay, lambda m: print(m, file=sys.stderr) if is_main_process() else None)
    except DslError as e:
        if is_main_process():
            (Path(argv[0]).parent / "error.txt").write_text(str(e), encoding="utf-8")
        raise SystemExit(1) from None
    if is_main_process() and job.get("result_path"):
        Path(job["result_path"]).write_text(json.dumps(result))
