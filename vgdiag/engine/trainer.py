"""run_training: train an Experiment and yield the event stream.

The loop keeps the host out of the way: losses and accuracies accumulate on the
device and are read once per epoch; the probe copies to the host only on sampled
steps. Cancellation is a threading.Event polled between steps, never a killed thread.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Generator, Iterator
from typing import Any

import torch
from torch import nn

from vgdiag.engine import events as ev
from vgdiag.engine.devices import cpu_settings_kept, flush_denormals, set_cpu_threads
from vgdiag.engine.diagnosis import LiveDiagnosis, diagnose
from vgdiag.engine.distributed import DataParallel, backend_message, lost_peer
from vgdiag.engine.environment import environment
from vgdiag.engine.evaluation import Evaluator, accuracy, prediction
from vgdiag.engine.experiment import Experiment, Stage, sampling_every
from vgdiag.engine.history import History
from vgdiag.engine.interrupts import is_user_exit
from vgdiag.engine.probe import Probe
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo
from vgdiag.engine.splits import DataBundle
from vgdiag.engine.status import RunStatus
from vgdiag.engine.tracebacks import failure_line
from vgdiag.errors import UserError
from vgdiag.textfmt import one_line

# Above this many parameters the model is not built again to ask the plugins whether
# they apply (a second copy in memory mid-run): every plugin is advised.
ADVICE_BUILD_LIMIT = 50_000_000
PROGRESS_INTERVAL_S = 0.25  # StepProgress at most this often: enough for a smooth bar


class _Run:
    """State of one training run; `events()` drives it."""

    def __init__(self, exp: Experiment, data: DataBundle, stop: threading.Event,
                 parallel: DataParallel | None = None) -> None:
        self.exp = exp
        self.parallel = parallel
        # Under torchrun the ranks stop together: `stopping` changes only where they agree.
        self.stopping = False
        self.data = data
        self.stop = stop
        self.cfg = exp.train
        self.device = torch.device(self.cfg.device)
        self.history = History()
        self.epochs: list[EpochRecord] = []
        self.layers: list[LayerInfo] = []
        self.steps = 0
        self.samples = 0  # training samples the finished epochs saw (all ranks)
        self.every = self.cfg.every  # the probe's interval (shorter for short runs)
        self.t0 = time.perf_counter()
        self.last_progress = 0.0
        self.model: nn.Module | None = None
        self.data_dev: DataBundle | None = None
        self.non_finite = False
        self.classify = data.num_classes > 0
        self.live = LiveDiagnosis()
        self._not_applicable: dict[str, str] | None = None
        self.evaluate = Evaluator(exp.loss_fn, exp.output_key, self.classify,
                                  self.cfg.batch_size, self.device, parallel)

    def stop_requested(self) -> bool:
        return self.stopping if self.parallel else self.stop.is_set()

    def agree(self, *sums: torch.Tensor) -> list[torch.Tensor]:
        """Ranks agree on stopping (and on a NaN), and add up `sums`: one collective."""
        if self.parallel is None:
            return list(sums)
        n = len(sums)
        flags = torch.stack([torch.tensor(float(self.stop.is_set())),
                             torch.tensor(float(self.non_finite))]).to(self.device)
        total = self.parallel.all_sum([*sums, *flags.unbind()])
        self.stopping = self.stopping or bool(total[n] > 0)
        self.non_finite = bool(total[n + 1] > 0)
        return total[:n]

    def findings(self) -> list[Finding]:
        """The diagnosis of everything recorded (the end of a run)."""
        return diagnose(self.history.records(), self.layers, self.epochs,
                        self.data.num_classes, exclude=self.not_applicable())

    def not_applicable(self, look: bool = False) -> dict[str, str]:
        """The plugins that cannot apply to this model, not to be advised. Looked up
        once (`look`), at the first epoch's end: it builds the model and runs a dry
        forward, which a failing or interrupted run's ending must not wait for or
        repeat its failure in; a run that ends before that advises every plugin."""
        if self._not_applicable is None:
            if not (look and self.history.records()) or (self.parallel and self.parallel.rank):
                return {}  # rank 0 alone builds the model again: it writes the folder
            if self.model is not None and sum(
                    p.numel() for p in self.model.parameters()) > ADVICE_BUILD_LIMIT:
                self._not_applicable = {}  # a second copy could not fit: advise them all
                return self._not_applicable
            from vgdiag.plugin_api import not_applicable

            self._not_applicable = not_applicable(self.exp)
        return self._not_applicable

    def config(self, stages: list[Stage], steps_per_epoch: int) -> dict[str, Any]:
        return {
            **environment(self.device),
            "experiment": self.exp.describe(),
            "data": self.data.describe(),
            "stages": [{"name": s.name, "epochs": s.epochs} for s in stages],
            "steps_per_epoch": steps_per_epoch,
            "sampled_every": self.every,
        }

    def events(self) -> Iterator[ev.Event]:
        if self.parallel:
            self.parallel.check(self.exp)
        torch.manual_seed(self.cfg.seed)
        model = self.exp.build_model().to(self.device)
        self.model = model
        set_cpu_threads(model, self.device, self.cfg.threads)
        flush_denormals(self.device)
        stages = self.exp.stage_plan(model) if self.exp.stage_plan else [
            Stage("train", self.cfg.epochs, model)
        ]
        data = self.data.to(self.device)
        self.data_dev = data
        order = torch.Generator().manual_seed(self.cfg.seed)
        first_bs = stages[0].batch_size or self.cfg.batch_size
        total_epochs = sum(s.epochs for s in stages)
        self.every = sampling_every(self.cfg.every, sum(
            s.epochs * data.train.num_batches(s.batch_size or self.cfg.batch_size) for s in stages),
            self.cfg.min_samples)
        yield ev.RunStarted(
            self.config(stages, data.train.num_batches(first_bs)),
            data.train.num_batches(first_bs),
            total_epochs,
        )
        epoch = 0
        for index, stage in enumerate(stages):
            if self.stop_requested() or self.non_finite:
                break
            stage.model.to(self.device)
            # What the loop calls: DDP around the model, or the model sharded in place.
            runner = self.parallel.wrap(stage.model) if self.parallel else stage.model
            params = stage.trainable or [p for p in stage.model.parameters() if p.requires_grad]
            optimizer = self.exp.optimizer_factory(params)
            probe = Probe(
                stage.model,
                optimizer,
                every=self.every,
                hist_every=self.cfg.hist_every,
                history=self.history,
                start_step=self.steps,
            )
            try:
                trainable_ids = {id(p) for p in params}
                for p in stage.model.parameters():  # frozen here: a gradient left from an
                    if id(p) not in trainable_ids:  # earlier stage is not this stage's
                        p.grad = None
                yield ev.StageStarted(
                    index,
                    stage.name,
                    stage.epochs,
                    [n for n, m in stage.model.named_modules()
                     if any(id(p) in trainable_ids for p in m.parameters(recurse=False))],
                )
                for _ in range(stage.epochs):
                    if self.stop_requested() or self.non_finite:
                        break
                    epoch += 1
                    probe.epoch = epoch
                    yield from self._epoch(epoch, stage, runner, optimizer, probe, data,
                                           order)
            finally:
                self.layers = probe.layers
                probe.close()
        self.model = stages[-1].model

    def _epoch(
        self,
        epoch: int,
        stage: Stage,
        runner: nn.Module,
        optimizer: torch.optim.Optimizer,
        probe: Probe,
        data: DataBundle,
        order: torch.Generator,
    ) -> Iterator[ev.Event]:
        t_start = time.perf_counter()
        model = stage.model
        model.train()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        key = self.exp.output_key
        parallel = self.parallel
        weight = 1.0
        for x, y in data.train.batches(stage.batch_size or self.cfg.batch_size, order):
            if self.stop_requested():
                return  # the epoch is incomplete: it is not recorded
            if parallel:
                x, y, weight = parallel.shard(x, y)
            optimizer.zero_grad(set_to_none=True)
            out = prediction(runner(x), key)
            loss = self.exp.loss_fn(out, y)
            probe.observe_loss(loss)
            (loss * weight if parallel else loss).backward()
            optimizer.step()
            self.steps += 1
            n = int(y.shape[0]) if weight else 0
            seen += n
            loss_sum += loss.detach().reshape(()).double() * n  # a (1,) loss is one number too
            if self.classify and n:
                correct += (out.detach().argmax(dim=1) == y).sum()
            records = probe.drain()
            now = time.perf_counter() - self.t0
            if records:
                self.layers = probe.layers
                trainable = {i.name for i in self.layers if i.trainable}
            for record in records:
                yield ev.StepSampled(record, self.layers, self.steps, now)
                if not math.isfinite(record.loss) or any(
                    s.grad_non_finite
                    for name, s in record.layers.items()
                    if name in trainable
                ):
                    self.non_finite = True
            if records and parallel:
                self.agree()  # the ranks sampled this step together: they stop together
                if self.stopping:
                    return
            if not records and now - self.last_progress > PROGRESS_INTERVAL_S:
                self.last_progress = now
                yield ev.StepProgress(epoch, self.steps, now)
            if self.non_finite and not self.cfg.keep_going:
                break
        loss_sum, correct, total = self.agree(loss_sum, correct,
                                              torch.tensor(float(seen), device=self.device))
        seen = int(total)
        self.samples += seen
        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            self.non_finite = True
        val_loss, val_acc = self.evaluate(model, data.val)
        summary = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=accuracy(int(correct), seen, train_loss, self.classify),
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - t_start,
            steps=self.steps,
            stage=stage.name,
        )
        self.epochs.append(summary)
        self.layers = probe.layers
        skipped = self.not_applicable(look=True)
        yield ev.EpochEnded(summary, self.live.findings(
            self.history, self.layers, self.epochs, self.data.num_classes,
            exclude=skipped), sorted(skipped))
        if self.cfg.keep_going:
            self.non_finite = False

def run_training(
    experiment: Experiment,
    data: DataBundle,
    stop_event: threading.Event | None = None,
    parallel: DataParallel | None = None,
) -> Generator[ev.Event, None, None]:
    """Train `experiment` on `data`, yielding events; ends with RunFinished or RunFailed.

    Errors in the recipe that the user can fix (UserError) propagate before any
    training. Once training started, anything the model's, data's or loss's code
    raises (a UserError such as a forward returning None, `sys.exit()`, a
    KeyboardInterrupt that no signal caused, the final test evaluation) ends the
    stream with RunFailed. RunFinished is INTERRUPTED only when `stop_event` was set.
    With `parallel` (under torchrun) every rank calls this on the same data and each
    trains on its slice of every batch (vgdiag.engine.distributed).
    """
    with cpu_settings_kept():
        yield from _training(experiment, data, stop_event, parallel)


def _training(
    experiment: Experiment,
    data: DataBundle,
    stop_event: threading.Event | None,
    parallel: DataParallel | None,
) -> Generator[ev.Event, None, None]:
    stop = stop_event or threading.Event()
    run = _Run(experiment, data, stop, parallel)
    started = False
    failure: BaseException | None = None
    status, test = RunStatus.COMPLETED, None
    try:
        for event in run.events():
            started = started or isinstance(event, ev.RunStarted)
            yield event
        status = RunStatus.INTERRUPTED if run.stop_requested() else RunStatus.COMPLETED
        dev = run.data_dev
        # `is not None`: a compiled module's truth value calls the model's __len__
        if (status == RunStatus.COMPLETED and dev is not None and dev.test is not None
                and run.model is not None):
            loss, acc = run.evaluate(run.model, dev.test)
            test = {"loss": loss, "acc": acc}
    except UserError as exc:
        if not started:
            raise
        failure = exc
    except (KeyboardInterrupt, SystemExit) as exc:
        if not is_user_exit(exc):
            raise  # a real interruption: the caller marks the folder interrupted
        failure = exc
    except Exception as exc:  # the user's model or data code raised: report, don't crash
        failure = exc
    if failure is not None:
        error = failure_line(failure)
        if parallel is not None:
            # The rank that raised says why; the others fail in a collective and, on
            # rank 0, name the rank that started it.
            parallel.report_failure(error)
            cause = parallel.peer_failure()
            if cause:
                error = f"{cause} (rank {parallel.rank}: {type(failure).__name__})"
            elif lost_peer(failure):
                error = (f"another rank's process ended without saying why (killed, or out "
                         f"of memory), so rank {parallel.rank}'s collective failed: "
                         f"{one_line(backend_message(failure), 200)}")
        yield ev.RunFailed(
            error=error,
            traceback="".join(traceback.format_exception(failure)),
            layers=run.layers,
            findings=run.findings(),
            seconds=time.perf_counter() - run.t0,
            steps_done=run.steps,
        )
        return
    yield ev.RunFinished(
        status=status,
        layers=run.layers,
        test=test,
        findings=run.findings(),
        seconds=time.perf_counter() - run.t0,
        steps_done=run.steps,
        extra={"stopped_on_non_finite": run.non_finite, "samples_seen": run.samples},
    )
