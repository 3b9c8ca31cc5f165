"""Data sources: inline arrays, blobs, the shipped Iris table, .npz and .csv files."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from numgrad.config import ConfigError, DataConfig, DataSource, Scaling
from numgrad.data import load_data, make_blobs, scale_features


def cfg(**fields):
    return OmegaConf.structured(DataConfig(**fields))


def test_blobs_follow_the_shape_and_the_generator():
    a = make_blobs(30, 4, 3, 0.5, np.random.default_rng(5))
    b = make_blobs(30, 4, 3, 0.5, np.random.default_rng(5))
    c = make_blobs(30, 4, 3, 0.5, np.random.default_rng(6))
    assert a[0].shape == (30, 4) and np.bincount(a[1]).tolist() == [10, 10, 10]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_iris_is_the_fisher_table():
    x, t = load_data(cfg(name=DataSource.iris, scaling=Scaling.none), [4, 3], None)
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
    got = load_data(cfg(name=DataSource.file, path=str(tmp_path / "d.npz")), [3, 2], None)
    assert np.array_equal(got[0], x) and np.array_equal(got[1], t)
    lines = ["0.5,1,0", "2,3.5,1"]
    (tmp_path / "plain.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "header.csv").write_text("a,b,label\n" + "\n".join(lines) + "\n")
    for name in ("plain.csv", "header.csv"):
        got = load_data(cfg(name=DataSource.file, path=str(tmp_path / name)), [2, 2], None)
        assert got[0].tolist() == [[0.5, 1.0], [2.0, 3.5]] and got[1].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.txt", "1,2,0", r"invalid data.path='.*d.txt': must end in .npz or .csv"),
        ("d.csv", "1,2,0.5", r"the last column must hold integer labels"),
        ("d.csv", "1,2,0\n2,a,1", r"not a numeric CSV"),
        ("d.csv", "1\n2", r"needs rows of features followed by a label column"),
        ("d.npz", "not a zip", r"not a readable .npz"),
    ],
)
def test_bad_files_name_the_path(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_data(cfg(name=DataSource.file, path=str(tmp_path / name)), [2, 3], None)


def test_inline_data_must_be_numeric():
    with pytest.raises(ConfigError, match=r"invalid data.x=\[0.6, 'a'\]: not a numeric array"):
        load_data(cfg(x=[0.6, "a"], t=[0, 1]), [2, 3], None)
