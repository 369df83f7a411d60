"""Never write over the user's data: each command's outputs checked against its inputs and against files it did not
write, a lock per folder, stale temporaries cleared, Ctrl-C and a full disk in one line, option values checked,
grids compared before scoring, and a user's Git repository left alone. (The same rules on a trained model's
``predict``, ``train`` and ``export``: tests/test_cli.py.)"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from autoprompt import cli, console
from autoprompt.errors import InputError
from autoprompt.evaluation.folders import evaluate_folder
from autoprompt.io import save_torch
from autoprompt.outputs import clear_stale, hold, refuse_overlap
from autoprompt.training import runs
from tests.helpers import REPO


def _mask(path: Path, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> Path:
    values = np.zeros((4, 16, 16), np.uint8)
    values[1:3, 4:12, 4:12] = 1
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    ("output", "how"), [("in", "is"), ("in/masks", "lies inside"), (".", "contains")], ids=["is", "inside", "contains"]
)
def test_an_output_that_is_inside_or_around_an_input_is_refused(tmp_path: Path, output: str, how: str) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(InputError, match=rf"^-o .* {how} the input -i .*in; give an output folder"):
        refuse_overlap({"-o": tmp_path / output}, {"-i": [tmp_path / "in"]}, "give an output folder")
    refuse_overlap({"-o": tmp_path / "out"}, {"-i": [tmp_path / "in"]}, "siblings are fine")


def test_a_link_does_not_hide_an_overlap(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "in", target_is_directory=True)
    with pytest.raises(InputError, match="is the input"):
        refuse_overlap({"-o": tmp_path / "alias"}, {"-i": [tmp_path / "in"]}, "fix")


def test_evaluate_never_writes_over_a_mask_or_a_file_it_did_not_write(tmp_path: Path) -> None:
    reference = _mask(tmp_path / "masks" / "a.nii.gz")
    _mask(tmp_path / "pred" / "a.nii.gz")
    before = reference.read_bytes()
    with pytest.raises(InputError, match=r"a\.nii\.gz is the input reference .*; give a new file name"):
        evaluate_folder(tmp_path / "pred", tmp_path / "masks", output=reference)
    assert reference.read_bytes() == before
    notes = tmp_path / "notes.csv"
    notes.write_text("subject,age\n1,40\n")
    with pytest.raises(InputError, match=r"notes\.csv: exists and is not a table of autoprompt evaluate"):
        evaluate_folder(tmp_path / "pred", tmp_path / "masks", output=notes)
    assert notes.read_text() == "subject,age\n1,40\n"
    evaluate_folder(tmp_path / "pred", tmp_path / "masks")  # its own CSV, twice: replaced
    table = evaluate_folder(tmp_path / "pred", tmp_path / "masks")
    assert table["dice"].tolist() == [100.0]


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"spacing": (0.5, 0.5, 1.0)}, "spacing"),
        ({"origin": (0.0, 0.0, 10.0)}, "origin"),
    ],
)
def test_evaluate_refuses_a_prediction_on_another_grid(tmp_path: Path, change: dict, what: str) -> None:
    """Same voxels, another spacing or origin: scored as if aligned, HD95 would be in the wrong millimetres."""
    _mask(tmp_path / "masks" / "a.nii.gz")
    _mask(tmp_path / "pred" / "a.nii.gz", **change)
    with pytest.raises(InputError, match=rf"pred/a\.nii\.gz: its {what} \(.*\) differs from its reference a\.nii\.gz"):
        evaluate_folder(tmp_path / "pred", tmp_path / "masks")


def test_a_grid_within_the_files_rounding_is_the_same_grid(tmp_path: Path) -> None:
    _mask(tmp_path / "masks" / "a.nii.gz")
    _mask(tmp_path / "pred" / "a.nii.gz", spacing=(1.0, 1.0, 2.0000001), origin=(1e-6, 0.0, 0.0))
    assert evaluate_folder(tmp_path / "pred", tmp_path / "masks")["dice"].tolist() == [100.0]


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "-m", "m.pt", "-i", "x", "-o", "o", "--threshold", "1.5"],
        ["predict", "-m", "m.pt", "-i", "x", "-o", "o", "--threshold", "-0.1"],
        ["evaluate", "--pred", "p", "--masks", "m", "--threshold", "2"],
        ["evaluate", "--pred", "p", "--masks", "m", "--tolerance", "-1"],
        ["evaluate", "--pred", "p", "--masks", "m", "--tolerance", "0"],
        ["evaluate", "--pred", "p", "--masks", "m", "--tolerance", "nan"],
        ["predict", "-m", "m.pt", "-i", "x", "-o", "o", "--reprompt-margin", "nan"],
    ],
    ids=["threshold>1", "threshold<0", "evaluate-threshold", "tolerance<0", "tolerance=0", "tolerance-nan", "margin"],
)
def test_option_values_out_of_range_are_refused_in_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1
    assert any(fix in err[0] for fix in ("probability from 0 to 1", "mm above 0", "fraction >= 0")), err[0]


def test_a_second_holder_is_told_who_holds_the_folder(tmp_path: Path) -> None:
    held = rf"work: in use by autoprompt train data \(pid {os.getpid()} on "
    refused = pytest.raises(InputError, match=held)
    with hold(tmp_path / "work", "autoprompt train data"), refused, hold(tmp_path / "work", "autoprompt train other"):
        pass
    with hold(tmp_path / "work", "autoprompt train other"):  # released once the first is done
        pass


def test_a_killed_holder_does_not_block_the_next_call(tmp_path: Path) -> None:
    script = (
        "import sys, time; from autoprompt.outputs import hold\n"
        "with hold(sys.argv[1], 'autoprompt predict'):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pytest.raises(InputError, match=rf"in use by autoprompt predict \(pid {holder.pid}")
        with refused, hold(tmp_path, "autoprompt predict"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with hold(tmp_path, "autoprompt predict"):
        pass


def test_temporaries_of_a_killed_run_are_cleared_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / "models" / f".subset0-seed0.tmp-{pid}").mkdir(parents=True)
    (tmp_path / f".prepared.csv.tmp-{pid}").write_text("half")
    (tmp_path / f".model.pt.tmp-{os.getpid()}").write_text("being written")
    (tmp_path / "img.tmp-1.png").write_text("a user's file")
    removed = clear_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".prepared.csv.tmp-{pid}", f".subset0-seed0.tmp-{pid}"])
    assert (tmp_path / f".model.pt.tmp-{os.getpid()}").exists() and (tmp_path / "img.tmp-1.png").exists()


def test_ctrl_c_is_one_line_and_a_non_zero_status(caplog: pytest.LogCaptureFixture) -> None:
    def interrupted(argv):
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stopped:
        console.run(interrupted, [])
    assert stopped.value.code == 130
    assert [r.getMessage() for r in caplog.records] == [
        "interrupted; what was finished is kept, and the same command goes on from there"
    ]


def test_a_save_that_fails_keeps_the_earlier_file(tmp_path: Path, monkeypatch, caplog) -> None:
    """torch's writer on a full disk: a RuntimeError after part of the file. The earlier model stays, one line."""
    path = tmp_path / "model.pt"
    save_torch({"format": "first"}, path)
    real = torch.save

    def full_disk(record, target, *args, **kwargs):
        Path(target).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as failed:
        save_torch({"format": "second"}, path)
    assert failed.value.errno == errno.EIO and failed.value.filename == str(path)
    monkeypatch.setattr(torch, "save", real)
    assert torch.load(path, weights_only=True) == {"format": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "no temporary left"
    monkeypatch.setattr(torch, "save", full_disk)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        console.run(lambda argv: save_torch({}, path), [])
    assert len(caplog.records) == 1 and "is the disk full?" in caplog.records[0].getMessage()


def test_training_logs_leave_a_users_git_repository_alone(tmp_path: Path, monkeypatch) -> None:
    """dvclive's ``Live`` runs ``dvc init`` where it finds Git without DVC; a run's log must not."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    log = runs.open_log(tmp_path / "work" / "run")
    log.log_metric("train/loss", 1.0)
    log.next_step()
    log.end()
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / ".dvcignore").exists()
    staged = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert staged.split() == ["??", "work/"]
    assert (tmp_path / "work" / "run" / "metrics.json").is_file()


def test_a_nii_gz_that_is_not_gzip_is_named_for_what_it_is(tmp_path: Path) -> None:
    from autoprompt.data.images import read_image

    _mask(tmp_path / "a.nii")
    (tmp_path / "a.nii").rename(tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match=r"a\.nii\.gz: not a NIfTI file as its name says .*; rename it \.nii"):
        read_image(tmp_path / "a.nii.gz")
