"""vgdiag in a Hugging Face Trainer: one callback, a run folder.

    pip install 'vgdiag[transformers]'
    python examples/transformers_callback.py --out runs/hf
    vgdiag report runs/hf                # or: vgdiag view runs/hf

A tiny BERT built from its config (nothing is downloaded) learns whether token 1
occurs in a sequence of random tokens.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from vgdiag.integrations.transformers import VgdiagCallback


class Sequences(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 64, (n, 16), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.ids[self.labels == 1, 5] = 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def accuracy(pred) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/hf", help="the run folder (new or empty)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2))
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=checkpoints, num_train_epochs=args.epochs,
                                   per_device_train_batch_size=16, learning_rate=1e-3,
                                   eval_strategy="epoch", save_strategy="no", report_to=[],
                                   logging_steps=10, use_cpu=True, disable_tqdm=True),
            train_dataset=Sequences(512, 1), eval_dataset=Sequences(128, 2),
            compute_metrics=accuracy,
            callbacks=[VgdiagCallback(args.out, every=5)],
        )
        trainer.train()
    print(f"run folder: {args.out}  (vgdiag report {args.out})")


if __name__ == "__main__":
    main()
