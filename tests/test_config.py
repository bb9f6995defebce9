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
