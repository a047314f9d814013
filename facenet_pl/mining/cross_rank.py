"""Cross-rank mining under DDP: mine negatives from the global batch, not just the local one.

Each rank all-gathers every rank's embeddings and labels; its own rows are the live tensors (with
gradient), the others are detached copies. Every rank then mines and computes the loss on the
same global batch. DDP averages gradients over ranks, and each rank's gradient only reaches its
own rows, so the loss is scaled by the world size: the averaged gradient then equals the gradient
one process would get on the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(global embeddings, global labels, world size); rank order, this rank's rows keep their grad.

    Ranks may hold different batch sizes: rows are padded to the largest for the collective and
    trimmed afterwards.
    """
    if not is_distributed():
        return embeddings, labels, 1
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([embeddings.shape[0]], device=embeddings.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    top = max(sizes)
    pad = top - embeddings.shape[0]
    e = torch.nn.functional.pad(embeddings.detach(), (0, 0, 0, pad))
    lab = torch.nn.functional.pad(labels, (0, pad), value=-1)
    es = [torch.empty_like(e) for _ in range(world)]
    ls = [torch.empty_like(lab) for _ in range(world)]
    dist.all_gather(es, e.contiguous())
    dist.all_gather(ls, lab.contiguous())
    es = [x[:s] for x, s in zip(es, sizes)]
    ls = [x[:s] for x, s in zip(ls, sizes)]
    es[rank] = embeddings  # the live rows: gradient flows back to this rank's network
    return torch.cat(es), torch.cat(ls), world
