"""The Typer options the training commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m",
    help="builtin:mlp, path/to/file.py:Name, package.module:Name, or a TorchScript .pt/.ts.")]
ModelArgOpt = Annotated[list[str] | None, typer.Option(
    "--model-arg", help="key=value passed to the model's class or factory (repeatable).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="A state dict to load onto the model (read with weights_only=True).")]
TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle",
    help="Allow loading a fully pickled model. Unpickling runs arbitrary code from the "
    "file: use it only for files you trust.")]
DepthOpt = Annotated[int, typer.Option(help="Hidden layers of the built-in MLP.")]
WidthOpt = Annotated[int, typer.Option(help="Units per hidden layer of the built-in MLP.")]
ActivationOpt = Annotated[str, typer.Option(
    help="Built-in MLP activation: sigmoid | tanh | relu | leaky-relu | gelu.")]
InitOpt = Annotated[str, typer.Option(help="default | normal:STD | xavier | he.")]
DataOpt = Annotated[str, typer.Option(
    help="digits | fashion-mnist | mnist | synthetic, or file.py:factory.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    help="Folder with the MNIST-family IDX files (downloaded there if absent).")]
SynthOpt = Annotated[int, typer.Option(help="Samples of the synthetic dataset.")]
LossOpt = Annotated[str, typer.Option(help="cross-entropy | mse | file.py:fn.")]
OutputKeyOpt = Annotated[str | None, typer.Option(
    help="For models returning a dict or tuple: the key or index of the prediction.")]
OptimizerOpt = Annotated[str, typer.Option(help="sgd | adam.")]
LrOpt = Annotated[float | None, typer.Option(
    help="Learning rate [default: adam 1e-3; sgd 0.01 as in the reference, 0.1 on digits].")]
EpochsOpt = Annotated[int | None, typer.Option(
    help="Epochs [default: digits and fashion-mnist/mnist 100, synthetic 10].")]
BatchOpt = Annotated[int | None, typer.Option(
    help="Batch size [default: digits 16, fashion-mnist/mnist 512, synthetic 64].")]
SeedOpt = Annotated[int, typer.Option(help="Seeds model init, data split and data order.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]
EveryOpt = Annotated[int, typer.Option(help="Sample statistics every N-th step (step 0 always).")]
HistEveryOpt = Annotated[int, typer.Option(
    help="Histograms on every N-th sampled step (0 turns them off).")]
ThreadsOpt = Annotated[int, typer.Option(
    help="PyTorch CPU threads; 0 = automatic: 1 for models under 10M parameters, whose "
    "kernels are too small to gain from more, else PyTorch's default.")]
KeepGoingOpt = Annotated[bool, typer.Option(
    help="Go on training after a NaN/inf loss or gradient instead of stopping.")]
PluginOptOpt = Annotated[list[str] | None, typer.Option(
    "--plugin-opt", help="PLUGIN.OPTION=VALUE, e.g. weight-init.std=1.0 (repeatable; "
    "see `vgdiag plugins`).")]
FailOnOpt = Annotated[str, typer.Option(
    help="Exit 1 when a finding is at or above this severity: none | info | warning | error.")]



def run_options(**kw: Any) -> Any:
    from vgdiag.inputs.recipe import RunOptions

    kw["model_args"] = list(kw.get("model_args") or [])
    return RunOptions(**kw)


