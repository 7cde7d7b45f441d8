extends "telecom.dsl"

# recipes/telecom.dsl on a bigger cluster: two machines with 8 GPUs each, QLoRA instead of LoRA, longer
# training and a wider SGLang deployment. `extends` inherits every block of telecom.dsl; a block written here
# with the same kind and label overrides only the attributes it sets (inline objects such as lora = { ... }
# are replaced whole).
#
#   dsl plan recipes/telecom-gpu.dsl     # on rank 0; set machine_rank = 1 in a copy for the second machine
domain telecom_gpu {
  pretrain notes {
    epochs = 3
    batch_size = 8
  }

  finetune ops {
    method = qlora
    lora = { rank = 64, alpha = 128, dropout = 0.05 }
    batch_size = 16
  }

  eval ops {
    gate = rag.ops.f1.ci_low >= base_model.llama3.f1
  }

  serve {
    sglang = { tp = 2, dp = 4, mem_fraction = 0.9, max_loras_per_batch = 8 }
  }

  compute {
    num_machines = 2
    main_process_ip = "10.0.0.1"
    main_process_port = 29500
    fsdp = { sharding = hybrid_shard, auto_wrap = transformer }
  }
}
