"""Journals as untrusted input: ``numgrad-sync`` of edited, hostile or broken journals.

Whole-process tests (issue 18): a finished offline run is made once and copied, then
its journal (or its folder) is tampered with, and ``numgrad-sync`` runs as a user
would start it over the tampered journal and an untouched one. The store is read
back with ``MlflowClient``: the tampered journal is named and skipped whole (no run,
nothing of it stored, no file outside its folder uploaded), the good one uploads.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from numgrad.tracking.journal import JOURNAL_FILE, read_journal
from tests.conftest import NUMGRAD, all_runs, artifact_paths, history, numgrad_env
from tests.test_sync import SYNC, journaled_metrics

pytestmark = pytest.mark.slow
SECRET = "numgrad-test-secret-4f9c1e"  # a marker no real upload holds


# ----------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished offline run (artifacts, a model, metrics), made once and copied."""
    root = tmp_path_factory.mktemp("template")
    subprocess.run(
        [NUMGRAD, f"hydra.run.dir={root}/run", "tracking.offline=true", "optimizer.steps=5"],
        cwd=root, env=numgrad_env(), check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    return root / "run"


def copy_run(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest / JOURNAL_FILE


def records(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines()]


def write(journal: Path, lines: list) -> None:
    """Write records back: a dict as JSON (NaN and Infinity allowed: hand-edited), a str raw."""
    text = [json.dumps(x) if not isinstance(x, str) else x for x in lines]
    journal.write_text("\n".join(text) + "\n")


def edit(journal: Path, kind: str, **fields) -> None:
    """Change fields of the (first) record of ``kind``."""
    lines = records(journal)
    next(r for r in lines if r["kind"] == kind).update(fields)
    write(journal, lines)


def sync(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNC, *args], cwd=cwd, env=numgrad_env(), capture_output=True,
                          text=True, timeout=240, **kw)  # fmt: skip


def secret_dir(root: Path) -> Path:
    """A folder outside every run dir holding files nobody may upload."""
    secret = root / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text(f"{SECRET}\n")
    np.save(secret / "W.npy", np.full((2, 3), 7.0))
    return secret


def files_holding(root: Path, marker: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and marker in p.read_bytes()]


def assert_skipped_alone(out, target: str, hostile: Path, good: Path) -> None:
    """The hostile journal is named and skipped, the good one uploaded: one run, its own."""
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == (
        "numgrad-sync: 2 journals: 1 uploaded, 0 already complete, 1 skipped"
    )
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]  # one line, no traceback
    assert line.startswith("numgrad-sync: ") and str(hostile) in line
    _, runs = all_runs(target)
    assert [r.info.run_id for r in runs] == [read_journal(good).runs[target]]
    assert runs[0].info.status == "FINISHED"
    assert target not in hostile.read_text()  # no run or ack recorded: no run exists for it
    return line


# ------------------------------------------------- 1. no file outside the run dir


def _absolute(run: Path, secret: Path) -> None:
    edit(run / JOURNAL_FILE, "artifact", local=str(secret / "key.txt"))


def _etc_passwd(run: Path, secret: Path) -> None:
    edit(run / JOURNAL_FILE, "artifact", local="/etc/passwd")


def _dotdot_dir(run: Path, secret: Path) -> None:
    edit(run / JOURNAL_FILE, "artifact", local=os.path.relpath(secret, run))  # ../../secret


def _dotdot_inside_first(run: Path, secret: Path) -> None:
    edit(run / JOURNAL_FILE, "artifact", local="artifacts/../../../secret/key.txt")


def _symlink_as_local(run: Path, secret: Path) -> None:
    (run / "leak.txt").symlink_to(secret / "key.txt")
    edit(run / JOURNAL_FILE, "artifact", local="leak.txt")


def _symlink_file_in_folder(run: Path, secret: Path) -> None:
    (run / "artifacts" / "leak.txt").symlink_to(secret / "key.txt")  # local stays "artifacts"


def _symlink_dir_in_folder(run: Path, secret: Path) -> None:
    (run / "artifacts" / "weights" / "leak").symlink_to(secret, target_is_directory=True)


def _weights_absolute(run: Path, secret: Path) -> None:
    edit(run / JOURNAL_FILE, "model", weights=str(secret / "W.npy"))


def _weights_dotdot(run: Path, secret: Path) -> None:
    edit(run / JOURNAL_FILE, "model", weights=os.path.relpath(secret / "W.npy", run))


def _weights_symlink(run: Path, secret: Path) -> None:
    weights = run / "artifacts" / "weights" / "W_final.npy"
    weights.unlink()
    weights.symlink_to(secret / "W.npy")


OUTSIDE: dict[str, Callable[[Path, Path], None]] = {
    f.__name__.lstrip("_"): f
    for f in (_absolute, _etc_passwd, _dotdot_dir, _dotdot_inside_first, _symlink_as_local,
              _symlink_file_in_folder, _symlink_dir_in_folder, _weights_absolute,
              _weights_dotdot, _weights_symlink)
}  # fmt: skip


@pytest.mark.parametrize("how", OUTSIDE)
def test_no_file_outside_the_run_dir_is_ever_uploaded(tmp_path, store, finished_run, how):
    secret = secret_dir(tmp_path)
    runs = tmp_path / "runs"
    hostile = copy_run(finished_run, runs / "hostile")
    good = copy_run(finished_run, runs / "good")
    OUTSIDE[how](hostile.parent, secret)
    before = hostile.read_bytes()
    out = sync(tmp_path, "--uri", store, str(runs))
    line = assert_skipped_alone(out, store, hostile, good)
    assert "outside the journal's folder" in line, line
    assert re.search(rf"{hostile}: record \d+ \((artifact|model)\): ", line), line
    assert hostile.read_bytes() == before  # not even an ack or a run record
    # Neither the secret nor the host's passwd file reached the store's folder.
    assert files_holding(tmp_path / "outputs", SECRET.encode()) == []
    assert files_holding(tmp_path / "outputs", b"root:x:0:0") == []
    client, (run,) = all_runs(store)
    assert "leak.txt" not in {Path(p).name for p in artifact_paths(client, run.info.run_id)}
    assert f"in {store}" in out.stdout  # each line names the destination store


def test_a_journal_pointing_outside_is_refused_also_when_it_names_its_own_store(
    tmp_path, store, finished_run
):
    """No --uri: the destination is the journal's own (possibly someone else's) store."""
    secret = secret_dir(tmp_path)
    hostile = copy_run(finished_run, tmp_path / "hostile")
    lines = records(hostile)
    lines[0]["uri"] = store
    next(r for r in lines if r["kind"] == "artifact")["local"] = str(secret)
    write(hostile, lines)
    out = sync(tmp_path, str(hostile.parent))
    assert out.returncode == 1 and "outside the journal's folder" in out.stderr
    assert all_runs(store)[1] == []
    assert files_holding(tmp_path / "outputs", SECRET.encode()) == []


# ----------------------------------------------- 4. one corrupted field, skipped whole


def _run_without_uri(lines, run):
    lines.append({"seq": 9, "kind": "run", "run_id": "abc123"})
    return len(lines), "a run record without 'uri'"


def _format_string(lines, run):
    lines[0]["format"] = "2"
    return 1, "format='2' is not format 1"


def _format_newer(lines, run):
    lines[0]["format"] = 2
    return None, "was written by a newer numgrad (format 2)"


def _seq_acked_text(lines, run):
    lines.append({"seq": 9, "kind": "ack", "uri": "sqlite:///x.db", "seq_acked": "abc"})
    return len(lines), "seq_acked='abc' is not a whole number"


def _metric_nan(lines, run):
    i = next(i for i, r in enumerate(lines) if r["kind"] == "metrics")
    lines[i]["metrics"][3][1] = math.nan
    return i + 1, "is not a list of [key, finite value, timestamp, step] rows"


def _metric_infinity(lines, run):
    i = next(i for i, r in enumerate(lines) if r["kind"] == "metrics")
    lines[i]["metrics"][-1][1] = -math.inf
    return i + 1, "is not a list of [key, finite value, timestamp, step] rows"


def _model_metric_nan(lines, run):
    i = next(i for i, r in enumerate(lines) if r["kind"] == "model")
    lines[i]["metrics"][0][1] = math.nan
    return i + 1, "is not a list of [key, finite value, timestamp, step] rows"


def _status_refused(lines, run):
    lines[-1]["status"] = "DONE"
    return len(lines), "status='DONE' is not one of ['FAILED', 'FINISHED', 'KILLED']"


def _status_running(lines, run):
    lines[-1]["status"] = "RUNNING"
    return len(lines), "status='RUNNING' is not one of"


def _artifact_missing(lines, run):
    (run / "artifacts" / "history.csv").rename(run / "history.csv")
    next(r for r in lines if r["kind"] == "artifact")["local"] = "artifacts/history.csv"
    return None, "recorded in the journal is missing"


def _artifact_folder_gone(lines, run):
    shutil.rmtree(run / "artifacts")
    return None, "recorded in the journal is missing"


def _artifact_path_climbs(lines, run):  # MLflow refuses it: the run was left RUNNING
    i = next(i for i, r in enumerate(lines) if r["kind"] == "artifact")
    lines[i]["path"] = "../../escape"
    return i + 1, "path='../../escape' is not a relative artifact path"


def _artifact_path_absolute(lines, run):
    i = next(i for i, r in enumerate(lines) if r["kind"] == "artifact")
    lines[i]["path"] = "/abs/escape"
    return i + 1, "path='/abs/escape' is not a relative artifact path"


def _not_a_dict(lines, run):
    lines.insert(2, "[1, 2, 3]")
    return 3, "not a JSON object"


def _null_line(lines, run):
    lines.insert(4, "null")
    return 5, "not a JSON object"


def _seq_negative(lines, run):
    lines[1]["seq"] = -2
    return 2, "seq=-2 is not a whole number"


def _unknown_kind(lines, run):
    lines.insert(3, {"seq": 99, "kind": "exec", "command": "rm -rf ~"})
    return 4, "unknown kind 'exec'"


def _seq_repeated(lines, run):
    lines.insert(6, dict(lines[1], params={"seed": "12345"}))  # seq 2 again, after seq 6
    return 7, "seq=2 does not follow seq=6"


def _params_not_strings(lines, run):
    lines[1]["params"]["seed"] = 0
    return 2, "params="


CORRUPT = {
    f.__name__.lstrip("_"): f
    for f in (_run_without_uri, _format_string, _format_newer, _seq_acked_text, _metric_nan,
              _metric_infinity, _model_metric_nan, _status_refused, _status_running,
              _artifact_missing, _artifact_folder_gone, _artifact_path_climbs,
              _artifact_path_absolute, _not_a_dict, _null_line, _seq_negative,
              _seq_repeated, _unknown_kind, _params_not_strings)
}  # fmt: skip


@pytest.mark.parametrize("how", CORRUPT)
def test_a_journal_with_one_corrupted_field_is_named_and_skipped_while_the_rest_upload(
    tmp_path, store, finished_run, how
):
    runs = tmp_path / "runs"
    good = copy_run(finished_run, runs / "a-good")
    hostile = copy_run(finished_run, runs / "b-hostile")
    lines = records(hostile)
    line_no, why = CORRUPT[how](lines, hostile.parent)
    write(hostile, lines)
    out = sync(tmp_path, "--uri", store, str(runs))
    line = assert_skipped_alone(out, store, hostile, good)
    assert why in line, line
    if line_no is not None:
        assert f"{hostile}: line {line_no}" in line, line
    client, (run,) = all_runs(store)
    journaled = journaled_metrics(good)
    assert {k: history(client, run.info.run_id, k) for k in journaled} == journaled


def test_a_record_the_store_refuses_mid_upload_leaves_no_run_running(tmp_path, store, finished_run):
    """A params record that changes a logged param: MLflow refuses it after the run exists.
    The run is marked FAILED (tagged with the error), and the line says it stopped."""
    journal = copy_run(finished_run, tmp_path / "run")
    lines = records(journal)
    end = lines.pop()
    changed = dict(lines[1], params={"seed": "12345"}, seq=end["seq"])
    write(journal, [*lines, changed, dict(end, seq=end["seq"] + 1)])
    out = sync(tmp_path, "--uri", store, str(journal.parent))
    assert out.returncode == 1
    (line,) = out.stderr.splitlines()
    assert "stopped part-way" in line and "sync it again" in line
    _, (run,) = all_runs(store)
    assert run.info.status == "FAILED" and "numgrad.upload_error" in run.data.tags
    again = sync(tmp_path, "--uri", store, str(journal.parent))
    assert again.returncode == 1
    _, runs = all_runs(store)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run.info.run_id, "FAILED")]


# ------------------------------------ 7. a child synced alone brings its parent along


@pytest.mark.parametrize("first", ["child-0-dir", "child-1-journal", "both-children"])
def test_a_child_synced_first_brings_its_parent_and_the_sweep_keeps_one_parent(
    workdir, store, first
):
    workdir.run("tracking.offline=true", "optimizer.lr=0.1,1.0", "optimizer.steps=5",
                multirun=True)  # fmt: skip
    sweep = workdir.path / "multirun"
    children = sorted(p.parent for p in sweep.glob(f"*/{JOURNAL_FILE}"))
    assert len(children) == 2
    paths = {"child-0-dir": [children[0]], "child-1-journal": [children[1] / JOURNAL_FILE],
             "both-children": children}[first]  # fmt: skip
    for path in paths:  # each alone, one sync each
        out = sync(workdir.path, "--uri", store, str(path))
        assert out.returncode == 0, out.stderr
    client, runs = all_runs(store)
    (parent,) = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    early = [r for r in runs if r is not parent]
    assert len(early) == len(paths)
    assert {r.data.tags["mlflow.parentRunId"] for r in early} == {parent.info.run_id}
    out = sync(workdir.path, "--uri", store, str(sweep))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].endswith(
        f"3 journals: {2 - len(paths)} uploaded, {1 + len(paths)} already complete, 0 skipped"
    )
    client, runs = all_runs(store)
    parents = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # ONE parent
    kids = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parent.info.run_id}
    assert sorted(k.data.params["optimizer.lr"] for k in kids) == ["0.1", "1.0"]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


# ------------------------------------------------ 8. a huge-header .npy, before allocation

CAP = 3 * 2**30  # far above what numgrad and MLflow need, far below what the header claims


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def hostile_npy(path: Path, how: str) -> None:
    """A .npy whose header lies: a huge shape, a pickle, a 3-d array or a short file."""
    path.unlink(missing_ok=True)
    if how == "huge":
        header = {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\0" * 48)
    elif how == "huge-sparse":  # a file as large as its header says, but holding nothing
        header = {"descr": "<f8", "fortran_order": False, "shape": (17000, 17000)}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.truncate(f.tell() + 17000 * 17000 * 8)  # 2.3 GB: past weights.MAX_ELEMENTS (2 GiB)
    elif how == "pickle":
        np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif how == "3d":
        np.save(path, np.zeros((2, 3, 1)))


NPY = ["huge", "huge-sparse", "pickle", "3d"]


@pytest.mark.parametrize("how", NPY)
def test_a_hostile_weights_file_in_a_journal_is_refused_before_allocation(
    tmp_path, store, finished_run, how
):
    runs = tmp_path / "runs"
    good = copy_run(finished_run, runs / "a-good")
    hostile = copy_run(finished_run, runs / "b-hostile")
    hostile_npy(hostile.parent / "artifacts" / "weights" / "W_final.npy", how)
    out = sync(tmp_path, "--uri", store, str(runs), preexec_fn=_cap)
    line = assert_skipped_alone(out, store, hostile, good)
    assert "W_final.npy" in line and "MemoryError" not in line, line


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A run logged into a store: (its folder, the store's URI, its run id)."""
    root = tmp_path_factory.mktemp("stored")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    subprocess.run(
        [NUMGRAD, f"hydra.run.dir={root}/run", f"tracking.uri={uri}", "optimizer.steps=5"],
        cwd=root, env=numgrad_env(), check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    _, (run,) = all_runs(uri)
    return root, uri, run.info.run_id


def stored_weights(root: Path, run_id: str) -> Path:
    (path,) = root.glob(f"mlartifacts/{run_id}/artifacts/weights/W_final.npy")
    return path


@pytest.mark.parametrize("command", ["warm-start", "rerun"])
@pytest.mark.parametrize("how", ["huge", "huge-sparse", "pickle"])
def test_a_hostile_weights_file_in_the_store_is_refused_in_one_line(
    workdir, stored_run, command, how
):
    root, uri, run_id = stored_run
    weights = stored_weights(root, run_id)
    kept = weights.read_bytes()
    hostile_npy(weights, how)
    try:
        if command == "warm-start":
            argv = workdir.argv(f"tracking.uri={uri}", "net.init=run", f"net.from_run={run_id}")
        else:
            argv = [
                shutil.which("numgrad-rerun") or "numgrad-rerun",
                run_id,
                "--uri",
                uri,
                f"hydra.run.dir={workdir.path}/run",
            ]
        out = subprocess.run(argv, cwd=workdir.path, env=numgrad_env(), capture_output=True,
                             text=True, timeout=240, preexec_fn=_cap)  # fmt: skip
    finally:
        weights.write_bytes(kept)
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert "W_final" in line and "Memory" not in line, line
    if how == "huge-sparse":  # refused by its size in the store, before it is downloaded
        assert re.search(r"holds [\d,]+ bytes: more than a W of [\d,]+ elements$", line), line
    _, runs = all_runs(uri)
    assert len(runs) == 1  # no new run
    assert not (workdir.path / "run").exists()
