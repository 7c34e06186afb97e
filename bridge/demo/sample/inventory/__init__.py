"""A tiny stock-keeping library (the bridge demo's sample project)."""
