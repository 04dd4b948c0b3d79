"""Each finding fires on a run that has the problem and stays quiet on one that has not."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from vgdiag.engine.diagnosis import Thresholds, diagnose, gradient_profile, verdict
from vgdiag.engine.events import RunFinished, StepSampled
from vgdiag.engine.probe import Probe
from vgdiag.engine.records import EpochRecord, LayerInfo, LayerStats, StepRecord
from vgdiag.engine.trainer import run_training
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data
from vgdiag.runs.inspection import inspect_at_init


def ids(findings) -> dict[str, str]:
    return {f.id: f.severity for f in findings}


def layers(n: int) -> list[LayerInfo]:
    return [LayerInfo(f"l{i}", "Linear", i, 10, ("weight",), fan_in=4) for i in range(n)]


def record(step: int, **per_layer_lists) -> StepRecord:
    n = len(next(iter(per_layer_lists.values())))
    stats = {
        f"l{i}": LayerStats(**{k: float(v[i]) for k, v in per_layer_lists.items()})
        for i in range(n)
    }
    return StepRecord(step=step, epoch=1, loss=1.0, layers=stats)


def train(**opts) -> RunFinished:
    options = RunOptions(**opts)
    data = load_data(options)
    exp = build_experiment(options, data)
    events = list(run_training(exp, data))
    assert isinstance(events[-1], RunFinished)
    return events[-1]


def test_reference_baseline_vanishes_and_relu_he_does_not():
    bad = inspect_at_init(RunOptions())
    assert ids(bad.findings)["vanishing_gradient"] == "error"
    ev = next(f for f in bad.findings if f.id == "vanishing_gradient").evidence
    # Independent: the ratio from the recorded per-layer norms.
    g = [bad.record.layers[i.name].grad_norm for i in bad.layers]
    assert ev["ratio_first_last"] == pytest.approx(g[0] / g[-1])
    assert ev["ratio_first_last"] < 1e-4  # REFERENCE: ~1e-6, each sigmoid divides by ~7
    good = inspect_at_init(RunOptions(activation="relu", init="he"))
    assert "vanishing_gradient" not in ids(good.findings)
    assert verdict(good.findings) == "healthy"


def test_a_forward_signal_that_blows_up_is_found_and_a_he_init_one_is_not():
    # ReLU layers of 64 with N(0, 0.5) weights: each multiplies the spread by about
    # sqrt(64 * 0.25 / 2) = 2.8; eight of them, ~1.5e3x, while the gradient ratio stays
    # modest (every layer's gradient is huge): only the activations show it.
    blown = inspect_at_init(RunOptions(activation="relu", init="normal:0.5", depth=8, width=64))
    found = {f.id: f for f in blown.findings}
    assert found["activations_growing"].severity == "warning"
    std = [blown.record.layers[i.name].act_std for i in blown.layers if i.activation]
    assert found["activations_growing"].evidence["ratio_last_first"] == pytest.approx(
        std[-1] / std[0])
    assert 2.0 < found["activations_growing"].evidence["growth_per_layer"] < 4.0
    assert {"weight-init", "batchnorm"} <= set(found["activations_growing"].recommend)
    good = inspect_at_init(RunOptions(activation="relu", init="he", depth=8, width=64))
    assert "activations_growing" not in ids(good.findings)


def test_large_init_explodes_and_saturates():
    found = ids(inspect_at_init(RunOptions(init="normal:10")).findings)
    assert found["exploding_gradient"] in ("warning", "error")
    assert "saturated_activations" in found


def test_trained_baseline_stalls_and_its_input_side_freezes():
    end = train(epochs=3)
    found = ids(end.findings)
    assert found["vanishing_gradient"] == "error"
    assert found["loss_stalled"] == "error"
    assert "input_side_frozen" in found
    healthy = train(epochs=3, activation="relu", init="he")
    bad = {"vanishing_gradient", "loss_stalled", "input_side_frozen"}
    assert not bad & set(ids(healthy.findings))
    assert healthy.test is not None and healthy.test["acc"] > 0.5


def test_non_finite_gradients_are_found_and_stop_the_run():
    end = train(epochs=3, activation="relu", init="normal:3", lr=50.0)
    assert ids(end.findings).get("non_finite") == "error"
    assert end.extra["stopped_on_non_finite"]
    found = next(f for f in end.findings if f.id == "non_finite")
    assert f"step {found.evidence['first_step']}" in found.message
    assert {"batchnorm", "weight-init"} <= set(found.recommend)
    # What NaN weights cannot say is not said (their scale: weights_concentrated).
    assert "weights_concentrated" not in ids(end.findings)


def test_non_finite_says_at_which_step_only_as_far_as_sampling_shows_it():
    import dataclasses

    def inf_loss(step: int) -> StepRecord:
        return dataclasses.replace(record(step, grad_norm=[1, 1]), loss=math.inf)

    sparse = [record(0, grad_norm=[1, 1]), record(3, grad_norm=[1, 1]), inf_loss(6)]
    found = next(f for f in diagnose(sparse, layers(2)) if f.id == "non_finite")
    assert "by step 6 (sampled steps only: step 3 was finite):" in found.message
    dense = [record(0, grad_norm=[1, 1]), inf_loss(1)]
    found = next(f for f in diagnose(dense, layers(2)) if f.id == "non_finite")
    assert "became NaN or infinite at step 1:" in found.message


def test_gradient_profile_slope_is_decades_per_layer():
    rec = record(0, grad_norm=[1e-6, 1e-5, 1e-4, 1e-3])
    profile = gradient_profile(rec, layers(4))
    assert profile["ratio"] == pytest.approx(1e-3)
    assert profile["slope"] == pytest.approx(1.0)


def test_weights_shrinking_fires_only_when_norms_fall():
    first = record(0, grad_norm=[1, 1, 1], weight_norm=[2, 2, 2])
    shrunk = record(100, grad_norm=[1, 1, 1], weight_norm=[1, 2, 2])
    assert "weights_shrinking" in ids(diagnose([first, shrunk], layers(3)))
    steady = record(100, grad_norm=[1, 1, 1], weight_norm=[1.9, 2, 2.2])
    assert "weights_shrinking" not in ids(diagnose([first, steady], layers(3)))
    # An embedding's unused rows decay: not the gradient's doing.
    embedded = [dataclasses.replace(layers(3)[0], role="embedding"), *layers(3)[1:]]
    assert "weights_shrinking" not in ids(diagnose([first, shrunk], embedded))
    # In a model that learned anyway it is worth knowing, not a failed gate.
    learned = [EpochRecord(1, 0.05, 0.99, 0.06, 0.99, 1.0, 100)]
    found = {f.id: f for f in diagnose([first, shrunk], layers(3), learned, 10)}
    assert found["weights_shrinking"].severity == "info"


def test_dead_units_and_saturation_thresholds():
    rec = record(0, grad_norm=[1, 1, 1], act_dead=[0.9, 0.1, math.nan],
                 act_saturated=[math.nan, 0.5, 0.0])
    found = diagnose([rec], layers(3))
    dead = next(f for f in found if f.id == "dead_units")
    assert dead.layers == ["l0"]
    sat = next(f for f in found if f.id == "saturated_activations")
    assert sat.layers == ["l1"]
    quiet = diagnose([rec], layers(3), thresholds=Thresholds(dead_fraction=0.95,
                                                             saturated_fraction=0.6))
    assert not {"dead_units", "saturated_activations"} & set(ids(quiet))


def test_loss_stalled_needs_the_loss_at_chance():
    rec = record(0, grad_norm=[1, 1])
    chance = math.log(10)
    stuck = [EpochRecord(e, chance * 1.001, 0.1, chance, 0.1, 1.0, e * 100) for e in (1, 2, 3)]
    found = diagnose([rec], layers(2), stuck, num_classes=10)
    assert ids(found)["loss_stalled"] == "error"
    assert next(f for f in found if f.id == "loss_stalled").evidence["steps"] == 300
    learning = stuck[:2] + [EpochRecord(3, 1.2, 0.6, 1.3, 0.55, 1.0, 300)]
    assert "loss_stalled" not in ids(diagnose([rec], layers(2), learning, num_classes=10))


def test_a_loss_far_above_chance_is_stalled_only_while_it_does_not_fall():
    rec = record(0, grad_norm=[1, 1])

    def epochs(losses):
        return [EpochRecord(e + 1, v, 0.1, v, 0.1, 1.0, (e + 1) * 100)
                for e, v in enumerate(losses)]

    stuck = diagnose([rec], layers(2), epochs([59.0, 58.9, 59.1]), num_classes=10)
    found = next(f for f in stuck if f.id == "loss_stalled")
    assert "far above chance" in found.message and "26x ln(10)" in found.message
    falling = epochs([406.6, 142.9])  # a large start coming down: not a stall
    assert "loss_stalled" not in ids(diagnose([rec], layers(2), falling, num_classes=10))


def test_loss_stalled_waits_for_enough_steps():
    # 16 steps at chance is a run that has not started learning yet, not a stall.
    rec = record(0, grad_norm=[1, 1])
    chance = math.log(10)
    short = [EpochRecord(e, chance * 1.001, 0.1, chance, 0.1, 1.0, e * 8) for e in (1, 2)]
    assert "loss_stalled" not in ids(diagnose([rec], layers(2), short, num_classes=10))


def test_weights_concentrated_uses_fan_in_scale():
    # rms(W) * sqrt(fan_in): weight_norm / sqrt(10) * 2
    tiny = record(0, grad_norm=[1, 1, 1], weight_norm=[0.3, 0.3, 0.3])
    assert ids(diagnose([tiny], layers(3)))["weights_concentrated"] == "warning"
    fine = record(0, grad_norm=[1, 1, 1], weight_norm=[1.6, 1.6, 1.6])
    assert "weights_concentrated" not in ids(diagnose([fine], layers(3)))


def test_non_finite_weights_say_nothing_of_their_scale():
    broken = record(0, grad_norm=[1, 1, 1], weight_norm=[math.nan, math.nan, math.nan])
    assert "weights_concentrated" not in ids(diagnose([broken], layers(3)))


def test_a_learned_scale_after_the_head_is_not_the_output_layer():
    # A temperature applied after the head: its one number's gradient is not the
    # output layer's, and ratios against it called a shrinking gradient exploding.
    torch.manual_seed(0)

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
            self.head = nn.Linear(64, 10)
            nn.init.normal_(self.head.weight, std=1e-3)
            self.logit_scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x)) * self.logit_scale

    model = Scaled()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, opt, every=1) as probe:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(32, 64)),
                                        torch.randint(0, 10, (32,))).backward()
            opt.step()
        infos, records = probe.layers, list(probe.history.records())
    profile = gradient_profile(records[-1], infos)
    assert profile["output"] == "head"
    g = {n: records[-1].layers[n].grad_norm for n in ("body.0", "head")}
    assert profile["ratio"] == pytest.approx(g["body.0"] / g["head"], rel=1e-9)
    assert profile["ratio"] < 1  # the head's gradient is the larger here
    found = ids(diagnose(records, infos))
    assert "exploding_gradient" not in found, found


def test_an_embedding_or_norm_is_not_judged_frozen_against_the_output_layer():
    # An embedding starts at N(0, 1) and moves only the rows it looks up; a norm's scale
    # starts at 1: both move little relative to their initial norm whatever the gradient.
    infos = [LayerInfo("emb", "Embedding", 0, 640, ("weight",), fan_in=1, role="embedding"),
             LayerInfo("norm", "LayerNorm", 1, 64, ("weight", "bias"), role="norm"),
             LayerInfo("l2", "Linear", 2, 1056, ("weight", "bias"), fan_in=32),
             LayerInfo("l3", "Linear", 3, 132, ("weight", "bias"), fan_in=32)]
    stats = {"emb": 1.5e-4, "norm": 2e-4, "l2": 1.5e-2, "l3": 2.3e-2}
    rec = StepRecord(step=200, epoch=3, loss=1.0, layers={
        n: LayerStats(grad_norm=0.1, weight_change=c) for n, c in stats.items()})
    assert "input_side_frozen" not in ids(diagnose([rec], infos))
    rec.layers["l2"] = LayerStats(grad_norm=0.1, weight_change=1e-5)  # a plain layer still is
    found = {f.id: f for f in diagnose([rec], infos)}
    assert found["input_side_frozen"].layers == ["l2"]


def test_a_learning_rate_that_throws_the_weights_off_is_named_and_not_called_frozen():
    # lr 50 on a He-initialised ReLU net: the first updates move every layer by orders
    # of magnitude more than its initial norm, and the units die.
    options = RunOptions(epochs=2, activation="relu", init="he", depth=3, width=64,
                         lr=50.0, every=1)
    data = load_data(options)
    events = list(run_training(build_experiment(options, data), data))
    found = {f.id: f for f in events[-1].findings}
    blown = found["weights_blown_up"]
    assert blown.severity == "error" and "lower the learning rate" in blown.message
    # Independent: the largest ||W - W0|| / ||W0|| of any sampled step, per layer.
    history = [e.record for e in events if isinstance(e, StepSampled)]
    for name, change in blown.evidence["weight_change"].items():
        assert change == max(r.layers[name].weight_change for r in history)
        assert change >= 1e3
    assert "input_side_frozen" not in found  # it moved, relative to nothing it "barely" did
    calm = train(epochs=2, activation="relu", init="he", depth=3, width=64, lr=0.1, every=1)
    assert "weights_blown_up" not in ids(calm.findings)


def test_input_side_frozen_needs_a_first_layer_that_barely_moved_itself():
    def changes(first: float, last: float) -> StepRecord:
        return record(100, grad_norm=[1, 1, 1], weight_change=[first, 0.5 * last, last])

    assert "input_side_frozen" in ids(diagnose([changes(1e-4, 0.5)], layers(3)))
    # 2e-3 of the output layer's change, but 4x its own norm: not frozen
    assert "input_side_frozen" not in ids(diagnose([changes(4.0, 2e3)], layers(3)))


def test_a_diverged_run_reads_growing_activations_at_initialisation():
    opts = {"activation": "relu", "init": "normal:0.5", "depth": 10, "width": 64}
    at_init = inspect_at_init(RunOptions(**opts))
    init = next(f for f in at_init.findings if f.id == "activations_growing")
    end = train(epochs=1, every=1, **opts)
    assert "non_finite" in ids(end.findings)
    grown = next(f for f in end.findings if f.id == "activations_growing")
    # the same model and seed: the figure of step 0, not a median with the blown-up step
    assert grown.evidence["ratio_last_first"] == pytest.approx(
        init.evidence["ratio_last_first"], rel=1e-3)
    assert grown.evidence["step"] == 0


def test_concentrated_weights_are_judged_by_what_the_chain_leaves_of_the_signal():
    # PyTorch's default init scales by 1/sqrt(3) = 0.58 per layer: two such layers leave
    # 0.33 of the signal (no finding), seven leave 0.02 (the reference baseline: info).
    default = 0.577 * math.sqrt(10) / 2  # weight_norm giving rms * sqrt(fan_in) = 0.577
    short = record(0, grad_norm=[1] * 3, weight_norm=[default] * 3)
    assert "weights_concentrated" not in ids(diagnose([short], layers(3)))
    deep = record(0, grad_norm=[1] * 8, weight_norm=[default] * 8)
    found = {f.id: f for f in diagnose([deep], layers(8))}
    assert found["weights_concentrated"].severity == "info"
    assert found["weights_concentrated"].evidence["chain"] == pytest.approx(0.577**7, rel=1e-6)


def test_nan_before_any_update_is_not_blamed_on_the_learning_rate():
    import dataclasses

    first = dataclasses.replace(record(0, grad_norm=[math.nan, 1.0]), loss=math.nan)
    first.layers["l0"].param_grad_norms["weight"] = math.nan
    msg = next(f for f in diagnose([first], layers(2)) if f.id == "non_finite").message
    assert "before any update" in msg and "not the cause" in msg
    assert "lower learning rate" not in msg
    later = [record(0, grad_norm=[1, 1]), dataclasses.replace(record(1, grad_norm=[1, 1]),
                                                              loss=math.inf)]
    msg = next(f for f in diagnose(later, layers(2)) if f.id == "non_finite").message
    assert "at step 1" in msg and "lower learning rate" in msg


def test_advice_leaves_out_the_fixes_the_model_already_has():
    # A vanishing gradient through ReLU layers: "relu" is no advice; through sigmoids it is.
    def vanishing(**acts) -> StepRecord:
        return record(0, grad_norm=[1e-6, 1e-3, 1.0], **acts)

    def advice(rec: StepRecord, infos: list[LayerInfo]) -> list[str]:
        return next(f for f in diagnose([rec], infos) if f.id == "vanishing_gradient").recommend

    relu = vanishing(act_dead=[0.1, 0.1, math.nan], act_saturated=[math.nan] * 3)
    sigmoid = vanishing(act_dead=[math.nan] * 3, act_saturated=[0.5, 0.5, math.nan])
    assert "relu" not in advice(relu, layers(3)) and "relu" in advice(sigmoid, layers(3))
    assert "batchnorm" in advice(sigmoid, layers(3))
    normed = [LayerInfo(f"l{i}", "Linear", i, 10, ("weight",), fan_in=4,
                        normalized_after=i < 2) for i in range(3)]
    assert "batchnorm" not in advice(sigmoid, normed)  # every hidden layer is normalised


def test_a_head_started_tiny_that_grows_by_learning_is_not_blown_up():
    # ConvNeXt-style head init (std 1e-5): it moves 1e3x its start while learning to a
    # normal scale; blown up means far from the start AND far past any init's scale.
    import vgdiag

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    nn.init.normal_(model[2].weight, std=1e-5)
    nn.init.zeros_(model[2].bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    with vgdiag.watch(model, opt, every=5) as w:
        for _ in range(60):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    assert w.history[-1].layers["2"].weight_change > 1e3  # the case arises
    assert "weights_blown_up" not in ids(w.findings())


def test_a_vanishing_gradient_in_a_model_that_learned_is_an_info():
    from vgdiag.engine.records import EpochRecord

    def epoch(val_acc: float) -> EpochRecord:
        return EpochRecord(1, 0.05, 0.99, 0.06, val_acc, 1.0, 100)

    vanishing = [record(0, grad_norm=[1e-6, 1e-3, 1.0])]
    learned = {f.id: f for f in diagnose(vanishing, layers(3), [epoch(0.99)], 10)}
    assert learned["vanishing_gradient"].severity == "info"
    assert learned["vanishing_gradient"].evidence["learned"] == "val acc 0.99"
    assert "learned anyway" in learned["vanishing_gradient"].message
    # 0.8 of the way from chance (0.1) to 1 is 0.82: 0.8 has not learned enough.
    stuck = {f.id: f for f in diagnose(vanishing, layers(3), [epoch(0.8)], 10)}
    assert stuck["vanishing_gradient"].severity == "error"
    no_epochs = {f.id: f for f in diagnose(vanishing, layers(3), (), 10)}
    assert no_epochs["vanishing_gradient"].severity == "error"


def test_three_short_epochs_at_chance_are_a_stall():
    # 13 steps an epoch: 39 steps in all, under the 50-step minimum, yet 3 epochs at
    # chance have said enough; one such epoch has not.
    from vgdiag.engine.records import EpochRecord

    epochs = [EpochRecord(e, 2.31, 0.1, 2.31, 0.1, 1.0, 13 * e) for e in (1, 2, 3)]
    healthy = [record(0, grad_norm=[1.0, 1.0])]
    assert "loss_stalled" in {f.id for f in diagnose(healthy, layers(2), epochs, 10)}
    assert "loss_stalled" not in {f.id for f in diagnose(healthy, layers(2), epochs[:1], 10)}
    # Three short epochs of which only the last is at chance: not yet.
    learning = [EpochRecord(e, loss, 0.5, loss, 0.5, 1.0, 13 * e)
                for e, loss in ((1, 1.2), (2, 1.1), (3, 2.31))]
    assert "loss_stalled" not in {f.id for f in diagnose(healthy, layers(2), learning, 10)}


def test_vanishing_through_time_reads_every_number_at_one_step():
    from vgdiag.engine.records import EpochRecord

    # Three sampled steps whose gradient through 30 time steps decays by 0.5, 0.7
    # and 0.9 per step: the median one (0.7) gives the ratio, the decay and the profile.
    records = []
    for step, decay in enumerate((0.5, 0.7, 0.9)):
        r = record(step, grad_norm=[1.0, 1.0])
        r.time_grad["rnn"] = [decay ** (29 - t) for t in range(30)]
        records.append(r)
    found = {f.id: f for f in diagnose(records, layers(2), (), 10)}
    through = found["vanishing_through_time"]
    assert through.evidence["ratio_first_last_step"]["rnn"] == pytest.approx(0.7 ** 29)
    assert through.evidence["decay_per_step"]["rnn"] == pytest.approx(0.7)
    assert through.evidence["grad_per_step"]["rnn"] == records[1].time_grad["rnn"]
    assert "x0.70 per step" in through.message
    assert f"gets {0.7 ** 29:.2g}" in through.message
    assert through.severity == "error"
    # A model that learned anyway: worth knowing, not an error a CI gate fails on.
    learned = {f.id: f for f in diagnose(records, layers(2),
                                         [EpochRecord(1, 0.2, 0.95, 0.25, 0.92, 1.0, 3)], 10)}
    assert learned["vanishing_through_time"].severity == "info"
    assert "learned anyway (val acc 0.92)" in learned["vanishing_through_time"].message


def test_a_norm_gain_first_in_line_is_not_the_input_side():
    # A tied language model's embedding is its output layer: the first layer in depth is
    # then a norm, whose gain vector's gradient is of another scale than a matrix's.
    infos = [LayerInfo("ln", "LayerNorm", 0, 8, ("weight", "bias"), role="norm"),
             LayerInfo("fc", "Linear", 1, 72, ("weight", "bias"), fan_in=8),
             LayerInfo("head", "Linear", 2, 90, ("weight", "bias"), fan_in=8)]
    r = StepRecord(step=0, epoch=1, loss=1.0, layers={
        "ln": LayerStats(grad_norm=1e-6), "fc": LayerStats(grad_norm=0.5),
        "head": LayerStats(grad_norm=1.0)})
    assert gradient_profile(r, infos)["ratio"] == pytest.approx(0.5)
    assert "vanishing_gradient" not in {f.id for f in diagnose([r], infos)}
    # With no weight layer before the output one, the norm is still read.
    del r.layers["fc"]
    assert gradient_profile(r, [infos[0], infos[2]])["ratio"] == pytest.approx(1e-6)


@pytest.mark.parametrize(("first", "weakened"), [(0.03, True), (0.5, False)])
def test_a_stall_beside_a_weakened_gradient_keeps_the_gradient_fixes(first, weakened):
    # 0.03 is above a vanishing gradient's 1e-2, yet far from flowing freely: the
    # stall must not send the user to the labels alone.
    epochs = [EpochRecord(e, 2.31, 0.1, 2.31, 0.1, 1.0, 40 * e) for e in (1, 2, 3)]
    records = [record(s, grad_norm=[first, 1.0], update_ratio=[1e-3, 1e-3],
                      weight_norm=[1.0, 1.0]) for s in range(0, 120, 10)]
    stall = next(f for f in diagnose(records, layers(2), epochs, 10) if f.id == "loss_stalled")
    assert ("weakened: the first layer gets 0.03 of the output layer's" in stall.message) \
        is weakened
    assert bool(stall.recommend) is weakened
    assert stall.evidence["gradients_flow"] is not weakened


def test_a_loss_at_chance_after_two_steps_is_said_not_judged():
    epochs = [EpochRecord(1, 2.30, 0.1, 2.31, 0.1, 1.0, 1), EpochRecord(2, 2.30, 0.1, 2.31,
                                                                        0.1, 1.0, 2)]
    records = [record(s, grad_norm=[0.5, 1.0], update_ratio=[1e-3, 1e-3]) for s in (0, 1)]
    found = {f.id: f for f in diagnose(records, layers(2), epochs, 10)}
    assert set(found) == {"too_short_to_judge"}
    short = found["too_short_to_judge"]
    assert short.severity == "info" and "after only 2 steps" in short.message
    assert verdict(list(found.values())) == "healthy"  # an info fails no gate
    # Fifty steps at chance are a stall.
    epochs = [EpochRecord(e, 2.30, 0.1, 2.31, 0.1, 1.0, 25 * e) for e in (1, 2)]
    records = [record(s, grad_norm=[0.5, 1.0], update_ratio=[1e-3, 1e-3]) for s in (0, 49)]
    assert "loss_stalled" in {f.id for f in diagnose(records, layers(2), epochs, 10)}


def test_a_model_that_memorises_random_labels_is_said_to():
    # Train loss far under ln(10), validation at chance: memorised, not learned.
    records = [record(s, grad_norm=[0.5, 1.0], update_ratio=[1e-3, 1e-3]) for s in (0, 99)]
    memorised = [EpochRecord(1, 1.5, 0.5, 2.4, 0.1, 1.0, 50),
                 EpochRecord(2, 0.3, 0.95, 2.9, 0.09, 1.0, 100)]
    found = {f.id: f for f in diagnose(records, layers(2), memorised, 10)}
    assert found["memorising"].severity == "warning"
    assert "val loss 2.9, no better than ln(10)" in found["memorising"].message
    assert found["memorising"].recommend == []
    # Validation following training down is learning.
    learned = [EpochRecord(1, 1.5, 0.5, 1.6, 0.5, 1.0, 50),
               EpochRecord(2, 0.3, 0.95, 0.5, 0.9, 1.0, 100)]
    assert "memorising" not in {f.id for f in diagnose(records, layers(2), learned, 10)}


def test_overfitting_that_still_generalises_is_not_memorising():
    # Binary: train loss 0.01, val loss 0.80 > ln 2, yet val acc 0.92: overconfident
    # where wrong, right on new data.
    records = [record(s, grad_norm=[0.5, 1.0], update_ratio=[1e-3, 1e-3]) for s in (0, 99)]
    epochs = [EpochRecord(1, 0.2, 0.95, 0.5, 0.9, 1.0, 50),
              EpochRecord(2, 0.01, 1.0, 0.80, 0.92, 1.0, 100)]
    assert "memorising" not in {f.id for f in diagnose(records, layers(2), epochs, 2)}
    # Without a val accuracy, a val loss no better than guessing is not "learned anyway".
    vanishing = [record(0, grad_norm=[1e-6, 1e-3, 1.0])]
    blind = [EpochRecord(1, 0.05, math.nan, 2.5, math.nan, 1.0, 100),
             EpochRecord(2, 0.05, math.nan, 2.5, math.nan, 1.0, 200)]
    found = {f.id: f for f in diagnose(vanishing, layers(3), blind, 10)}
    assert found["vanishing_gradient"].severity == "error"
    assert "memorising" in found
