"""vgdiag inside the trainers people already use: thin shells over `vgdiag.watch`.

- `vgdiag.integrations.lightning.VgdiagCallback`: a Lightning Callback
  (`pip install 'vgdiag[lightning]'`).
- `vgdiag.integrations.transformers.VgdiagCallback`: a Hugging Face TrainerCallback
  (`pip install 'vgdiag[transformers]'`).

Each writes the run folder `vgdiag run` writes, so `vgdiag report` and `vgdiag view`
read it.
"""
