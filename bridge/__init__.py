"""bridge: run YAML playbooks that drive coding-agent CLIs as a team."""

from __future__ import annotations

__version__ = "0.1.0"
