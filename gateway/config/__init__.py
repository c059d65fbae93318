"""One YAML file -> validated pydantic models (see ``models``), loaded with line-aware errors (``loader``)."""

from pathlib import Path

DEFAULT_CONFIG = Path("/etc/iomt-gateway/config.yaml")
"""Where the install puts the config: the default of every command's ``-c`` (kept here, light, so the
CLI can name it without importing the loader)."""
