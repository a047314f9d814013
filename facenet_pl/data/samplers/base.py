"""``EpochBatchSampler``: what every training batch sampler of facenet-pl shares.

Lightning does not call ``set_epoch`` on a batch sampler, and resuming mid-epoch must not replay batches; so
each sampler is deterministic for (seed, epoch) and the
:class:`~facenet_pl.data.datamodule.PKDataLoader` calls :meth:`resume` with the trainer's position at the
start of every epoch. Subclasses implement ``__len__`` (batches per epoch on this rank), ``batch_size`` and
``__iter__`` (yielding from ``self._skip`` on, then resetting it, see :meth:`take_skip`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator

from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Batch sampler with an epoch, a resume position and a checkpointable state."""

    seed: int = 0
    epoch: int = 0
    _skip: int = 0  # batches of the next pass to leave out (resuming mid-epoch)

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Images per batch."""

    @abstractmethod
    def __len__(self) -> int:
        """Batches per epoch on this rank."""

    @abstractmethod
    def __iter__(self) -> Iterator[list[int]]: ...

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, completed_batches: int) -> None:
        """Continue ``epoch`` after ``completed_batches``: the next pass yields only the rest of it."""
        self.epoch, self._skip = int(epoch), int(completed_batches)

    def take_skip(self) -> int:
        """The batches to leave out of this pass (then 0 for the next one)."""
        skip, self._skip = self._skip, 0
        return skip

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", self.epoch))
