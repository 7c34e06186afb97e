"""How amounts read, the same everywhere (terminal, `bridge runs` / `show`, summary.md): a cost or a
token count nobody reported is "-", not 0; a cost below $1 keeps 4 decimals so $0.0045 is not $0.00."""

from __future__ import annotations


def money(cost: float | None) -> str:
    """'-' when no cost was reported (None or 0), $0.0045 below a dollar, $1.25 above."""
    return "-" if not cost else f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


def tokens(n: int | None) -> str:
    """'-' when no usage was reported (None or 0), else 12,345."""
    return "-" if not n else f"{n:,}"


def reported(value: float | int | None) -> float | int | None:
    """The value for JSON: None (null) when nothing was reported, as '-' is on screen."""
    return value or None
