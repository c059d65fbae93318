"""One YAML file -> validated pydantic models (see ``models``), loaded with line-aware errors (``loader``)."""
