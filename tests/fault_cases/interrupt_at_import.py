"""A model file that raises KeyboardInterrupt while it is imported."""

raise KeyboardInterrupt
