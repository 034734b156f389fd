"""Search space files: YAML as people write it, and a shipped space found by its name wherever one works."""

import pytest
import yaml

from mrfbench.spaces import load_space, load_yaml


def test_exponent_numbers_are_numbers_and_a_key_given_twice_is_an_error():
    assert load_yaml("beta: 1e-3\nlr: [2.5E-4, -1e+2, 5e4]\nname: x1e3") == {
        "beta": 1e-3, "lr": [2.5e-4, -100.0, 5e4], "name": "x1e3"}
    with pytest.raises(yaml.YAMLError, match="key 'beta' given twice"):
        load_yaml("beta: 1\nbeta: 2\n")


def test_a_folder_named_as_a_shipped_space_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copula_quick").mkdir()
    assert load_space("copula_quick").dataset == "copula"


def test_a_space_file_reads_exponent_betas(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("dataset: copula\nparams:\n  beta: {grid: [1e-3, 1e-1]}\nmodels:\n  gmrf:\n")
    assert load_space(str(path)).params["gmrf"]["beta"].values == (1e-3, 1e-1)
