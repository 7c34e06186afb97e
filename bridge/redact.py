"""Secret values (from the environment, or given to a secret-looking flag), replaced by "***" in every
text bridge writes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
MIN_LENGTH = 6
MASK = "***"
# a flag whose last word names a secret: --api-key, --apikey, --token, --auth-token, --client_secret,
# --password; not --max-tokens nor --key-file
SECRET_FLAG = re.compile(r"^--?(?:[A-Za-z0-9.]+[-_])*(?:api[-_]?key|key|token|secret|password|passwd|credentials?)$",
                         re.IGNORECASE)


def secret_values(env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Values of secret-looking variables (>= 6 chars), longest first so overlaps mask fully."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_LENGTH}
    found.update(v for v in extra if len(v) >= MIN_LENGTH)
    return tuple(sorted(found, key=lambda v: (-len(v), v)))


def argv_secrets(argv: Iterable[str]) -> tuple[str, ...]:
    """Values given to secret-looking flags in an argv: `--api-key VALUE` and `--api-key=VALUE`."""
    args = list(argv)
    found = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not SECRET_FLAG.match(name):
            continue
        if eq:
            found.append(value)
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            found.append(args[i + 1])
    return tuple(v for v in found if len(v) >= MIN_LENGTH)


class Redactor:
    """Masks a fixed set of secret values; build one per process with `for_env`."""

    def __init__(self, secrets: Iterable[str] = (), min_length: int = MIN_LENGTH) -> None:
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= min_length}, key=lambda v: (-len(v), v)))
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
