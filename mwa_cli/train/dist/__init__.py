"""Multi-GPU (and multi-process CPU) training on PyTorch's own engine: torchrun + DistributedDataParallel.

One module per job (this file imports none of them, so the torch-free ones stay cheap to import):

* `env`: the variables torchrun and mwa's launcher set (rank, world size, the launcher's start time, result
  file, command line); torch-free.
* `context`: the process groups. `init_from_env(device)` reads torchrun's variables (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR, MASTER_PORT), starts the default group (nccl on CUDA, gloo on CPU) and a second gloo
  group for control messages (stop/continue flags, evaluation results, long waits) that never touches the GPU
  stream. World size 1 (or no torchrun variables): nothing is started and every helper is a cheap no-op, so
  single-device code paths stay exactly as they were.
* `sharding`: the global batch of step s is the same as in a single process (`TrainBatches` is addressed by the
  global step); rank r of W takes rows r, r+W, r+2W, ... (`shard_slice`). With micro-batches of m/W per rank,
  every micro-batch of the W ranks together is exactly the single process's micro-batch of m.
* `gather`: each rank gathers all ranks' image and text embeddings *with gradients* (`rank_gather()`, the
  `Gather` that train/loss.py's one loss takes) and computes the contrastive loss of its own rows against every column of the global batch, labels offset by
  rank·b (open_clip `local_loss=True, gather_with_grad=True`; BEiT-3). Mean over ranks = the single-process loss,
  and DDP's gradient averaging then gives exactly the single-process gradient.
* `ddp`: the model's entry points are `encode_image`/`encode_text`, not `forward`, so DDP wraps a small
  `DualEncoder` whose forward runs both encoders: DDP's reducer hooks see the one forward per micro-batch and
  average every trainable gradient once per optimizer step (`no_sync` on the other micro-batches). Frozen
  parameters are not registered by DDP; trainable parameters that a method never uses (e.g. the vision
  `mask_token` under full fine-tuning) are found once by a probe and ignored, so `find_unused_parameters` (a
  graph walk every step) stays off.
* `rank0`: rank 0 alone writes the run folder (`NullRunDir` on the others) and decides (`on_main`).
* `handoff`: `mwa train --devices N` starts the ranks through `mwa_cli.train.launcher` (same variables as
  torchrun); rank 0 reports its result through a small file so the launcher exits with rank 0's code.
* `peer_loss`: recognises the error a rank sees when a peer went away (exit code EXIT_PEER_LOST); torch-free.
"""
