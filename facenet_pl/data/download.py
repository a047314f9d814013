"""Fetch LFW explicitly, verifying MD5 checksums: ``python -m facenet_pl.data.download lfw --root DIR``.

Never called implicitly: training and tests work offline. ``--base-url`` points at any mirror
(``file://`` included); ``--from`` imports a copy you already have (the .tgz, or an extracted folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

LFW_BASE_URL = "http://vis-www.cs.umass.edu/lfw/"
#: Published MD5 digests of the official files (the same table torchvision checks).
LFW_MD5 = {
    "lfw-deepfunneled.tgz": "68331da3eb755a505a502b5aacb3c201",
    "lfw.tgz": "a17d05bd522c52d84eca14327a23d494",
    "lfw-funneled.tgz": "1b42dfed7d15c9b2dd63d5e5840c86ad",
    "pairs.txt": "9f1ba174e4e1c508ff7cdf10ac338a7d",
    "people.txt": "450f0863dd89e85e73936a6d71a3474b",
    "pairsDevTrain.txt": "4f27cbf15b2da4a85c1907eb4181ad21",
    "pairsDevTest.txt": "5132f7440eb68cf58910c8a45a2ac10b",
    "peopleDevTrain.txt": "54eaac34beb6d042ed3a7d883e247a21",
    "peopleDevTest.txt": "e4bf5be0a43b5dcd9dc5ccfcb8fb19c5",
}
PROTOCOL_FILES = [
    "pairs.txt",
    "people.txt",
    "pairsDevTrain.txt",
    "pairsDevTest.txt",
    "peopleDevTrain.txt",
    "peopleDevTest.txt",
]
ARCHIVES = {"deepfunneled": "lfw-deepfunneled.tgz", "original": "lfw.tgz", "funneled": "lfw-funneled.tgz"}


class ChecksumError(RuntimeError):
    pass


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str | None) -> None:
    """Raise ``ChecksumError`` (and delete the file) when its MD5 differs from ``expected``."""
    if expected is None:
        raise ChecksumError(f"no known checksum for {path.name}: refusing to trust it")
    got = md5sum(path)
    if got != expected:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{path.name}: MD5 {got} != expected {expected}; the file was removed. "
            "Check --base-url (a broken mirror or a partial download)."
        )


def fetch(url: str, dest: Path, expected: str | None) -> Path:
    """Download ``url`` to ``dest`` (via a .part file) unless a verified copy is already there."""
    if dest.exists() and expected is not None and md5sum(dest) == expected:
        print(f"ok (cached)  {dest}")
        return dest
    part = dest.with_name(dest.name + ".part")
    print(f"fetching     {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {url}: {e}. Use --base-url for a mirror, or --from a local copy."
        ) from e
    os.replace(part, dest)
    verify(dest, expected)
    print(f"ok           {dest}")
    return dest


def _unsafe_reason(member: tarfile.TarInfo, root: Path) -> str | None:
    """Why extracting ``member`` under ``root`` could write outside it or create something odd; None if safe."""
    name = member.name
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        return "absolute path"
    if ".." in Path(name).parts:
        return "'..' in the path"
    if not (root / name).resolve().is_relative_to(root):
        return "resolves outside the target folder"
    if member.issym() or member.islnk():
        return "link"
    if not (member.isfile() or member.isdir()):
        return "device, FIFO or other special file"
    return None


def _safe_extract(archive: Path, root: Path) -> None:
    """Extract a tar archive into ``root``, refusing the whole archive if any member is unsafe.

    Our own check refuses absolute paths, ``..``, links and special files outright (the LFW archives hold
    only folders and JPEGs); the standard library's ``filter="data"`` (Python >= 3.12, and 3.10.12+ /
    3.11.4+) guards the extraction itself as a second layer.
    """
    root = root.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            reason = _unsafe_reason(m, root)
            if reason:
                raise RuntimeError(f"{archive}: refusing unsafe member {m.name!r} ({reason}); nothing was extracted")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # older Python: the checks above are the guard
            tar.extractall(root, members=members)


def download_lfw(
    root: str | Path,
    base_url: str = LFW_BASE_URL,
    variant: str = "deepfunneled",
    checksums: dict[str, str] | None = None,
    source: str | Path | None = None,
) -> Path:
    """Download (or import from ``source``) LFW images and protocol files into ``root``; returns root."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    md5 = {**LFW_MD5, **(checksums or {})}
    archive_name = ARCHIVES[variant]
    folder = archive_name[: -len(".tgz")]
    src = Path(source).expanduser() if source else None
    if src is not None and src.is_dir():  # an extracted copy: link its image tree, verify its text files
        tree = src / folder if (src / folder).is_dir() else src
        if not any(p.is_dir() for p in tree.iterdir()):
            raise FileNotFoundError(f"--from {src}: no per-person folders found")
        link = root / folder
        if not link.exists():
            link.symlink_to(tree.resolve(), target_is_directory=True)
        for name in PROTOCOL_FILES:
            for cand in (src / name, src.parent / name):
                if cand.is_file():
                    shutil.copyfile(cand, root / name)
                    verify(root / name, md5.get(name))
                    break
    else:
        if src is not None:  # a local archive
            shutil.copyfile(src, root / archive_name)
            verify(root / archive_name, md5.get(archive_name))
        else:
            fetch(base_url.rstrip("/") + "/" + archive_name, root / archive_name, md5.get(archive_name))
        if not (root / folder).is_dir():
            print(f"extracting   {archive_name}")
            _safe_extract(root / archive_name, root)
    for name in PROTOCOL_FILES:
        if not (root / name).exists():
            if src is not None and src.is_dir():
                continue
            fetch(base_url.rstrip("/") + "/" + name, root / name, md5.get(name))
    if not (root / "pairs.txt").exists():
        raise FileNotFoundError(f"{root}/pairs.txt is missing: pass --base-url so it can be fetched")
    print(f"LFW ready in {root}: train with data=lfw data.root={root}")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facenet-pl download", description=__doc__)
    ap.add_argument("dataset", choices=["lfw"])
    ap.add_argument("--root", default="data/lfw", help="where to put it (default: data/lfw)")
    ap.add_argument("--base-url", default=LFW_BASE_URL, help="mirror URL (http, https or file://)")
    ap.add_argument("--variant", default="deepfunneled", choices=sorted(ARCHIVES))
    ap.add_argument("--from", dest="source", help="import a local copy: the .tgz or an extracted folder")
    ap.add_argument("--checksums", help="JSON file {file name: md5} overriding the built-in table (mirrors)")
    args = ap.parse_args(argv)
    sums = json.loads(Path(args.checksums).read_text()) if args.checksums else None
    try:
        download_lfw(args.root, args.base_url, args.variant, sums, args.source)
    except (ChecksumError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
