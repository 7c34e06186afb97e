"""Helpers."""


def dedupe(names):
    # Seeded bug (performance): `in` on a list makes this quadratic.
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen
