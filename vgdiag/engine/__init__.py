"""The engine: records, the event stream, the probe, training and diagnosis.

It imports nothing from inputs/, runs/, cli/ or tui/, and never Textual.
"""
