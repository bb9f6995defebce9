"""The search space: the documented default, validation against ``TrainConfig``, spec strings."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("optuna", reason="the tune extra is not installed")

import optuna  # noqa: E402

from deepspark.config import TrainConfig  # noqa: E402
from deepspark.errors import UserInputError  # noqa: E402
from deepspark.tuning import space as spaces  # noqa: E402
from deepspark.tuning import spec as spec_module  # noqa: E402
from deepspark.tuning.search import check_space_yields  # noqa: E402
from deepspark.tuning.space import Choice, FloatRange, IntRange  # noqa: E402

BASE = TrainConfig(data="table.csv", target="y")


def test_default_space_is_the_documented_table():
    space = spaces.default_space(BASE)
    assert space["layers"] == IntRange(1, 4)
    assert space["width"] == IntRange(16, 512, log=True)
    assert space["dropout"] == FloatRange(0.0, 0.5)
    assert space["lr"] == FloatRange(1e-4, 1e-2, log=True)
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    for optional in spaces.OPTIONAL_ENTRIES:
        assert (optional in space) == (optional in fields)
    for name in space:
        assert name in fields or name in spaces.DERIVED_KEYS
        assert name in spaces.__doc__


@dataclasses.dataclass(frozen=True)
class NetworkConfig(TrainConfig):
    """TrainConfig once the tabular network gains settings (another developer's fields)."""

    weight_decay: float = 0.0
    embeddings: bool = False
    k: int = 32
    numeric_embedding: str = "none"

    def __post_init__(self):
        super().__post_init__()
        if self.k > 8:
            raise UserInputError(f"Invalid --k: at most 8. Received: k={self.k}")
        if self.numeric_embedding not in ("none", "periodic"):
            raise UserInputError(f"Invalid --numeric-embedding. Received: {self.numeric_embedding}")


def test_optional_entries_follow_the_fields_and_their_valid_values(monkeypatch):
    monkeypatch.setattr(spec_module, "TrainConfig", NetworkConfig)
    listed = ("none", "periodic", "piecewise")
    monkeypatch.setattr(spaces.config_module, "NUMERIC_EMBEDDINGS", listed, raising=False)
    base = NetworkConfig(data="table.csv", target="y", k=1)
    space = spaces.default_space(base)
    assert space["weight_decay"] == FloatRange(1e-6, 1e-2, log=True)
    assert space["embeddings"] == Choice((False, True))
    assert space["k"] == Choice((1, 8))  # 32 is refused by this TrainConfig
    assert space["numeric_embedding"] == Choice(("none", "periodic"))  # from the listed choices
    settings = spaces.suggest(optuna.trial.FixedTrial(_fixed(space)), space)
    assert spaces.trial_config(base, settings).k in (1, 8)


def _fixed(space):
    values = {"layers": 2, "width": 32, "dropout": 0.1, "lr": 1e-3}
    values.update({"weight_decay": 1e-4, "embeddings": True, "k": 8})
    values.update({"numeric_embedding": "periodic", "ensemble_size": 1})
    return {name: values[name] for name in space}


def test_suggest_makes_hidden_from_layers_and_width():
    space = dict(spaces.DEFAULT_ENTRIES)
    trial = optuna.trial.FixedTrial({"layers": 3, "width": 64, "dropout": 0.2, "lr": 0.003})
    settings = spaces.suggest(trial, space)
    assert settings == {"hidden": (64, 64, 64), "dropout": 0.2, "lr": 0.003}
    assert spaces.trial_config(BASE, settings).hidden == (64, 64, 64)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("layers", "1:3", IntRange(1, 3)),
        ("width", "16:512:log", IntRange(16, 512, log=True)),
        ("lr", "1e-4:1e-1:log", FloatRange(1e-4, 1e-1, log=True)),
        ("batch_size", "32:256", IntRange(32, 256)),
        ("activation", "relu,gelu", Choice(("relu", "gelu"))),
        ("batch_norm", "true,false", Choice((True, False))),
        ("dropout", "0.25", Choice((0.25,))),
    ],
)
def test_parse_spec(name, text, expected):
    assert spaces.parse_spec(name, text) == expected


def test_float_fields_read_integer_bounds_as_floats():
    assert spaces.parse_spec("dropout", "0:1") == FloatRange(0.0, 1.0)
    assert spaces.parse_spec("lr", "1:2") == FloatRange(1.0, 2.0)


def test_tuple_fields_take_one_option_per_bar():
    choice = spaces.parse_spec("hidden", "64,32|128")
    assert choice == Choice(((64, 32), (128,)))
    assert spaces.parse_spec("hidden", "64,32") == Choice(((64, 32),))
    settings = spaces.suggest(optuna.trial.FixedTrial({"hidden": "64,32"}), {"hidden": choice})
    assert settings == {"hidden": (64, 32)}


@pytest.mark.parametrize(
    ("name", "distribution"),
    [
        ("width", IntRange(1, 4)),
        ("lr", FloatRange(1e-5, 0.1, log=True)),
        ("activation", Choice(("relu", "gelu"))),
        ("batch_size", Choice((32, 128))),
        ("hidden", Choice(((64, 32), (8,)))),
    ],
)
def test_specs_read_back(name, distribution):
    assert spaces.parse_spec(name, distribution.spec()) == distribution


def test_none_is_a_string_where_the_field_takes_strings():
    assert spaces.parse_spec("loss", "mse,none") == Choice(("mse", None))
    if "numeric_embedding" in spaces.config_fields():
        assert spaces.parse_spec("numeric_embedding", "periodic,none") == Choice(
            ("periodic", "none")
        )


def test_a_space_is_stored_exactly():
    space = {
        "layers": IntRange(1, 3),
        "lr": FloatRange(1e-4, 0.1, log=True),
        "hidden": Choice(((64, 32), (8,))),
        "activation": Choice(("relu", "none", None, True, 1, 1.0)),
    }
    document = json.loads(json.dumps(spaces.space_document(space)))
    assert spaces.space_from_document(document) == space
    restored = spaces.space_from_document(document)["activation"].options
    assert [type(option) for option in restored] == [str, str, type(None), bool, int, float]


def test_resolve_space_adds_replaces_removes_and_fixes():
    resolved = spaces.resolve_space(
        {"activation": "relu,gelu", "lr": "1e-3:1e-1:log", "dropout": None}, BASE, {"batch_size"}
    )
    assert resolved["activation"] == Choice(("relu", "gelu"))
    assert resolved["lr"] == FloatRange(1e-3, 1e-1, log=True)
    assert "dropout" not in resolved
    fixed_hidden = spaces.resolve_space(None, BASE, {"hidden"})
    assert "layers" not in fixed_hidden and "width" not in fixed_hidden
    searched_hidden = spaces.resolve_space({"hidden": "64|32"}, BASE)
    assert "layers" not in searched_hidden and searched_hidden["hidden"] == Choice(((64,), (32,)))


@pytest.mark.parametrize(
    ("space", "pattern"),
    [
        ({"learning_rate": "1:2"}, r"Unknown search space key 'learning_rate'; valid keys are"),
        ({"seed": "1:5"}, r"'seed' cannot be searched: the data is split once"),
        ({"val_fraction": "0.1:0.2"}, r"'val_fraction' cannot be searched"),
        ({"lr": "0:1e-2:log"}, r"Invalid search space entry 'lr': expected a positive LOW"),
        ({"dropout": "0.5:0.1"}, r"expected LOW <= HIGH"),
        ({"lr": "a:b"}, r"expected numbers in LOW:HIGH"),
        ({"lr": "1:2:3"}, r"expected LOW:HIGH or LOW:HIGH:log"),
        ({"layers": IntRange(1, 2), "width": None}, r"'layers' without 'width'"),
        ({"hidden": "64", "layers": "1:2"}, r"both 'hidden' and layers/width"),
        ({"activation": Choice(())}, r"expected at least one option"),
        ({"hidden": "64,a"}, r"comma-separated integers per option"),
    ],
)
def test_bad_space_is_one_user_error(space, pattern):
    with pytest.raises(UserInputError, match=pattern):
        spaces.resolve_space(space, BASE)


def test_a_space_without_any_valid_configuration_is_refused():
    space = spaces.resolve_space({"dropout": "1:2"}, BASE)
    with pytest.raises(UserInputError, match=r"The search space yields no valid trial .*dropout"):
        check_space_yields(space, BASE)
    check_space_yields(spaces.resolve_space({"dropout": "0.5:1.5"}, BASE), BASE)  # some valid
