"""Rehearsals: a scripted local model the real CLIs talk to, at zero token cost."""
