"""W&B without surprises: never block on a login prompt; go offline only when no key is configured."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"


def wandb_key_configured() -> bool:
    """Whether wandb would find an API key: ``WANDB_API_KEY``, or a netrc entry (the file ``NETRC`` names, else
    ``~/.netrc``) for the server ``WANDB_BASE_URL`` names (a self-hosted one included), as ``wandb login``
    writes it."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname or "api.wandb.ai"
    try:  # wandb's own reader where this wandb version has it
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

        return bool(read_netrc_auth(host=os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST))
    except Exception:  # older/newer wandb, or an unreadable file: read the netrc file ourselves
        pass
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def prepare_wandb(cfg) -> None:
    """With ``logger=wandb`` and no key configured, set ``WANDB_MODE=offline`` (sync later with ``wandb sync``)."""
    if not cfg.get("logger") or "wandb" not in cfg.logger or os.environ.get("WANDB_MODE"):
        return
    if not wandb_key_configured():
        log.warning("no W&B API key found: logging offline (sync later with `wandb sync`)")
        os.environ["WANDB_MODE"] = "offline"
