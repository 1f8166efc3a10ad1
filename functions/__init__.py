"""Thin platform adapters: each turns its platform's events into calls of `shared`."""
