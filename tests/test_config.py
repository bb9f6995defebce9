import pytest

from deepspark.config import ACTIVATIONS, OPTIMIZERS, TrainConfig, make_config
from deepspark.errors import UserInputError


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, r"Invalid --epochs: must be a positive integer. Received: epochs=0"),
        ({"epochs": -3}, r"Invalid --epochs"),
        ({"lr": 0.0}, r"Invalid --lr: must be a positive number"),
        ({"lr": -1e-3}, r"Invalid --lr"),
        ({"batch_size": 0}, r"Invalid --batch-size"),
        ({"dropout": 1.0}, r"Invalid --dropout"),
        ({"val_fraction": 0.0}, r"Invalid --val-fraction: must be a fraction in \(0, 1\)"),
        ({"test_fraction": 1.2}, r"Invalid --test-fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"leave less than 5% of rows for training"),
        ({"hidden": "64,x"}, r"Invalid --hidden: give comma-separated integers"),
        ({"hidden": "64,0"}, r"Invalid --hidden: give positive layer sizes"),
        ({"task": "ranking"}, r"valid values are regression, binary, multiclass"),
        ({"loss": "hinge"}, r"Invalid --loss"),
    ],
)
def test_invalid_settings_name_the_option_and_value(settings, message):
    with pytest.raises(UserInputError, match=message):
        make_config({"data": "x.csv", **settings})


def test_unknown_activation_lists_every_valid_name():
    with pytest.raises(UserInputError, match="Invalid --activation") as caught:
        make_config({"data": "x.csv", "activation": "softsign"})
    assert all(name in str(caught.value) for name in ACTIVATIONS)
    assert "Received: activation='softsign'" in str(caught.value)


def test_unknown_optimizer_lists_every_valid_name():
    with pytest.raises(UserInputError, match="Invalid --optimizer") as caught:
        make_config({"data": "x.csv", "optimizer": "lbfgs"})
    assert all(name in str(caught.value) for name in OPTIMIZERS)


def test_hidden_string_and_defaults():
    config = make_config({"data": "x.csv", "hidden": "64,32", "exclude": "id, name"})
    assert config.hidden == (64, 32)
    assert config.exclude == ("id", "name")
    assert config.val_fraction == 0.15 and config.test_fraction == 0.15
    assert config.to_params()["hidden"] == "64,32"


def test_toml_file_with_cli_override(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[train]\ndata = "houses.csv"\ntarget = "price"\nhidden = [32, 16]\n'
        "epochs = 7\nbatch-size = 64\n"
    )
    config = make_config({"epochs": 3, "lr": None}, config_file=path)
    assert (config.data, config.target, config.hidden) == ("houses.csv", "price", (32, 16))
    assert config.epochs == 3  # explicit setting wins
    assert config.batch_size == 64


def test_toml_unknown_key_and_bad_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data = "a.csv"\nlearning_rate = 0.1\n')
    with pytest.raises(UserInputError, match="Unknown setting learning_rate; valid settings"):
        make_config({}, config_file=path)
    path.write_text("data = [unclosed\n")
    with pytest.raises(UserInputError, match="Config file is not valid TOML"):
        make_config({}, config_file=path)
    with pytest.raises(UserInputError, match="Config file not found"):
        make_config({}, config_file=tmp_path / "nope.toml")


def test_config_is_frozen():
    config = TrainConfig(data="x.csv")
    with pytest.raises(AttributeError):
        config.epochs = 5


def test_collectives_follow_the_keras_backend_and_the_launcher():
    from deepspark.config import resolve_collectives

    assert resolve_collectives("local", None, "jax") == "jax"
    assert resolve_collectives("spark", None, "jax") == "jax"
    assert resolve_collectives("local", None, "torch") == "torch"
    assert resolve_collectives("horovod", None, "torch") == "horovod"
    assert resolve_collectives("spark", "horovod", "torch") == "horovod"


@pytest.mark.parametrize(
    ("launcher", "collectives", "keras_backend", "pattern"),
    [
        ("horovod", None, "jax", r"Horovod trains Keras on the torch backend only; add --keras-b"),
        ("local", "torch", "jax", r"Keras runs on jax, which communicates through jax"),
        ("spark", "jax", "torch", r"Keras runs on torch, which communicates through torch or hor"),
        ("local", "horovod", "torch", r"horovod collectives need --launcher horovod"),
    ],
)
def test_impossible_launches_name_the_fix(launcher, collectives, keras_backend, pattern):
    from deepspark.config import resolve_collectives

    with pytest.raises(UserInputError, match=pattern):
        resolve_collectives(launcher, collectives, keras_backend)


def test_the_old_backend_setting_still_works_with_a_deprecation_warning():
    settings = {"data": "x.csv", "backend": "horovod", "launcher": "horovod", "workers": 2}
    with pytest.warns(FutureWarning, match=r"'backend' setting \(--backend\) is deprecated"):
        config = make_config({**settings, "keras_backend": "torch"})
    assert config.collectives == "horovod"
    stored = {**config.to_dict(), "backend": "horovod"}
    del stored["collectives"]
    assert TrainConfig.from_dict(stored).collectives == "horovod"
