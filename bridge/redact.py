"""Secret values from the environment, replaced by "***" in every text bridge writes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
MIN_LENGTH = 6
MASK = "***"


def secret_values(env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Values of secret-looking variables (>= 6 chars), longest first so overlaps mask fully."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_LENGTH}
    found.update(v for v in extra if len(v) >= MIN_LENGTH)
    return tuple(sorted(found, key=lambda v: (-len(v), v)))


class Redactor:
    """Masks a fixed set of secret values; build one per process with `for_env`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= MIN_LENGTH}, key=lambda v: (-len(v), v)))
        self._pattern = re.compile("|".join(re.escape(s) for s in self.secrets)) if self.secrets else None

    @classmethod
    def for_env(cls, *envs: Mapping[str, str] | None, extra: Iterable[str] = ()) -> Redactor:
        """Secrets of os.environ plus those of any extra env mappings (e.g. a child's env)."""
        values: set[str] = set(secret_values(None, extra))
        for env in envs:
            if env:
                values.update(secret_values(env))
        return cls(values)

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Mask the secrets of `env` (default: os.environ) in `text`."""
    return Redactor(secret_values(env))(text)
