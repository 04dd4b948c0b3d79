"""Run folders and what is made from them: the store, reports, compare."""
