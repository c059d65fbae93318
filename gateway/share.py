"""Where the files shipped beside the code are: the demo's config and recordings, the example config.

An installed wheel carries them under ``gateway/share/`` (pyproject's force-include); a checkout has
them at the top of the tree.  The layout is the same in both (``config/``, ``hil_fixtures/``), so the
demo config's relative paths (``../hil_fixtures/...``) resolve either way.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "share"
_CHECKOUT = Path(__file__).resolve().parent.parent


def share_root() -> Path:
    return _PACKAGED if (_PACKAGED / "config").is_dir() else _CHECKOUT


def demo_config() -> Path:
    return share_root() / "config" / "demo.yaml"


def example_config() -> Path:
    return share_root() / "config" / "example.yaml"
