"""An image model over HTTP: base64 bytes in JSON and multipart uploads give the model's
predictions; bad base64, undecodable images and refused paths get 400s naming the field."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from tests.image_data import pattern
from tests.serving.conftest import free_port

CLASSES = ("centre", "horizontal", "vertical")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """A tiny CNN on generated 16x16 patterns: ``(model_dir, model)``."""
    import mlflow

    import deepspark
    from deepspark.tracking.model import resolve_model_dir
    from tests.image_data import pattern_folder

    root = tmp_path_factory.mktemp("serving-images")
    folder = pattern_folder(root / "patterns", classes=CLASSES, per_class=12, mess=False)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    result = deepspark.train(
        str(folder), tracking_uri=tracking_uri, filters=(4, 8), epochs=2, batch_size=16, seed=1
    )
    mlflow.set_tracking_uri(tracking_uri)
    model_dir = resolve_model_dir(result.model_uri)
    return model_dir, deepspark.load_model(str(model_dir))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[bytes]:
    rng = np.random.default_rng(4)
    encoded = []
    for kind in ("horizontal", "vertical", "centre"):
        buffer = io.BytesIO()
        Image.fromarray(pattern(kind, rng)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


@pytest.fixture(scope="module")
def servers(image_model, tmp_path_factory):
    from deepspark.serving import ServeSettings
    from tests.serving.conftest import ThreadServer

    model_dir, _ = image_model
    allowed = tmp_path_factory.mktemp("allowed-photos")
    running = {}
    for allow_paths in (False, True):
        settings = ServeSettings(
            model_uri=str(model_dir), port=free_port(), max_batch_rows=16,
            allow_paths=(str(allowed),) if allow_paths else (),
        )  # fmt: skip
        running[allow_paths] = ThreadServer(settings).start()
    running["allowed"] = allowed
    yield running
    for server in (running[False], running[True]):
        server.stop()


def _expected(model, photos) -> pd.DataFrame:
    return model.predict(pd.DataFrame({"image": pd.Series(photos, dtype=object)}))


def _same(response: requests.Response, expected: pd.DataFrame) -> None:
    assert response.status_code == 200, response.text
    got = pd.DataFrame(response.json()["predictions"])
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    columns = [f"probability_{label}" for label in CLASSES]
    np.testing.assert_allclose(got[columns], expected[columns], rtol=1e-5)
    assert got["error"].isna().all()


def test_base64_images_in_json_give_the_models_predictions(servers, image_model, photos):
    _, model = image_model
    encoded = [base64.b64encode(photo).decode() for photo in photos]
    url = f"{servers[False].url}/invocations"
    expected = _expected(model, photos)
    _same(
        requests.post(
            url,
            json={"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}},
            timeout=30,
        ),
        expected,
    )  # noqa: E501
    _same(
        requests.post(url, json={"instances": [{"image": e} for e in encoded]}, timeout=30),
        expected,
    )  # noqa: E501


def test_multipart_uploads_become_the_image_column(servers, image_model, photos):
    _, model = image_model
    files = [("file", (f"{index}.png", photo, "image/png")) for index, photo in enumerate(photos)]
    response = requests.post(f"{servers[False].url}/invocations", files=files, timeout=30)
    _same(response, _expected(model, photos))


def test_bad_images_get_400_naming_the_field(servers, photos):
    url = f"{servers[False].url}/invocations"
    not_base64 = requests.post(url, json={"instances": [{"image": "%%% not base64"}]}, timeout=30)
    assert not_base64.status_code == 400 and "'image' row 0" in not_base64.json()["message"]
    garbage = base64.b64encode(b"plain text, not an image").decode()
    good = base64.b64encode(photos[0]).decode()
    undecodable = requests.post(
        url, json={"instances": [{"image": good}, {"image": garbage}]}, timeout=30
    )
    assert undecodable.status_code == 400, undecodable.text
    assert "'image' row 1" in undecodable.json()["message"]
    upload = requests.post(url, files=[("file", ("x.png", b"nope", "image/png"))], timeout=30)
    assert upload.status_code == 400 and "'image' row 0" in upload.json()["message"]
    nothing = requests.post(url, json={"instances": [{"picture": good}]}, timeout=30)
    assert nothing.status_code == 400 and "image" in nothing.json()["message"]


def test_paths_are_read_only_inside_allowed_folders(servers, image_model, photos, tmp_path):
    _, model = image_model
    path = servers["allowed"] / "photo.png"
    path.write_bytes(photos[1])
    body = {"dataframe_records": [{"path": str(path)}]}
    refused = requests.post(f"{servers[False].url}/invocations", json=body, timeout=30)
    assert refused.status_code == 400 and "--allow-paths" in refused.json()["message"]
    allowed = requests.post(f"{servers[True].url}/invocations", json=body, timeout=30)
    _same(allowed, _expected(model, photos[1:2]))
    outside = tmp_path / "secret.png"
    outside.write_bytes(photos[0])
    (servers["allowed"] / "link.png").symlink_to(outside)
    for escape in [
        str(servers["allowed"] / ".." / tmp_path.name / "secret.png"),  # climbs out with ..
        str(servers["allowed"] / "link.png"),  # a link inside pointing outside
        str(outside),
        "s3://bucket/photo.png",
        "/etc/passwd",
    ]:
        body = {"dataframe_records": [{"path": str(path)}, {"path": escape}]}
        answer = requests.post(f"{servers[True].url}/invocations", json=body, timeout=30)
        assert answer.status_code == 400, (escape, answer.text)
        message = answer.json()["message"]
        assert "row 1 names a file outside the folders" in message and escape in message
