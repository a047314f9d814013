"""The composed config as a readable tree: printed when a run starts and saved in its run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: Groups shown first, in this order; the rest follow alphabetically.
ORDER = ("data", "backbone", "model", "miner", "loss", "optimizer", "scheduler", "trainer", "callbacks", "logger")


def format_config_tree(cfg: DictConfig, order: tuple[str, ...] = ORDER) -> str:
    """One block per top-level group (``├── data`` + its YAML, indented); scalars last. Unresolvable
    interpolations (``${hydra:...}`` outside a Hydra run) are shown as written."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        plain = OmegaConf.to_container(cfg, resolve=False)
    groups = [k for k in order if isinstance(plain.get(k), dict)]
    groups += sorted(k for k, v in plain.items() if isinstance(v, dict) and k not in groups and k != "hydra")
    scalars = {k: v for k, v in plain.items() if not isinstance(v, dict) and k != "hydra"}
    lines = ["CONFIG"]
    for i, key in enumerate([*groups, "(top level)"]):
        last = i == len(groups)
        lines.append(("└── " if last else "├── ") + key)
        body = OmegaConf.to_yaml(scalars if key == "(top level)" else plain[key]).rstrip().splitlines()
        lines += [("    " if last else "│   ") + ln for ln in body]
    return "\n".join(lines)


def print_config_tree(cfg: DictConfig, out_dir: str | Path | None = None) -> str:
    """Print the tree and write it to ``<out_dir>/config_tree.txt``."""
    text = format_config_tree(cfg)
    print(text, flush=True)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config_tree.txt").write_text(text + "\n")
    return text
