"""Property-based: whatever a user types, vgdiag answers with a result or one clear line."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgdiag.cli.app import main
from vgdiag.engine.devices import resolve_device
from vgdiag.engine.models import parse_init
from vgdiag.errors import ExitCode, UserError
from vgdiag.inputs.recipe import RunOptions

text = st.text(alphabet=string.printable, max_size=30)
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True))


@given(spec=text)
def test_init_specs_parse_or_raise_user_error(spec):
    try:
        scheme, std = parse_init(spec)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert scheme in ("default", "normal", "xavier", "he")
        assert std is None or std > 0


@given(spec=text)
def test_device_specs(spec):
    try:
        assert resolve_device(spec) in ("cpu", "cuda") or spec.strip().lower().startswith("cuda")
    except UserError as exc:
        assert "\n" not in str(exc)


@given(depth=numbers, width=numbers, every=numbers, lr=numbers, epochs=numbers,
       batch=numbers, data=text, activation=text, optimizer=text)
def test_run_options_validate_only_raises_user_error(depth, width, every, lr, epochs, batch,
                                                    data, activation, optimizer):
    opts = RunOptions(depth=int(depth) if isinstance(depth, int) else 7,
                      width=int(width) if isinstance(width, int) else 128,
                      every=int(every) if isinstance(every, int) else 10,
                      lr=float(lr), epochs=int(epochs) if isinstance(epochs, int) else None,
                      batch_size=int(batch) if isinstance(batch, int) else None,
                      data=data, activation=activation, optimizer=optimizer)
    try:
        opts.validate()
    except UserError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--every", "--lr", "--epochs", "--depth", "--width",
                               "--batch-size", "--init", "--data", "--model", "--device",
                               "--seed", "--hist-every", "--fail-on"]),
       # Small numbers: a valid --depth 995000 would build a model for minutes.
       value=st.one_of(text, st.integers(-3, 12).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(str)))
def test_cli_answers_one_line_or_runs(capsys, option, value):
    code = main(["inspect", "--depth", "2", "--width", "4", option, value])
    _, err = capsys.readouterr()
    assert code in (ExitCode.OK, ExitCode.FINDINGS, ExitCode.BAD_INPUT), err
    assert "Traceback" not in err
    if code == ExitCode.BAD_INPUT:
        assert err.count("\n") == 1 and err.startswith("vgdiag: error:")
