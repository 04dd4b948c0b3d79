"""Small models of the families people bring, built from torch.nn alone (no downloads).

Each one keeps the trait that matters for the probe: how its parameters are used
(functional submodules, parameters on parents, tied weights, recurrences, lazy
shapes, unused heads), not its size.
"""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """A parent that owns a parameter (the position embedding) and uses it itself."""

    def __init__(self, dim: int, tokens: int, depth: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, dim * 2, dropout=0.0, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False).layers
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embedding
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class ViT(nn.Module):
    """Conv patch embedding, class token on the root, zero-initialised head."""

    def __init__(self, dim: int = 32, depth: int = 2, classes: int = 5,
                 zero_head: bool = True) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder(dim, 16 + 1, depth)
        self.head = nn.Linear(dim, classes)
        if zero_head:  # as torchvision's ViT does
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(self.encoder(x)[:, 0])


class Block(nn.Module):
    """Pre-norm decoder block: causal self-attention and a GELU MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token and position embeddings, blocks, final norm, head tied to the token embedding."""

    def __init__(self, vocab: int = 40, dim: int = 32, depth: int = 3, tokens: int = 12,
                 sparse: bool = False) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim, sparse=sparse)
        self.wpe = nn.Embedding(tokens, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        if not sparse:  # a sparse embedding cannot share its weight with a dense head
            self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():  # GPT-2's init
            if p.dim() == 2 and "ln" not in name:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean(dim=(2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int) -> None:
        super().__init__()
        hidden = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class MobileNet(nn.Module):
    """Depthwise convolutions and Hardswish, blocks in `features.{i}`."""

    def __init__(self, classes: int = 5, blocks: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                          nn.Hardswish()),
            *(InvertedResidual(8, 3) for _ in range(blocks)),
        )
        self.classifier = nn.Sequential(nn.Linear(8, 16), nn.Hardswish(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class SequenceClassifier(nn.Module):
    """A recurrent module over the data itself, then a linear head."""

    def __init__(self, rnn: nn.RNNBase, hidden: int, classes: int = 3, last: bool = False):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden, classes)
        self.last = last  # classify from the last step (else the mean over time)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x)[0]
        return self.head(out[:, -1] if self.last else out.mean(dim=1))


def lstm() -> SequenceClassifier:
    return SequenceClassifier(nn.LSTM(6, 12, num_layers=2, bidirectional=True,
                                      batch_first=True), 24)


def gru() -> SequenceClassifier:
    return SequenceClassifier(nn.GRU(6, 12, num_layers=2, batch_first=True), 12)


def deep_rnn() -> SequenceClassifier:
    """Vanilla tanh RNN with small recurrent weights: each step scales dL/dh by < 0.3."""
    rnn = nn.RNN(6, 16, num_layers=3, batch_first=True)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(0.3)
    return SequenceClassifier(rnn, 16, last=True)


def exploding_rnn() -> SequenceClassifier:
    """Vanilla tanh RNN with recurrent weights 3x orthogonal: dL/dh grows step by step
    backward in time until tanh saturates."""
    torch.manual_seed(1)
    rnn = nn.RNN(6, 16, batch_first=True)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(16, 16))
        rnn.weight_hh_l0.copy_(3.0 * q)
    return SequenceClassifier(rnn, 16, last=True)


def lazy() -> nn.Sequential:
    return nn.Sequential(nn.LazyConv2d(6, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(16),
                         nn.ReLU(), nn.LazyLinear(5))


class TwoHeads(nn.Module):
    """A dict output; the loss reads "out" only, so "aux" gets no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.aux = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"aux": self.aux(h), "out": self.head(h)}


def negative(act: type[nn.Module], bias: float = -2.0, depth: int = 4) -> nn.Sequential:
    """An MLP whose biases push every pre-activation negative."""
    layers: list[nn.Module] = []
    for k in range(depth):
        linear = nn.Linear(10 if k == 0 else 16, 16)
        nn.init.constant_(linear.bias, bias)
        layers += [linear, act()]
    return nn.Sequential(*layers, nn.Linear(16, 3))
