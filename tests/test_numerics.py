"""The CPU numerics of ``autoprompt train`` and ``predict``: exact (the pipeline's) or fast (the CPU's own), chosen
before torch loads, recorded with what they made, and the fast training step near the exact one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from autoprompt import cli
from autoprompt.cpu_paths import CPU_CODE_PATHS
from autoprompt.device import EXACT, EXACT_NUMERICS, FAST, Numerics, cpu_bfloat16, numerics
from autoprompt.model import backbones, checkpoints
from autoprompt.model.decoding import head_logits
from autoprompt.training.fewshot import Run
from autoprompt.training.head_jobs import run_record
from autoprompt.training.loop import make_head, step_logits, train_head
from tests.helpers import train_config

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_exact():
    yield
    numerics(EXACT, CPU)  # the suite's numerics again, whatever a test chose


def test_exact_turns_onednn_off_and_fast_uses_bfloat16_where_the_cpu_has_it(restore_exact, monkeypatch):
    exact = numerics(EXACT, CPU)
    assert (exact.mode, exact.precision, exact.compile) == (EXACT, "float32", False)
    assert not torch.backends.mkldnn.enabled
    fast = numerics(FAST, CPU)
    assert torch.backends.mkldnn.enabled
    assert fast.precision == ("bfloat16" if cpu_bfloat16() else "float32")
    monkeypatch.setenv("PATH", "")  # no C++ compiler: the step runs eagerly, and says so
    monkeypatch.delenv("CXX", raising=False)
    eager = numerics(FAST, CPU)
    assert not eager.compile and "not compiled" in eager.describe(training=True)
    with pytest.raises(Exception, match="give exact or fast"):
        numerics("quick", CPU)


def test_fast_numerics_enter_the_runs_record_and_the_exact_path_adds_nothing():
    task = SimpleNamespace(identity=lambda: {"task": "t"})
    run = Run("fewshot", "s0-seed0", 0, ("a", "b"))
    config = train_config("workshop")
    exact = run_record(task, "workshop", run, config, {}, "code")
    assert "numerics" not in exact and run_record(task, "workshop", run, config, {}, "code", EXACT_NUMERICS) == exact
    fast = Numerics(FAST, "bfloat16", True, "AVX512")
    assert run_record(task, "workshop", run, config, {}, "code", fast)["numerics"] == fast.record()


def _bfloat16_step_is_deterministic_and_near_the_exact_one() -> None:
    """Under bfloat16 autocast (float32 weights, losses and Adam) two runs give the same head, and a trained head's
    logits through the bfloat16 step are its float32 logits to within a few percent. (What the precision does to
    held-out Dice after a whole training is ``bench/studies/own_data.py``'s measure, on real images.)"""
    decoder = _decoder()
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64, generator=generator).half()
    boxes = torch.tensor([[20, 30, 90, 100], [10, 10, 60, 80], [40, 40, 120, 110], [5, 50, 70, 120]])
    config = train_config("workshop")
    exact = train_head(embeddings, boxes, 128, decoder, config, 3, CPU).head
    fast = numerics(FAST, CPU)
    fast = Numerics(fast.mode, "bfloat16", False, fast.isa)
    heads = [train_head(embeddings, boxes, 128, decoder, config, 3, CPU, numerics=fast).head for _ in range(2)]
    for name, value in heads[0].state_dict().items():
        assert torch.equal(value, heads[1].state_dict()[name]), f"{name} differs between identical bfloat16 runs"
        assert value.dtype == torch.float32, f"{name}: the weights stay float32"
    with torch.no_grad():
        x = embeddings.float()
        a, b = head_logits(exact, decoder, x), step_logits(fast)(exact, decoder, x)
    assert b.dtype == torch.float32
    difference = float((a - b).abs().max() / a.abs().max())
    assert 0 < difference < 0.1, f"bfloat16 logits {difference:.3f} (relative max difference) from float32 ones"


def _compiled_step_gives_the_eager_steps_logits_and_gradients() -> None:
    """``torch.compile`` of the decoder's forward (dynamic batch: a short last batch reuses the graph) computes what
    the eager forward does, gradients included."""
    decoder = _decoder()
    fast = numerics(FAST, CPU)
    if not fast.compile:
        sys.exit(NO_COMPILER)
    eager, compiled = Numerics(FAST, "float32", False, fast.isa), Numerics(FAST, "float32", True, fast.isa)
    x = torch.randn(3, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    grads = []
    for chosen in (eager, compiled):
        head = make_head(decoder, "whole_box", 0.01, seed=0)
        for batch in (x, x[:2]):
            out = step_logits(chosen)(head, decoder, batch)
            out.square().mean().backward()
        grads.append((out.detach(), [p.grad.clone() for p in head.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-3, atol=1e-3)
    for g_compiled, g_eager in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(g_compiled, g_eager, rtol=1e-2, atol=1e-3 * float(g_eager.abs().max()))


def _decoder():
    return backbones.build_prompt_decoder("lite_medsam", checkpoints.resolve_checkpoint("lite_medsam", None))


NO_BFLOAT16, NO_COMPILER = 77, 78  # the exit status of a check that found no bfloat16 instructions, no C++ compiler


def _in_a_fresh_process(check: str) -> None:
    """Run ``check`` (a function of this module) where torch loads unpinned, as ``autoprompt train`` loads it: in this
    process the suite's stages may have capped oneDNN at AVX2 already, which hides the CPU's bfloat16."""
    code = (
        "import sys, torch\nfrom autoprompt.device import cpu_bfloat16\n"
        f"sys.exit({NO_BFLOAT16}) if not cpu_bfloat16() else None\n"
        f"from tests.test_numerics import {check}\n{check}()"
    )
    clean = {k: v for k, v in os.environ.items() if k not in CPU_CODE_PATHS and k != cli.NUMERICS_VARIABLE}
    run = subprocess.run([sys.executable, "-c", code], env=clean, cwd=REPO, capture_output=True, text=True)
    if run.returncode in (NO_BFLOAT16, NO_COMPILER):
        pytest.skip("this CPU has no AVX-512 BF16 or AMX" if run.returncode == NO_BFLOAT16 else "no C++ compiler")
    assert run.returncode == 0, run.stderr[-3000:]


def test_the_bfloat16_step_is_deterministic_and_near_the_exact_one():
    _in_a_fresh_process("_bfloat16_step_is_deterministic_and_near_the_exact_one")


def test_the_compiled_step_gives_the_eager_steps_logits_and_gradients():
    _in_a_fresh_process("_compiled_step_gives_the_eager_steps_logits_and_gradients")


def test_the_fast_predictor_decodes_through_openvinos_bfloat16_near_the_float32_decoder():
    _in_a_fresh_process("_fast_predictor_decodes_through_openvinos_bfloat16_near_the_float32_decoder")


def _fast_predictor_decodes_through_openvinos_bfloat16_near_the_float32_decoder():
    """On the fast path ``predict``'s decoder is OpenVINO's bfloat16 one; a box around a bright ellipse gives the
    float32 torch decoder's mask within a few boundary pixels, and the same mask on a second call."""
    import numpy as np

    from autoprompt.model import runtimes
    from autoprompt.model.decoding import decode_scored
    from tests.helpers import RUNTIME_CACHE

    chosen = numerics(FAST, CPU)
    checkpoint = checkpoints.resolve_checkpoint("lite_medsam", None)
    rows, cols = np.ogrid[:640, :640]
    image = np.where(((rows - 300) / 120.0) ** 2 + ((cols - 340) / 170.0) ** 2 < 1, 200, 40).astype(np.uint8)
    choice = runtimes.Choice("openvino", chosen.precision)
    encoder = runtimes.build_encoder("lite_medsam", checkpoint, choice, CPU, RUNTIME_CACHE)
    embeddings = runtimes.embed(encoder, "lite_medsam", torch.from_numpy(image)[None], 1)
    fast = runtimes.build_decoder("lite_medsam", checkpoint, choice, RUNTIME_CACHE)
    assert isinstance(fast, runtimes.OpenVinoDecoder) and fast.precision == "bfloat16"
    box = torch.tensor([[165, 175, 515, 425]])
    masks = [decode_scored(d, embeddings, 640, 1, CPU, boxes=box)[0] > 0.5 for d in (_decoder(), fast, fast)]
    dice = 2 * float((masks[0] & masks[1]).sum()) / float(masks[0].sum() + masks[1].sum())
    assert masks[0].sum() > 50_000 and dice > 0.99, dice  # the ellipse has about 64,000 pixels
    assert torch.equal(masks[1], masks[2])


def _capability(argv: list[str], **env: str) -> str:
    """The CPU capability torch loads with when ``autoprompt ARGV`` starts (its handler replaced by a print)."""
    code = (
        "import sys\nfrom autoprompt import cli\n"
        f"sys.argv = ['autoprompt', *{argv!r}]\n"
        "cli.main = lambda argv=None: print(__import__('torch').backends.cpu.get_cpu_capability())\ncli.entry()"
    )
    clean = {k: v for k, v in os.environ.items() if k not in CPU_CODE_PATHS and k != cli.NUMERICS_VARIABLE}
    run = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


def test_train_and_predict_load_torch_unpinned_unless_exact(tmp_path):
    """The CPU code paths are pinned to AVX2 before torch loads for ``--exact``, ``AUTOPROMPT_NUMERICS=exact`` and
    every command without the option; ``train`` and ``predict`` otherwise load torch on the CPU's own instructions."""
    predict = ["predict", "-m", str(tmp_path), "-i", str(tmp_path), "-o", str(tmp_path / "out")]
    native = torch.backends.cpu.get_cpu_capability() if not os.environ.get("ATEN_CPU_CAPABILITY") else None
    assert _capability([*predict, "--exact"]) == "AVX2"
    assert _capability(predict, AUTOPROMPT_NUMERICS="exact") == "AVX2"
    assert _capability(["evaluate", "--pred", str(tmp_path), "--masks", str(tmp_path)]) == "AVX2"
    fast = _capability(predict)
    if native is not None:
        assert fast == native
    assert fast in ("AVX2", "AVX512", "DEFAULT", "ZVECTOR") and _capability(["train", str(tmp_path), "-o", "m.pt"])


def test_a_bad_numerics_variable_is_named(monkeypatch):
    monkeypatch.setenv(cli.NUMERICS_VARIABLE, "turbo")
    with pytest.raises(SystemExit, match="AUTOPROMPT_NUMERICS is 'turbo'; set it to exact or fast"):
        cli._numerics_mode(SimpleNamespace(exact=False))
    monkeypatch.delenv(cli.NUMERICS_VARIABLE)
    assert cli._numerics_mode(SimpleNamespace(exact=False)) == FAST
    assert cli._numerics_mode(SimpleNamespace(exact=True)) == EXACT
    assert cli._numerics_mode(SimpleNamespace()) == EXACT
