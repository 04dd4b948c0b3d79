"""VgdiagCallback through Hugging Face's real Trainer (CPU, a tiny BERT, seconds).

A second callback, called after vgdiag's at the same Trainer events, measures the
classifier's gradient and update itself, so the folder is checked against numbers
computed without the probe; the epoch numbers against the Trainer's own log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the transformers extra is not "
                                   "installed (pip install 'vgdiag[transformers]')")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate "
                    "(pip install 'vgdiag[transformers]')")

from vgdiag.integrations.transformers import VgdiagCallback  # noqa: E402
from vgdiag.runs.reader import read_run  # noqa: E402

EPOCHS = 2
TRAIN = 32
BATCH = 8


class Pairs(torch.utils.data.Dataset):
    """Token sequences labelled by whether token 1 occurs (learnable, tiny)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 30, (n, 8), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.ids[self.labels == 1, 3] = 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}


class Measure(transformers.TrainerCallback):
    """What the Trainer's model did at each update, measured without vgdiag."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []
        self._before: torch.Tensor | None = None

    def _flat(self, model: Any, grad: bool = False) -> torch.Tensor:
        layer = model.classifier
        parts = [layer.weight.grad, layer.bias.grad] if grad else [layer.weight, layer.bias]
        return torch.cat([p.detach().flatten() for p in parts])

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):  # type: ignore[no-untyped-def]
        self.seen.append({"grad_norm": self._flat(model, grad=True).norm().item()})
        self._before = self._flat(model).clone()

    def on_optimizer_step(self, args, state, control, model=None, **kw):  # type: ignore[no-untyped-def]
        after = self._flat(model)
        assert self._before is not None
        self.seen[-1]["update_ratio"] = ((after - self._before).norm() / after.norm()).item()


def tiny_bert(layers: int) -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def test_a_trainer_run_writes_a_run_folder(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
    model = tiny_bert(2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf-out"), num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH, per_device_eval_batch_size=16,
        learning_rate=5e-3, eval_strategy="epoch", logging_steps=1, save_strategy="no",
        report_to=[], disable_tqdm=True, use_cpu=True, seed=0, max_grad_norm=0.0,
    )
    measure = Measure()
    callback = VgdiagCallback(tmp_path / "hf", every=3, hist_every=1)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Pairs(TRAIN, 1),
                                   eval_dataset=Pairs(16, 2), compute_metrics=accuracy,
                                   callbacks=[callback, measure])
    import warnings

    with warnings.catch_warnings():  # one micro-batch per step: nothing is summed
        warnings.filterwarnings("error", message=".*ignores num_items_in_batch")
        trainer.train()

    run = read_run(tmp_path / "hf")
    steps = EPOCHS * TRAIN // BATCH
    assert run.status == "completed"
    assert run.config["source"] == "transformers"
    assert run.config["experiment"]["model"] == "BertForSequenceClassification"
    assert run.config["experiment"]["optimizer"] == "AdamW"
    assert run.config["experiment"]["train"]["lr"] == pytest.approx(5e-3)
    assert run.summary["num_classes"] == 2  # from the model's config
    assert run.config["stages"] == [{"name": "train", "epochs": EPOCHS}]
    assert run.config["steps_per_epoch"] == TRAIN // BATCH
    names = [li.name for li in run.layers]
    assert names[0] == "bert.embeddings.word_embeddings" and "classifier" in names
    assert [r.step for r in run.records] == list(range(0, steps, 3))
    assert len(measure.seen) == steps
    for record in run.records:
        stats = record.layers["classifier"]
        assert stats.grad_norm == pytest.approx(measure.seen[record.step]["grad_norm"], rel=1e-5)
        assert stats.update_ratio == pytest.approx(measure.seen[record.step]["update_ratio"],
                                                   rel=1e-4)
    # The Trainer logged every step's loss (4 digits) and one evaluation per epoch.
    history = trainer.state.log_history
    step_loss = {h["step"]: h["loss"] for h in history if "loss" in h}
    for record in run.records:
        assert record.loss == pytest.approx(step_loss[record.step + 1], abs=1e-4)
    evals = [h for h in history if "eval_loss" in h]
    assert len(run.epochs) == len(evals) == EPOCHS
    for i, (epoch, ev) in enumerate(zip(run.epochs, evals)):
        logged = [step_loss[s] for s in range(i * 4 + 1, i * 4 + 5)]
        assert epoch.train_loss == pytest.approx(sum(logged) / 4, abs=1e-4)
        assert epoch.val_loss == pytest.approx(ev["eval_loss"], rel=1e-6)
        assert epoch.val_acc == pytest.approx(ev["eval_accuracy"], rel=1e-6)
        assert epoch.steps == (i + 1) * TRAIN // BATCH
    report = subprocess.run([sys.executable, "-m", "vgdiag", "report", str(tmp_path / "hf")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "classifier" in report.stdout
    assert all(not m._forward_hooks for m in model.modules())


class Tokens(torch.utils.data.Dataset):
    """Sequences of 12 tokens from a vocabulary of 64, their own labels (a causal LM)."""

    def __init__(self, n: int) -> None:
        self.ids = torch.randint(0, 64, (n, 12), generator=torch.Generator().manual_seed(3))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_a_causal_lm_with_gradient_accumulation_records_each_steps_mean_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With num_items_in_batch (GPT-2 takes it) each micro-batch's loss is its share of
    # the accumulated batch's sum: the step's loss is the shares added, not their mean.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2,
                                     n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf-out"), num_train_epochs=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(32),
                                   callbacks=[VgdiagCallback(tmp_path / "lm", every=1)])
    trainer.train()
    run = read_run(tmp_path / "lm")
    assert run.status == "completed" and len(run.records) == 32 // 8
    # Independent: the Trainer's own log of each step's loss (4 digits), and a model at
    # initialisation guessing uniformly over 64 tokens: ln 64 = 4.16.
    step_loss = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    for record in run.records:
        assert record.loss == pytest.approx(step_loss[record.step + 1], abs=1e-3)
    assert run.records[0].loss == pytest.approx(4.16, rel=0.1)
    # A language model's classes are its vocabulary, not config.num_labels (2 by default).
    assert run.summary["num_classes"] == 64


class MicroLosses(transformers.TrainerCallback):
    """Each micro-batch's loss as the model returned it, by optimizer step."""

    def __init__(self, model: Any) -> None:
        self.by_step: list[list[float]] = [[]]
        model.register_forward_hook(self._seen)
        self.model = model

    def _seen(self, module: Any, args: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self.by_step[-1].append(float(output.loss.detach()))

    def on_optimizer_step(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
        self.by_step.append([])


def test_a_classifier_whose_loss_ignores_num_items_records_the_mean_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # BERT's forward takes **kwargs, so the Trainer passes num_items_in_batch and skips
    # dividing for accumulation; its loss is a mean anyway, so the Trainer's log (and its
    # gradient) is the micro-batches' sum: twice the mean at gradient accumulation 2.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_bert(1)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf-out"), num_train_epochs=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, seed=0)
    micro = MicroLosses(model)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Pairs(TRAIN, 1),
                                   callbacks=[VgdiagCallback(tmp_path / "bert", every=1),
                                              micro])
    with pytest.warns(UserWarning, match="ignores num_items_in_batch"):
        trainer.train()
    run = read_run(tmp_path / "bert")
    assert len(run.records) == TRAIN // 8
    step_loss = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    for record in run.records:
        losses = micro.by_step[record.step]
        assert len(losses) == 2
        assert record.loss == pytest.approx(sum(losses) / 2, rel=1e-5)  # the mean
        assert step_loss[record.step + 1] == pytest.approx(sum(losses), abs=1e-3)
    assert run.records[0].loss == pytest.approx(0.69, rel=0.1)  # ln 2, not 2 ln 2


def test_which_heads_divide_their_loss_by_num_items() -> None:
    from vgdiag.integrations.transformers import loss_divides_by_items

    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}
    lm = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0))
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=32, **small))
    # Calls self.loss_function, which is the sequence classification loss: no num_items.
    llama = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        vocab_size=32, num_labels=2, pad_token_id=0, **small))
    assert loss_divides_by_items(lm)
    assert not loss_divides_by_items(bert) and not loss_divides_by_items(llama)
