"""Screens over the dashboard: keys, the fix picker, and the before/after view."""
