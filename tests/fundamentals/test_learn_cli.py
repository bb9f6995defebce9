"""``deepspark learn TOPIC --output DIR [--json]`` in-process."""

from __future__ import annotations

import json

import pytest

from deepspark.cli.main import main


def test_learn_prints_one_json_object(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["learn", "losses", "--output", str(tmp_path), "--json"])
    assert exit.value.code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["topic"] == "losses"
    assert document["outlier_share_of_squared_loss"] > document["outlier_share_of_absolute_loss"]
    assert all(plot.endswith(".png") for plot in document["plots"])


def test_learn_prints_a_summary_without_json(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["learn", "losses", "--output", str(tmp_path)])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "outlier_share_of_squared_loss" in out
    assert "losses_curves.png" in out


def test_learn_unknown_topic_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["learn", "gradients", "--output", str(tmp_path), "--json"])
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "Unknown lesson topic" in lines[0] and "approximation" in lines[0]


def test_learn_convolutions_slides_kernels_over_a_real_photo(tmp_path, capsys):
    from tests.conftest import SHARED_DATA

    photo = SHARED_DATA / "images" / "photos" / "grace_hopper.bmp"
    with pytest.raises(SystemExit) as exit:
        main(["learn", "convolutions", "--output", str(tmp_path), "--image", str(photo), "--json"])
    assert exit.value.code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["topic"] == "convolutions" and len(document["plots"]) == 4
    with pytest.raises(SystemExit) as exit:
        main(["learn", "losses", "--output", str(tmp_path), "--image", str(photo)])
    assert exit.value.code == 2
    assert "Only the convolutions lesson takes --image" in capsys.readouterr().err


def test_only_the_gan_lesson_takes_epochs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["learn", "losses", "--output", str(tmp_path), "--epochs", "3"])
    assert exit.value.code == 2
    assert "Only the gan lesson takes --epochs" in capsys.readouterr().err
