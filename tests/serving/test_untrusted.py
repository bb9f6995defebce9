"""Models from someone else, and who may call a server.

- A model file that holds Python code (a Lambda layer) or names a class outside Keras and
  deepspark runs none of it: predict and serve refuse it with one line naming the opt-in
  (``DEEPSPARK_TRUST_MODEL_CODE=1``), which then loads it.
- ``deepspark serve`` wants a token on any interface but loopback; with one, every route but
  ``/ping`` and ``/health`` answers 401 without it, and a browser gets in through ``/?token=``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from deepspark.cli.serve import serve_command
from tests.cli.test_cli import assert_one_line_error, invoke
from tests.conftest import make_table

COLUMNS = ["x1", "x2", "count", "color"]
TOKEN = "s3cret-token-0123456789"


def _copy_with_lambda(tabular_dir: Path, target: Path, marker: Path) -> Path:
    """The served model with a Lambda layer on its output that writes ``marker`` when it runs."""
    import keras

    from deepspark.models.loader import load_keras_model

    shutil.copytree(tabular_dir, target)
    original = load_keras_model(tabular_dir / "model.keras", compile=False)
    # A literal path inside the lambda's code: it travels with the file, as an attacker's would.
    side_effect = eval(f"lambda t: t + 0.0 * len(open({str(marker)!r}, 'a').name)")  # noqa: S307
    output = keras.layers.Lambda(side_effect, name="hook")(original.outputs[0])
    keras.Model(original.inputs, output).save(target / "model.keras")
    marker.unlink(missing_ok=True)  # building the model above ran it once, here
    return target


def _copy_naming_os_system(tabular_dir: Path, target: Path, marker: Path) -> Path:
    """The served model whose config asks for ``os.system("touch marker")`` as a layer."""
    shutil.copytree(tabular_dir, target)
    source = tabular_dir / "model.keras"
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layer = config["config"]["layers"][-1]
    layer.update(module="os", class_name="system", registered_name=None)
    layer["config"] = f"touch {marker}"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target / "model.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return target


@pytest.mark.parametrize("make", [_copy_with_lambda, _copy_naming_os_system])
def test_a_model_with_code_runs_none_of_it(tabular_dir, workdir, capsys, monkeypatch, make):
    marker = workdir / "code-ran"
    model = make(tabular_dir, workdir / "foreign-model", marker)
    data = workdir / "rows.csv"
    make_table(rows=5, seed=3)[COLUMNS].to_csv(data, index=False)
    monkeypatch.delenv("DEEPSPARK_TRUST_MODEL_CODE", raising=False)
    predict = ["predict", "--model", str(model), "--data", str(data)]
    predict += ["--output", str(workdir / "out.csv")]

    code, out, err = invoke(capsys, *predict)
    assert_one_line_error(code, out, err, r"DEEPSPARK_TRUST_MODEL_CODE=1")
    assert str(model) in err and not marker.exists()
    served = CliRunner().invoke(serve_command, ["--model", str(model), "--port", "0"])
    assert served.exit_code == 2 and "DEEPSPARK_TRUST_MODEL_CODE=1" in served.stderr
    assert len(served.stderr.strip().splitlines()) == 1 and not marker.exists()

    if make is _copy_with_lambda:  # the opt-in loads it, and its code runs
        monkeypatch.setenv("DEEPSPARK_TRUST_MODEL_CODE", "1")
        code, out, err = invoke(capsys, *predict)
        assert code == 0, err
        assert marker.exists()


def test_a_public_interface_needs_a_token(workdir, tabular_dir, monkeypatch):
    monkeypatch.delenv("DEEPSPARK_SERVE_TOKEN", raising=False)
    for arguments, message in [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines call the model"),
        (["--token", "short"], "--token must be 16 or more URL-safe characters"),
    ]:
        result = CliRunner().invoke(serve_command, ["--model", str(tabular_dir), *arguments])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "short" not in lines[0]  # a refused token is not echoed


def test_the_token_guards_every_route_but_the_probes(start_server):
    server = start_server(token=TOKEN)
    records = make_table(rows=2, seed=4)[COLUMNS].to_dict(orient="records")
    body = {"dataframe_records": json.loads(pd.DataFrame(records).to_json(orient="records"))}
    url = server.url
    assert requests.get(f"{url}/ping", timeout=10).status_code == 200
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    for method, path in [("post", "/invocations"), ("get", "/metadata"), ("get", "/")]:
        refused = requests.request(method, f"{url}{path}", json=body, timeout=10)
        assert refused.status_code == 401, (path, refused.text)
        assert "Authorization: Bearer" in refused.json()["message"]
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert requests.post(f"{url}/invocations", json=body, headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    answered = requests.post(f"{url}/invocations", json=body, headers=right, timeout=30)
    assert answered.status_code == 200 and len(answered.json()["predictions"]) == 2
    browser = requests.Session()
    page = browser.get(f"{url}/?token={TOKEN}", timeout=10)  # 303 to /, with the cookie
    assert page.status_code == 200 and "<form" in page.text
    assert browser.post(f"{url}/invocations", json=body, timeout=30).status_code == 200
