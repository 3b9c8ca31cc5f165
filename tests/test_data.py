"""Data sources: inline arrays, blobs, the shipped Iris table, .npz and .csv files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from numgrad.config import ConfigError
from numgrad.data import SOURCES, load_data
from numgrad.data.blobs import make_blobs
from numgrad.data.iris import Scaling, scale_features
from numgrad.net import SimpleNet


def cfg(name="article", **fields):
    return OmegaConf.structured(SOURCES[name].Schema(**fields))


def test_blobs_follow_the_shape_and_the_generator():
    a = make_blobs(30, 4, 3, 0.5, np.random.default_rng(5))
    b = make_blobs(30, 4, 3, 0.5, np.random.default_rng(5))
    c = make_blobs(30, 4, 3, 0.5, np.random.default_rng(6))
    assert a[0].shape == (30, 4) and np.bincount(a[1]).tolist() == [10, 10, 10]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_iris_is_the_fisher_table():
    x, t = load_data(cfg(name="iris", scaling=Scaling.none), [4, 3], None)
    assert x.shape == (150, 4) and x.dtype == np.float64 and t.dtype == np.int64
    assert x[0].tolist() == [5.1, 3.5, 1.4, 0.2] and t[0] == 0
    np.testing.assert_allclose(x.mean(axis=0), [5.843333, 3.057333, 3.758, 1.199333], atol=1e-6)


def test_scaling_modes():
    x = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    np.testing.assert_allclose(np.sqrt((scale_features(x, Scaling.rms) ** 2).mean(0)), [1, 1, 0])
    z = scale_features(x, Scaling.zscore)
    assert z.tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]  # constant columns only centred
    assert scale_features(x, Scaling.none) is x


def test_npz_and_csv_files(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    t = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", x=x, t=t)
    got = load_data(cfg(name="file", path=str(tmp_path / "d.npz")), [3, 2], None)
    assert np.array_equal(got[0], x) and np.array_equal(got[1], t)
    lines = ["0.5,1,0", "2,3.5,1"]
    (tmp_path / "plain.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "header.csv").write_text("a,b,label\n" + "\n".join(lines) + "\n")
    for name in ("plain.csv", "header.csv"):
        got = load_data(cfg(name="file", path=str(tmp_path / name)), [2, 2], None)
        assert got[0].tolist() == [[0.5, 1.0], [2.0, 3.5]] and got[1].tolist() == [0, 1]


def read_file(path):
    return load_data(cfg(name="file", path=str(path)), [2, 2], None)


def file_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        read_file(path)
    return str(info.value)


ROWS = b"0.5,1,0\n2,3.5,1\n"


@pytest.mark.parametrize("header", [b"", b"a,b,label\n"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_csv_with_a_byte_order_mark_reads_the_same_rows(tmp_path, header, newline):
    # Excel's "CSV UTF-8" starts with a BOM: it used to make the first data row a "header"
    # and drop it (loss 1.07 instead of 0.85 on these rows).
    text = (header + ROWS).replace(b"\n", newline)
    (tmp_path / "plain.csv").write_bytes(text)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text)
    for name in ("plain.csv", "bom.csv"):
        x, t = read_file(tmp_path / name)
        assert x.tolist() == [[0.5, 1.0], [2.0, 3.5]] and t.tolist() == [0, 1], name
        assert x.dtype == np.float64 and x.flags.c_contiguous and t.dtype == np.int64


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"caf\xe9,b,label\n1,2,0\n", "line 1, byte 4 is 0xe9"),  # Latin-1, the probe's file
        (b"1,2,0\n3,4,1\n\n1,\xff,0\n", "line 4, byte 3 is 0xff"),  # after the first rows
        (b"\xff\xfe1\x00,\x002\x00", "line 1, byte 1 is 0xff"),  # UTF-16 ("Unicode text")
    ],
)
def test_csv_that_is_not_utf8_is_a_config_error_naming_line_and_byte(tmp_path, content, reason):
    (tmp_path / "l.csv").write_bytes(content)
    assert file_error(tmp_path / "l.csv") == (
        f"invalid data.path='{tmp_path / 'l.csv'}': not UTF-8 text: {reason}, which UTF-8 "
        "cannot decode; save the file as UTF-8 (Excel: CSV UTF-8)"
    )


def test_a_bad_byte_past_the_first_megabyte_is_found_on_its_line(tmp_path):
    # Lines are decoded a block at a time: the count carries over from block to block.
    (tmp_path / "l.csv").write_bytes(b"1,2,0\n" * 200_000 + b"\n1,\xe92,0\n")
    assert "not UTF-8 text: line 200002, byte 3 is 0xe9," in file_error(tmp_path / "l.csv")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("d.txt", b"1,2,0", "must end in .npz or .csv"),
        ("d.csv", b"1,2,0.5", "the last column must hold integer labels"),
        (
            "d.csv",
            b"1,2,0\n2,a,1",
            "not a numeric CSV (could not convert string 'a' to float64 at row 1, column 2.)",
        ),
        ("d.csv", b"1\n2", "needs rows of features followed by a label column"),
        # No numpy "input contained no data" warning before these (warnings are errors here).
        ("d.csv", b"", "is empty: needs rows of features followed by a label column"),
        ("d.csv", b" \n\n", "is empty: needs rows of features followed by a label column"),
        ("d.csv", b"a,b,label\n", "has a header line but no data rows"),
        ("d.csv", b"\xef\xbb\xbfa,b,label\r\n\r\n", "has a header line but no data rows"),
        # Not "pickled (object) data": np.load's guess for anything that is not a zip.
        ("d.npz", b"not a zip", "not a .npz archive (np.savez writes one, with arrays x and t)"),
        ("d.npz", b"\x93NUMPY", "not a .npz archive (np.savez writes one, with arrays x and t)"),
    ],
)
def test_bad_files_name_the_path(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    assert file_error(tmp_path / name) == f"invalid data.path='{tmp_path / name}': {reason}"


def test_a_npy_file_named_npz_is_not_an_archive(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(3))
    (tmp_path / "x.npy").rename(tmp_path / "x.npz")  # np.load returned an array: TypeError
    assert file_error(tmp_path / "x.npz").endswith(
        ": not a .npz archive (np.savez writes one, with arrays x and t)"
    )


def test_a_directory_is_not_a_missing_file(tmp_path):
    (tmp_path / "d.csv").mkdir()
    assert (
        file_error(tmp_path)
        == f"invalid data.path='{tmp_path}': is a directory, not a .npz or .csv file"
    )
    assert file_error(tmp_path / "d.csv").endswith(": is a directory, not a .npz or .csv file")
    assert file_error(tmp_path / "nope.csv").endswith(": no such file")


def test_a_device_or_a_pipe_is_not_a_missing_file(tmp_path):
    assert file_error(Path("/dev/zero")) == (
        "invalid data.path='/dev/zero': is not a regular file (.npz or .csv)"
    )
    os.mkfifo(tmp_path / "pipe.csv")
    assert file_error(tmp_path / "pipe.csv").endswith(": is not a regular file (.npz or .csv)")


def test_npz_inputs_are_float64_like_every_source(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(4, dtype=np.int32).reshape(2, 2), t=[0, 1])
    x, t = read_file(tmp_path / "d.npz")
    assert x.dtype == np.float64 and x.tolist() == [[0.0, 1.0], [2.0, 3.0]] and t.tolist() == [0, 1]


@pytest.mark.parametrize("label", ["1e308", "-1e308", "1e19", "inf", "-inf"])
def test_huge_labels_keep_their_value(tmp_path, label):
    # The int64 cast overflowed (RuntimeWarning, label -9.22337e+18): they stay float64
    # so that the net's checks name the value the user wrote.
    (tmp_path / "d.csv").write_text(f"1,2,{label}\n")
    x, t = read_file(tmp_path / "d.csv")
    assert t.dtype == np.float64 and t.tolist() == [float(label)]
    _, inline = load_data(cfg(x=[[1.0, 2.0]], t=[float(label)]), [2, 2], None)
    assert inline.dtype == np.float64 and inline.tolist() == [float(label)]
    net = SimpleNet(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"^(label|labels must be integers)") as info:
        net.prepare(x, t)
    assert "9.22337e+18" not in str(info.value)
    if label == "1e308":
        assert str(info.value).startswith("label 1e+308 at t[0] is out of range")


def test_labels_that_int64_holds_are_int64():
    _, t = load_data(cfg(x=[[1.0, 2.0]] * 3, t=[0, 1, 2.0**53]), [2, 2], None)
    assert t.dtype == np.int64 and t.tolist() == [0, 1, 2**53]
    _, t = load_data(cfg(x=[1.0, 2.0], t=[0, 1, 0]), [2, 3], None)
    assert t.dtype == np.int64  # one-hot rows too


def test_inline_data_must_be_numeric():
    with pytest.raises(ConfigError, match=r"invalid data.x=\[0.6, 'a'\]: not a numeric array"):
        load_data(cfg(x=[0.6, "a"], t=[0, 1]), [2, 3], None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("files", "overrides", "message"),
    [
        ({"l.csv": b"caf\xe9,b,label\n1,2,0\n"}, ["data=file", "data.path=l.csv"],
         "invalid data.path='l.csv': not UTF-8 text: line 1, byte 4 is 0xe9, which UTF-8 "
         "cannot decode; save the file as UTF-8 (Excel: CSV UTF-8)"),
        ({"d/x": b""}, ["data=file", "data.path=d"],
         "invalid data.path='d': is a directory, not a .npz or .csv file"),
        ({"t.npz": b"hello\n"}, ["data=file", "data.path=t.npz"],
         "invalid data.path='t.npz': not a .npz archive (np.savez writes one, with arrays x and t)"),
        ({"h.csv": b"a,b,label\n"}, ["data=file", "data.path=h.csv"],
         "invalid data.path='h.csv': has a header line but no data rows"),
        ({"e.csv": b""}, ["data=file", "data.path=e.csv"],
         "invalid data.path='e.csv': is empty: needs rows of features followed by a label column"),
        ({}, ["data.x=[[0.6,0.9]]", "data.t=[1e308]"],
         "invalid data.t=[1e+308]: label 1e+308 at t[0] is out of range: W has 3 classes, so "
         "labels must be in 0..2"),
        ({"big.csv": b"1,2,1e308\n"}, ["data=file", "data.path=big.csv"],
         "invalid data.path='big.csv': label 1e+308 at t[0] is out of range: W has 3 classes, "
         "so labels must be in 0..2"),
    ],
)  # fmt: skip
def test_the_command_says_what_is_wrong_in_one_line(workdir, files, overrides, message):
    for name, content in files.items():
        (workdir.path / name).parent.mkdir(exist_ok=True)
        (workdir.path / name).write_bytes(content)
    proc = workdir.run(*overrides, "tracking.enabled=false", check=False)
    # Exactly one line: no numpy warning, no traceback before it.
    assert (proc.returncode, proc.stderr) == (2, f"numgrad: error: {message}\n")
    assert not (workdir.path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("header", [b"", b"a,b,label\n"])
def test_the_command_trains_on_a_csv_with_a_byte_order_mark_as_without(workdir, header):
    rows = header + b"0.1,0.9,0\n0.8,0.3,1\n"
    (workdir.path / "plain.csv").write_bytes(rows)
    (workdir.path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + rows.replace(b"\n", b"\r\n"))
    final = {}
    for name in ("plain.csv", "excel.csv"):
        proc = workdir.run("data=file", f"data.path={name}", "net.shape=[2,2]",
                           "optimizer.steps=5", "tracking.enabled=false")  # fmt: skip
        final[name] = re.search(r"final loss (\S+),", proc.stdout).group(1)
    assert final["excel.csv"] == final["plain.csv"]


# ------------------------------------------- as before the sources became modules
# Each message below is what the code of commit 200e988 (one data.py, a DataSource enum)
# printed for the same overrides; the data/ package must read the same, source by source.

BEFORE_ERRORS = [
    (["data=file"], "invalid data.path=None: data=file needs data.path=<file.npz|.csv>"),
    (["data=file", "data.path={d}/missing.npz"], "invalid data.path='{d}/missing.npz': no such file"),
    (["data=file", "data.path={d}/dir.csv"],
     "invalid data.path='{d}/dir.csv': is a directory, not a .npz or .csv file"),
    (["data=file", "data.path={d}/only_x.npz"],
     "invalid data.path='{d}/only_x.npz': needs arrays x and t (found: x)"),
    (["data=file", "data.path={d}/text.npz"], "invalid data.path='{d}/text.npz': not a .npz "
     "archive (np.savez writes one, with arrays x and t)"),
    (["data=file", "data.path={d}/objects.npz"], "invalid data.path='{d}/objects.npz': not a "
     "readable .npz (Object arrays cannot be loaded when allow_pickle=False)"),
    (["data=file", "data.path={d}/ok.npz"], "invalid data.path='{d}/ok.npz': label 9 at t[3] is "
     "out of range: W has 3 classes, so labels must be in 0..2"),
    (["data=file", "data.path={d}/d.csv", "net.shape=[3,2]"], "invalid net.shape=[3, 2]: does "
     "not fit data=file: x has 2 features (columns) but W has 3 rows"),
    (["data.x=null"], "invalid data.x=None: give both x and t"),
    (["data.t=null"], "invalid data.t=None: give both x and t"),
    (["data.x=null", "data.t=null"], "invalid data.x=None: data=article needs data.x and data.t"),
    (["data.x=[0.6,'a']"],
     "invalid data.x=[0.6, 'a']: not a numeric array (could not convert string to float: 'a')"),
    (["data.t=[0,0,7]"], "invalid data.t=[0, 0, 7]: t row 0 is not one-hot (exactly one 1, "
     "zeros elsewhere): [0 0 7]"),
    (["data.x=[[0.6,0.9]]", "data.t=[3]"], "invalid data.t=[3]: label 3 at t[0] is out of "
     "range: W has 3 classes, so labels must be in 0..2"),
    (["data.x=[0.6,nan]"], "invalid data.x=[0.6, nan]: x has 1 non-finite value(s) (nan or "
     "inf), first at sample 0, feature 1: nan"),
    (["net.shape=[3,3]"], "invalid net.shape=[3, 3]: does not fit data=article: x has 2 "
     "features (columns) but W has 3 rows"),
    (["data=blobs", "data.n_samples=0"], "invalid data.n_samples=0: must be >= 1"),
    (["data=blobs", "data.spread=nan"], "invalid data.spread=nan: must be a finite number"),
    (["data=blobs", "data.spread=-1"], "invalid data.spread=-1.0: must be >= 0"),
    (["data=iris", "data.test_fraction=0", "net.shape=[3,3]"], "invalid net.shape=[3, 3]: does "
     "not fit data=iris: x has 4 features (columns) but W has 3 rows"),
    (["data=iris", "data.test_fraction=0", "net.shape=[4,2]"], "invalid data='iris': label 2 at "
     "t[100] is out of range: W has 2 classes, so labels must be in 0..1"),
]  # fmt: skip
BEFORE_REFUSALS = [  # (bytes available, overrides, message)
    (0, ["data=blobs", "data.n_samples=100000000"], "invalid data.n_samples=100000000: the run "
     "would need about 38.4 GB of memory, 0 B are available"),
    (0, ["data=blobs", "data.n_samples=3000"], "invalid data.n_samples=3000: the run would need "
     "about 3.06 MB of memory, 0 B are available"),
    (0, ["data=blobs", "net.shape=[100000,100000]"], "invalid net.shape=[100000, 100000]: the run "
     "would need about 561 GB of memory, 0 B are available"),
    (0, ["data.x=" + str([[0.5, 0.5]] * 3000), "data.t=" + str([0] * 3000)], "invalid data.x=[[0.5, "
     "0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5...: the run would "
     "need about 3.06 MB of memory, 0 B are available"),
    (0, ["data=iris", "data.test_fraction=0"], "invalid net.shape=[4, 3]: the run would need "
     "about 1.2 MB of memory, 0 B are available"),
    (0, ["data=file", "data.path={d}/big.csv"], "invalid net.shape=[2, 3]: the run would need "
     "about 1.05 MB of memory, 0 B are available"),  # before the file is read
    (1_500_000, ["data=file", "data.path={d}/big.csv"], "invalid data.path='{d}/big.csv': the run "
     "would need about 2.99 MB of memory, 1.5 MB are available"),  # once it is read
]  # fmt: skip
BEFORE_NAMES = [
    ([], "article"), (["data.x=[[0.6,0.9],[0.1,0.4]]", "data.t=[2,0]"], "article(custom)"),
    (["data=blobs", "seed=7"], "blobs(seed=7,n=60)"),
    (["data=blobs", "data.n_samples=9", "data.spread=0.5", "seed=1"], "blobs(seed=1,n=9,spread=0.5)"),
    (["data=iris"], "iris"), (["data=iris", "data.scaling=zscore"], "iris(zscore)"),
    (["data=file", "data.path=/d/my data.npz"], "my data.npz"),
]  # fmt: skip


@pytest.fixture
def files(tmp_path):
    np.savez(tmp_path / "only_x.npz", x=np.ones((2, 2)))
    np.savez(tmp_path / "ok.npz", x=np.ones((4, 2)), t=np.array([0, 1, 0, 9]))
    (tmp_path / "d.csv").write_text("1,2,0\n3,4,1\n")
    (tmp_path / "big.csv").write_text("1,2,0\n" * 3000)
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "objects.npz", x=np.array([[1, "a"]], dtype=object), t=np.array([0]))
    return tmp_path


def refusal(overrides, d):
    from numgrad.runner import execute
    from tests.test_config import compose_cfg

    cfg = compose_cfg(*[o.format(d=d) for o in overrides], "tracking.enabled=false")
    with pytest.raises(ConfigError) as info:
        execute(cfg)
    return str(info.value)


@pytest.mark.parametrize(("overrides", "message"), BEFORE_ERRORS)
def test_every_data_error_reads_as_before_the_sources_were_modules(files, overrides, message):
    assert refusal(overrides, files) == message.format(d=files)


@pytest.mark.parametrize(("available", "overrides", "message"), BEFORE_REFUSALS)
def test_every_memory_refusal_reads_as_before(files, monkeypatch, available, overrides, message):
    from numgrad import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    assert refusal(overrides, files) == message.format(d=files)


@pytest.mark.parametrize(("overrides", "name"), BEFORE_NAMES)
def test_every_dataset_name_reads_as_before(overrides, name):
    from numgrad.tracking.dataset import dataset_name
    from tests.test_config import compose_cfg

    cfg = compose_cfg(*overrides)
    assert dataset_name(cfg.data, cfg.seed) == name
