from pathlib import Path

import pytest

from ser_udfs.spark.extract_driver import ExtractJobConfig
from ser_udfs.features.config import FeatureConfig
from ser_udfs.settings import ConfigError, apply_overrides, from_dict, parse_override_value, resolve_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_override_values_are_parsed_as_toml() -> None:
    assert parse_override_value("64") == 64
    assert parse_override_value("0.5") == 0.5
    assert parse_override_value("true") is True
    assert parse_override_value('["mfcc", "zcr"]') == ["mfcc", "zcr"]
    assert parse_override_value("centre") == "centre"


def test_overrides_change_only_the_named_key() -> None:
    base = {"mel": {"n_mels": 128, "hop_length": 512}}
    result = apply_overrides(base, ["mel.n_mels=64"])
    assert result == {"mel": {"n_mels": 64, "hop_length": 512}}
    assert base["mel"]["n_mels"] == 128


@pytest.mark.parametrize(
    "override, fragment",
    [("mel.n_mel=64", "unknown key"), ("mell.n_mels=64", "no section"), ("mel.n_mels", "key=value")],
)
def test_bad_overrides_are_refused_with_a_clear_message(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides({"mel": {"n_mels": 128}}, [override])


def test_types_are_checked() -> None:
    with pytest.raises(ConfigError, match="must be an integer"):
        from_dict(FeatureConfig, {"mel": {"n_mels": "many"}})
    with pytest.raises(ConfigError, match="must be one of"):
        from_dict(FeatureConfig, {"audio": {"align": "middle"}})
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(FeatureConfig, {"mel": {"n_mels": 64, "colour": "red"}})


def test_default_toml_matches_dataclass_defaults() -> None:
    config = resolve_config(ExtractJobConfig, CONF / "features.toml")
    assert config.features == FeatureConfig()


def test_feature_config_round_trips_and_versions() -> None:
    config = resolve_config(ExtractJobConfig, CONF / "features.toml", ["mel.n_mels=64"]).features
    again = FeatureConfig.from_dict(config.to_dict())
    assert again == config
    assert again.version() == config.version()
    assert config.version() != FeatureConfig().version()
    assert config.describe_difference(FeatureConfig()) == ["mel.n_mels: 64 here, 128 there"]


@pytest.mark.parametrize(("module", "argv", "missing"), [
    ("jobs.score_calls", ["--input", "calls/", "--mode", "m", "--output", "out"], "--model"),  # --mode is not --model
    ("jobs.extract_features", ["--input", "corpus/", "--out", "t"], "--output"),
    ("jobs.train", ["--feat", "t", "--output", "m"], "--features"),
    ("jobs.evaluate", ["--feat", "t", "--model", "m", "--output", "r"], "--features"),
])
def test_jobs_refuse_abbreviated_options(module: str, argv: list[str], missing: str, capsys) -> None:
    import importlib

    parse_args = importlib.import_module(module).parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert f"required: {missing}" in capsys.readouterr().err  # the abbreviation was not taken for it


@pytest.mark.parametrize(("module", "argv", "config_file"), [
    ("jobs.extract_features", ["--input", "corpus/", "--output", "t"], "features.toml"),
    ("jobs.score_calls", ["--input", "calls/", "--model", "m", "--output", "o"], "score.toml"),
    ("jobs.train", ["--features", "t", "--model", "cnn", "--output", "m"], "train_<model>.toml"),
    ("jobs.extract_embeddings", ["--input", "t", "--pretrained", "p", "--output", "o"], "embeddings.toml"),
])
def test_each_jobs_set_example_is_one_it_accepts_and_print_config_round_trips(
    module: str, argv: list[str], config_file: str, tmp_path, capsys
) -> None:
    import importlib
    import tomllib

    from jobs._cli import CONF_DIR, run, set_example

    job = importlib.import_module(module)
    example, sections = set_example(config_file)
    with pytest.raises(SystemExit):
        job.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"--set {example}" in help_text and f"sections: {', '.join(sections)}" in help_text
    assert example.split(".")[0] in sections
    assert run(job.main, [*argv, "--set", example, "--print-config"]) == 0
    printed = capsys.readouterr().out
    key, value = example.split("=")
    section, name = key.split(".", 1)
    assert tomllib.loads(printed)[section][name] == tomllib.loads(f"v = {value}")["v"]
    if module == "jobs.extract_features":  # what it prints is a config file the job reads back, whole
        (tmp_path / "resolved.toml").write_text(printed)
        assert resolve_config(ExtractJobConfig, tmp_path / "resolved.toml") == \
            resolve_config(ExtractJobConfig, CONF_DIR / "features.toml", [example])
