"""``compute { launcher = torchrun ... }``: how training steps are launched. A setting, not a step: the compute
block a training step launches with enters that step's configuration (and so its fingerprint)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import declare
from sdk.spec.objects import DeepSpeed, Fsdp, host_name
from sdk.spec.values import Block, PositiveInt, off_default, refuse_unread


@declare("compute", role="setting", labelled=False)
class ComputeBlock(Block):
    """How training steps are launched: in-process, or through accelerate / torchrun on many processes."""

    launcher: Literal["none", "accelerate", "torchrun"] = Field(default="none", description="Process launcher")
    num_processes: PositiveInt = Field(default=1, description="Processes per machine (GPUs, or CPU workers)")
    num_machines: PositiveInt = Field(default=1, description="Machines (multi-node)")
    machine_rank: int = Field(default=0, ge=0, le=65535, description="Rank of this machine")
    main_process_ip: Optional[str] = Field(default=None, description="Address of rank 0 (multi-node)")
    main_process_port: int = Field(default=29500, ge=1, le=65535, description="Port of rank 0")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(default="no", description="Mixed precision")
    cpu: bool = Field(default=False, description="Force CPU training (gloo backend)")
    activation_checkpointing: Optional[bool] = Field(
        default=None, description="Recompute activations in the backward pass to save memory (default: on for "
        "fine-tuning on a GPU, off on the CPU and for pre-training)")
    kernels: Literal["none", "liger"] = Field(
        default="none", description="Fused training kernels: liger (Liger Kernel's Triton RMSNorm, RoPE, SwiGLU and "
        "fused cross-entropy for Llama-family models; needs a CUDA GPU and the liger-kernel package)")
    deepspeed: Optional[DeepSpeed] = Field(default=None, description="DeepSpeed ZeRO settings")
    fsdp: Optional[Fsdp] = Field(default=None, description="FSDP settings")

    @field_validator("main_process_ip")
    @classmethod
    def _host(cls, v: Optional[str]) -> Optional[str]:
        return host_name(v) if v is not None else v

    @model_validator(mode="after")
    def _one_sharding(self) -> "ComputeBlock":
        if self.deepspeed is not None and self.fsdp is not None:
            raise PydanticCustomError("incompatible", "choose deepspeed or fsdp, not both", {})
        if (self.deepspeed or self.fsdp) and self.launcher != "accelerate":
            raise PydanticCustomError("incompatible", "deepspeed and fsdp need launcher = accelerate", {})
        if self.num_machines > 1 and not self.main_process_ip:
            raise PydanticCustomError("incompatible", "num_machines > 1 needs main_process_ip", {})
        if self.machine_rank >= self.num_machines and self.launcher != "none":
            raise PydanticCustomError("incompatible", "machine_rank ({r}) must be below num_machines ({n}): ranks "
                                      "count from 0", {"r": self.machine_rank, "n": self.num_machines})
        if self.mixed_precision == "fp16" and self.cpu:
            raise PydanticCustomError("incompatible", "mixed_precision = fp16 needs a GPU, and cpu = true trains on "
                                      "the CPU (the trainer refuses it): use bf16 or no, or drop cpu", {})
        if self.launcher == "none":
            refuse_unread(off_default(self, ("num_processes", "num_machines", "machine_rank", "main_process_ip",
                                             "main_process_port")),
                          "{names} {verb} to a launcher, and launcher = none trains in this one process: set launcher "
                          "= torchrun or accelerate, or drop {names}", joiner=", ")
        if self.kernels == "liger" and self.cpu:
            raise PydanticCustomError("incompatible", "kernels = liger runs on a CUDA GPU only, and cpu = true trains on "
                                      "the CPU: drop kernels or cpu", {})
        return self
