"""Bad options and inputs are refused before anything is written, each in one line naming the value and the fix
(issue 27, items 1, 2, 4, 5, 8, 10 and the weak cases on options, dry runs, small test splits, bundles and EDF)."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pretext.config import TrainConfig
from pretext.data import cached_generated
from pretext.errors import DataError
from pretext.pipeline import pretrain
from signalssl.io import read_record
from sslbench.cli import main
from sslbench.evaluate import evaluate
from sslbench.probes import FinetuneConfig
from sslbench.reports import MalformedRowWarning
from sslbench.splits import SmallTestSplitWarning
from tests.sslbench import _tiny as T

SPEC = f"{T.DATA_KIND}:"


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    assert err.startswith("sslbench: ")
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pre") / "run"
    pretrain(T.TASK, T.ENCODER, SPEC, folder, TrainConfig(steps=2, batch_size=8, progress=False, precision="32"))
    return folder


# -- evaluate: every option checked before anything is written ----------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["--n-boot", "-3"], "--n-boot (evaluate.n_boot)=-3 must be >= 0, e.g. --n-boot 1000"),
    (["--finetune-lr", "nan"], "--finetune-lr (finetune.lr)=nan must be a finite number, e.g. --finetune-lr 0.001"),
    (["--finetune-steps", "0"], "--finetune-steps (finetune.steps)=0 must be >= 1, e.g. --finetune-steps 300"),
    (["--layer-decay", "1.5"], "--layer-decay (finetune.layer_decay)=1.5 must be <= 1, e.g. --layer-decay 0.75"),
    (["--threads", "0"], "--threads=0 must be > 0"),
    (["--min-test-patients", "-1"], "--min-test-patients (evaluate.min_test_patients)=-1 must be >= 0, "
                                    "e.g. --min-test-patients 20"),
    (["--fractions", "0,0.5"], "--fractions (evaluate.fractions.0)='0' must be > 0, e.g. --fractions 0.01,0.1,1.0"),
    (["--k", "3", "--fold", "3"], "evaluate: fold=3 must be in 0..2 for k=3"),
])
def test_evaluate_options_are_checked_before_any_write(run, tmp_path, capsys, args, message):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(run), "--data", SPEC, "--protocol", "finetune", "--fractions", "1",
            "--seeds", "0", "--baselines", "none", "--out", str(out), *args]
    assert main(argv) == 2
    err = _err(capsys)
    assert message.search(err) if isinstance(message, re.Pattern) else message in err
    assert "--lr 0.001" not in err.replace("--finetune-lr 0.001", "")  # evaluate has no --lr
    assert not out.exists()  # no features/, predictions/ or run-identity.json


def test_finetune_steps_is_a_real_maximum():
    """``--finetune-steps 10`` ran 30 steps (the minimum); the maximum now wins."""
    assert FinetuneConfig(steps=10).n_steps(1000) == 10
    assert FinetuneConfig(steps=300, min_steps=30, max_epochs=1, batch_size=32).n_steps(64) == 30


def test_evaluate_one_class_labels_is_one_line_and_writes_nothing(run, tmp_path):
    data = T.make_data()
    for split in data.splits.values():
        split.labels = np.zeros_like(split.labels)
    data.num_classes, data.class_names = 1, ["neg"]
    out = tmp_path / "eval"
    with pytest.raises(DataError, match=r"the labels hold one class only \('neg'\); a classifier needs at least two"):
        evaluate(run, data, protocol="linear", fractions=(1.0,), seeds=(0,), baselines=(), n_boot=10, out=out)
    assert not out.exists()


def test_small_test_split_warns_and_shows_n_a(run, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(run), "--data", SPEC, "--protocol", "knn", "--fractions", "1", "--seeds",
            "0", "--baselines", "none", "--n-boot", "5", "--out", str(out)]
    with pytest.warns(SmallTestSplitWarning, match=r"the test split has only .*patient\(s\) of 'pos'.*fewer than 20 "
                                                   r"per class.*--min-test-patients"):
        assert main(argv) == 0
    table = capsys.readouterr().out
    assert "n/a" in table and "NaN" not in table and "None" not in table
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert row["small_test"] is True and row["test_patients_per_class"]["pos"] < 20
    with warnings.catch_warnings():  # a minimum the split meets: no warning
        warnings.simplefilter("error", SmallTestSplitWarning)
        assert main([*argv[:-2], "--out", str(tmp_path / "e2"), "--min-test-patients", "1"]) == 0


# -- run --dry-run checks what the real run checks -----------------------------------------------------------------
@pytest.mark.parametrize(("over", "message"), [
    ({"datasets": {"scans": {"data": "nifti:{tmp}/no-such-folder"}}}, "does not exist"),
    ({"tasks": {T.TASK: {"horizon": 3}}}, "horizon"),
])
def test_dry_run_checks_data_and_task_options(tmp_path, capsys, over, message):
    over = json.loads(json.dumps(over).replace("{tmp}", str(tmp_path)))
    out = tmp_path / "out"
    assert main(["run", str(T.write_recipe(tmp_path, **over)), "--out", str(out), "--dry-run"]) == 2
    assert message in _err(capsys)
    assert not out.exists()
    assert main(["run", str(T.write_recipe(tmp_path)), "--out", str(out), "--dry-run"]) == 0  # a good recipe passes
    assert "recipe tiny: " in capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing


# -- report: a record without the cell fields is named ------------------------------------------------------------
def test_report_names_file_line_and_missing_fields(run, tmp_path, capsys):
    out = tmp_path / "eval"
    evaluate(run, SPEC, protocol="knn", fractions=(1.0,), seeds=(0, 1), baselines=(), n_boot=10, out=out,
             min_test_patients=0)
    path = out / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], json.dumps({"dataset": "tiny", "seed": 3}), *lines[1:]]) + "\n")
    with pytest.warns(MalformedRowWarning, match=rf"{path}, line 2: the record has no task, encoder, arm, protocol, "
                                                  r"fraction, auroc field\(s\)"):
        assert main(["report", str(out)]) == 0
    assert (out / "report" / "report.md").is_file()


def test_report_names_lines_that_are_not_records_but_not_a_torn_last_line(run, tmp_path):
    """A list or broken JSON in the middle of results.jsonl was skipped silently; a torn last line (a kill
    mid-write) is still skipped without a word."""
    out = tmp_path / "eval"
    evaluate(run, SPEC, protocol="knn", fractions=(1.0,), seeds=(0, 1), baselines=(), n_boot=10, out=out,
             min_test_patients=0)
    path = out / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "[1, 2]", '{"dataset": "ti', *lines[1:], '{"dataset": "torn']) + "\n")
    with pytest.warns(MalformedRowWarning) as caught:
        assert main(["report", str(out)]) == 0
    said = [str(w.message) for w in caught if issubclass(w.category, MalformedRowWarning)]
    assert said == [f"{path}, line 2: the line holds a JSON list, not a record; it is left out of the report",
                    f"{path}, line 3: the line is not JSON (Unterminated string starting at, column 13); it is left "
                    "out of the report"]


# -- cached generated data heals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_cached_generated_data_is_made_again_when_damaged(tmp_path, damage):
    def make(n: int) -> np.ndarray:
        return np.arange(n * 4, dtype=np.float32).reshape(n, 4)

    first = np.asarray(cached_generated(str(tmp_path), "toy", {"n": 50}, make, 50))
    (file,) = tmp_path.glob("toy_*.npy")
    size = file.stat().st_size
    with open(file, "r+b") as fh:
        fh.truncate(0 if damage == "empty" else size - 100)
    with pytest.warns(UserWarning, match=rf"cached toy file {file} is damaged .*making it again"):
        again = np.asarray(cached_generated(str(tmp_path), "toy", {"n": 50}, make, 50))
    np.testing.assert_array_equal(again, first)
    assert file.stat().st_size == size


# -- import-bundle: one safe-loading message, metadata that is not JSON -----------------------------------------------
def _bundle(root: Path, model: bytes | None = None, metadata: str | None = None) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net = {"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": net}))
    (root / "configs" / "metadata.json").write_text(metadata if metadata is not None else json.dumps({"version": "1"}))
    if model is None:
        torch.save({"w": torch.zeros(2)}, root / "models" / "model.pt")
    else:
        (root / "models" / "model.pt").write_bytes(model)
    return root


def test_import_bundle_with_metadata_that_is_not_json(tmp_path, capsys):
    bundle = _bundle(tmp_path / "b", metadata='{"version": "1",\n  oops}')
    assert main(["import-bundle", "--bundle", str(bundle), "--out", str(tmp_path / "x.ckpt")]) == 2
    err = _err(capsys)
    assert "metadata.json' is not valid JSON (line 2, column 3" in err and "download the bundle again" in err


def test_import_bundle_with_a_malicious_pickle_gives_no_torch_advice(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, evil)
    bundle = _bundle(tmp_path / "b", model=evil.read_bytes())
    assert main(["import-bundle", "--bundle", str(bundle), "--out", str(tmp_path / "x.ckpt")]) == 2
    err = _err(capsys)
    assert "model.pt' cannot be read safely (it holds Python objects (posix.system) other than tensors and plain " \
           "values, which are never unpickled)" in err
    assert "weights_only" not in err and not marker.exists()


def test_import_bundle_with_random_bytes_is_one_line_naming_the_file(tmp_path, capsys):
    bundle = _bundle(tmp_path / "b", model=os.urandom(512))
    assert main(["import-bundle", "--bundle", str(bundle), "--out", str(tmp_path / "x.ckpt")]) == 2
    err = _err(capsys)
    assert f"bundle weights {str(bundle / 'models' / 'model.pt')!r} cannot be read safely" in err
    assert "(it is not a file of tensors written by torch.save; unpickling stopped at: " in err
    assert "weights_only" not in err and "Python objects" not in err  # random bytes are not blamed on code


# -- EDF ---------------------------------------------------------------------------------------------------------------
def _edf(tmp_path: Path) -> bytearray:
    import edfio  # noqa: F401  (mne's EDF export needs it; in requirements.lock)
    import mne

    raw = mne.io.RawArray(np.random.default_rng(0).standard_normal((2, 400)) * 5e-5,
                          mne.create_info(["Fz", "Cz"], 100.0, "eeg"), verbose="error")
    raw.export(str(tmp_path / "a.edf"), verbose="error")
    return bytearray((tmp_path / "a.edf").read_bytes())


def test_edf_without_data_records_says_so(tmp_path):
    data = _edf(tmp_path)
    ns = int(data[252:256].decode())
    head = data[: 256 * (ns + 1)]
    head[236:244] = b"0".ljust(8)
    (tmp_path / "z.edf").write_bytes(bytes(head))
    with pytest.raises(DataError, match=r"z\.edf: the file holds no data records"):
        read_record(tmp_path / "z.edf")


def test_edf_channel_without_physical_unit_is_named_with_the_fix(tmp_path):
    data = _edf(tmp_path)
    ns = int(data[252:256].decode())
    start = 256 + 96 * ns  # each signal's 8-byte physical dimension ("uV")
    data[start: start + 8] = b" " * 8  # Fz loses its unit; the others keep theirs
    (tmp_path / "u.edf").write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        read_record(tmp_path / "u.edf")
    msg = str(err.value)
    assert "u.edf: signal(s) ['Fz'] have no physical unit" in msg and "'uV' for EEG" in msg
    assert "float32" not in msg
