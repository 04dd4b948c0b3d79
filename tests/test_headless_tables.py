"""The headless tables at the width of the terminal: no layer name cut in the middle, a
diagnosis title that holds the whole verdict where it fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from vgdiag.cli.app import main
from vgdiag.cli.headless import findings_panel, title_verdict
from vgdiag.cli.layer_table import fold_name, layer_table
from vgdiag.engine.records import LayerInfo, LayerStats, StepRecord

CNN = [(f"features.{i}", "Conv2d") for i in range(0, 21, 2)] + [("head", "Linear")]
TRANSFORMER = [("embed", "Linear"), ("", "TinyTransformer")] + [
    (f"encoder.layers.{n}.{name}", kind) for n in range(2) for name, kind in (
        ("self_attn", "MultiheadAttention"), ("self_attn.out_proj", "Linear"),
        ("norm1", "LayerNorm"), ("linear1", "Linear"), ("linear2", "Linear"),
        ("norm2", "LayerNorm"))] + [("cls", "Linear")]

MODELS = '''
import torch
import torch.nn as nn


class DeepTanhCnn(nn.Module):
    def __init__(self, depth: int = 8, std: float = 0.02):
        super().__init__()
        layers = [nn.Conv2d(1, 4, 3, padding=1), nn.Tanh()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(4 * 28 * 28, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0, std)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(28, 16)
        self.pos = nn.Parameter(torch.zeros(1, 28, 16))
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.cls = nn.Linear(16, 10)

    def forward(self, x):
        return self.cls(self.encoder(self.embed(x.squeeze(1)) + self.pos).mean(1))
'''


def records(names: list[tuple[str, str]]) -> tuple[list[LayerInfo], StepRecord, StepRecord]:
    """Layers with gradients that vanish toward the input (numbers 7 characters wide)."""
    infos = [LayerInfo(name, kind, depth, 10, ("weight",))
             for depth, (name, kind) in enumerate(names)]

    def stats(scale: float) -> dict[str, LayerStats]:
        return {i.name: LayerStats(grad_norm=scale * 8.6e-9 * 5.0 ** i.depth,
                                   update_ratio=6.5e-11 * 5.0 ** i.depth,
                                   weight_change=1.8e-10 * 5.0 ** i.depth,
                                   act_saturated=0.0) for i in infos}

    return infos, StepRecord(0, 0, 2.3, stats(1.0)), StepRecord(80, 1, 2.3, stats(0.7))


def render(renderable: object, width: int) -> list[str]:
    console = Console(width=width, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get().splitlines()


def layer_cells(lines: list[str]) -> list[tuple[list[str], list[str]]]:
    """Each body row of a printed layer table: (the layer cell's lines, its numbers)."""
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("┡")) + 1:]
    rows: list[tuple[list[str], list[str]]] = []
    for line in body:
        if line.startswith("└"):
            break
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if any(cells[1:]):  # the numbers are on a row's first line
            rows.append(([cells[0]], cells[1:]))
        else:
            rows[-1][0].append(cells[0])
    return rows


def name_lines(cell: list[str], name: str) -> int:
    """How many of `cell`'s lines spell `name`: each line a run of whole dotted parts,
    or one part cut with an ellipsis; 0 where they do not."""
    at = 0
    for count, line in enumerate(cell, 1):
        if name.startswith(line, at) and (at + len(line) == len(name) or line.endswith(".")):
            at += len(line)
        elif line.endswith("…") and name.startswith(line[:-1], at):
            dot = name.find(".", at)
            at = len(name) if dot < 0 else dot + 1
        else:
            return 0
        if at == len(name):
            return count
    return 0


def check_names(lines: list[str], names: list[tuple[str, str]], width: int,
                whole: bool) -> None:
    """Every layer cell holds its name folded only after a '.', never mid-part (a part
    too long for the column ends in '…'), and the kind after it, words whole (a word cut
    ends in '…'); `whole`: the name on one line. The numbers are never cut."""
    assert all(len(line) <= width for line in lines), lines
    rows = layer_cells(lines)
    assert len(rows) == len(names), lines
    for (cell, numbers), (name, kind) in zip(rows, names):
        name = name or "<root>"
        assert all(n and "…" not in n for n in numbers), numbers  # numbers whole
        if cell == [f"{name} {kind}"]:
            continue
        count = name_lines(cell, name)
        assert count, (name, cell)
        assert not whole or cell[0] == name, (name, cell)
        shown = " ".join(cell[count:])
        assert shown == kind or (shown.endswith("…") and kind.startswith(shown[:-1])), cell


@pytest.mark.parametrize("width", [80, 60, 120])
def test_deep_cnn_names_are_never_cut_mid_name(width: int) -> None:
    infos, first, last = records(CNN)
    lines = render(layer_table(infos, first, last), width)
    # 'features.10' at 80 columns once read 'features.1' over '0 Conv2d'.
    check_names(lines, CNN, width, whole=width >= 80)
    if width == 120:
        assert any("features.20 Conv2d" in line for line in lines)


def check_blocks(lines: list[str], names: list[tuple[str, str]], width: int) -> None:
    """One block per layer: the name (whole, or folded after a '.'), the kind on its
    own line, then whole `header value` fields; nothing cut, nothing too wide."""
    assert all(len(line) <= width for line in lines) and "…" not in "".join(lines), lines
    first = names[0][0] or "<root>"
    body = lines[next(i for i in range(len(lines)) if name_lines(lines[i:], first)):]
    at = 0  # the title (one line or two) is above
    for name, kind in names:
        name = name or "<root>"
        count = name_lines(body[at:], name)
        assert count, (name, body[at:at + 3])
        assert body[at + count] == f"  {kind}", body[at + count]
        at += count + 1
        fields = []
        while at < len(body) and body[at].startswith("  ") and not body[at].startswith("   "):
            if body[at].strip() in {k for _, k in names}:
                break
            fields += body[at].strip().split(" · ")
            at += 1
        assert [f.rsplit(" ", 1)[0] for f in fields] == [
            "grad@init", "grad now", "÷ out", "upd/W", "ΔW/W0", "sat", "dead"], fields
    assert at == len(body)


@pytest.mark.parametrize("width", [80, 60, 120])
def test_transformer_names_fold_only_after_a_dot(width: int) -> None:
    infos, first, last = records(TRANSFORMER)
    lines = render(layer_table(infos, first, last), width)
    # Once 'encoder.lay' / 'ers.0.self_' / 'attn' / 'MultiheadAt' / 'tention' at 80.
    if width >= 80:
        check_names(lines, TRANSFORMER, width, whole=width >= 120)
    else:  # a table would cut 'MultiheadAttention': one block per layer
        check_blocks(lines, TRANSFORMER, width)


@pytest.mark.parametrize("width", [60, 40])
def test_names_too_long_for_a_table_column_get_a_block_each(width: int) -> None:
    long = [("feature_extractor_backbone_stage_one.convolutional_projection_layer_1",
             "Conv2d"), ("feature_extractor_backbone_stage_one.conv2", "Conv2d"),
            ("classification_head", "Linear")]
    infos, first, last = records(long)
    check_blocks(render(layer_table(infos, first, last), width), long, width)


def test_inspect_table_at_80_columns_keeps_names_whole() -> None:
    infos, first, _ = records(CNN)
    lines = render(layer_table(infos, first, first), 80)
    check_names(lines, CNN, 80, whole=True)
    assert any("features.10 Conv2d" in line for line in lines)


def test_fold_name_breaks_after_dots_only() -> None:
    assert fold_name("encoder.layers.0.self_attn.out_proj", 18) == [
        "encoder.layers.0.", "self_attn.out_proj"]
    assert fold_name("features.10", 10) == ["features.", "10"]
    assert fold_name("a_very_long_part.x", 5) == ["a_very_long_part.", "x"]


@pytest.mark.parametrize(("model", "args", "whole"), [
    ("DeepTanhCnn", ["--model-arg", "depth=11"], True),
    ("TinyTransformer", [], False),
])
def test_headless_run_at_80_columns_prints_layer_names_whole(
        capsys, monkeypatch, tmp_path: Path, model: str, args: list[str], whole: bool) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    (tmp_path / "models.py").write_text(MODELS)
    out_dir = tmp_path / "run"
    code = main(["run", "--model", f"{tmp_path / 'models.py'}:{model}", *args,
                 "--data", "synthetic", "--synthetic-size", "200", "--epochs", "1",
                 "--device", "cpu", "--headless", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    names = [(layer["name"], layer["kind"]) for layer in summary["layers"]]
    assert len(names) == (12 if whole else 15)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Gradient flow"))
    check_names(lines[start:], names, 80, whole=whole)


VERDICT = "unhealthy: vanishing_gradient, loss_stalled, input_side_frozen"


@pytest.mark.parametrize("width", [80, 120])
def test_diagnosis_title_holds_the_whole_verdict_where_it_fits(width: int) -> None:
    top = render(findings_panel([], VERDICT), width)[0]
    assert top.startswith(f"╭─ Diagnosis: {VERDICT} ─") and len(top) == width, top


def test_diagnosis_title_is_cut_after_an_id_or_a_word() -> None:
    assert render(findings_panel([], VERDICT), 60)[0].startswith(
        "╭─ Diagnosis: unhealthy: vanishing_gradient, ... ─")
    assert render(findings_panel([], VERDICT), 40)[0].startswith("╭─ Diagnosis: unhealthy ─")
    assert title_verdict(VERDICT, 62) == VERDICT
    assert title_verdict(VERDICT, 61) == "unhealthy: vanishing_gradient, loss_stalled, ..."
    failed = "failed: RuntimeError: boom at the third step (models.py:12)"
    assert title_verdict(failed, 40) == "failed: RuntimeError: boom at the ..."
    assert title_verdict(failed, 10) == "failed"
    assert title_verdict("healthy", 3) == "healthy"  # nothing to cut at: rich marks it


@pytest.mark.parametrize("width", ["80", "120"])
def test_headless_run_titles_the_diagnosis_with_the_whole_verdict(
        capsys, monkeypatch, tmp_path: Path, width: str) -> None:
    monkeypatch.setenv("COLUMNS", width)
    out_dir = tmp_path / "run"
    code = main(["run", "--headless", "--epochs", "2", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    verdict = json.loads((out_dir / "summary.json").read_text())["verdict"]
    assert len(verdict) > 60, verdict  # longer than the old fixed budget
    assert f"╭─ Diagnosis: {verdict} ─" in out, out
