"""``data=rec``: an insightface / MXNet RecordIO face set (``train.rec``, ``train.idx``, ``property``).

Everything :class:`~facenet_pl.data.folder.FolderDataModule` does (held-out people, PK batches, the decode cache or
decoding in workers, ``decode_on=device``, ``cv=N``) with the images read from the ``.rec`` instead of files: the
records are indexed once (:func:`facenet_pl.data.recordio.index_rec`) and every loader reads them by position.
"""

from __future__ import annotations

import logging

import numpy as np

from facenet_pl.data.folder import FolderDataModule
from facenet_pl.data.recordio import find_rec, index_rec, read_property
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)


class RecDataModule(FolderDataModule):
    """Identities of a RecordIO set (``data.root``: its folder, or the ``.rec`` file), split as ``data=folder``
    splits identity folders. The identity names are the records' labels (``"0"``, ``"1"``, ...), so
    ``data.val_identities`` / ``test_identities`` may also list labels. ``align``, ``include`` and ``exclude``
    do not apply (the faces are aligned already; there are no file names to match) and are refused."""

    def __init__(self, root: str, **kwargs) -> None:
        for key, off in (("align", False), ("include", None), ("exclude", None)):
            if kwargs.get(key, off) not in (off, [], ""):
                raise ConfigError(
                    f"data.{key}={kwargs[key]!r} does not apply to data=rec (its faces are aligned already and its "
                    "records have no file names): remove it"
                )
        super().__init__(root=root, **kwargs)
        find_rec(root)  # a missing or ambiguous data.root is one line now, before anything else

    def _scan(self):
        if self._scanned is None:
            images, raw = index_rec(self.root, self.cache_dir)
            ids, labels, counts = np.unique(raw, return_inverse=True, return_counts=True)
            keep = counts[labels] >= self.min_images
            if not keep.any():
                raise ConfigError(f"data.root={self.root}: no identity has data.min_images={self.min_images} images")
            kept_ids = np.flatnonzero(counts >= self.min_images)
            relabel = np.full(len(ids), -1, np.int64)
            relabel[kept_ids] = np.arange(len(kept_ids))
            rows = np.flatnonzero(keep)
            self._scanned = images.take(rows), relabel[labels[rows]], [str(int(ids[i])) for i in kept_ids]
            prop = read_property(images.rec.path)
            if prop is not None and prop[0] != len(ids):
                log.warning(
                    "%s: its property file says %d identities, the records hold %d",
                    images.rec.path.parent / "property",
                    prop[0],
                    len(ids),
                )
            log.info(
                "%s: %d images of %d identities (%d with fewer than %d images left out)",
                images.rec.path,
                len(rows),
                len(kept_ids),
                len(ids) - len(kept_ids),
                self.min_images,
            )
        return self._scanned
