"""`refseg-serve`: the demo page, its JSON endpoint and the page driven in headless Chromium.

A tiny R+RMI model directory (module fixture) is served on a free localhost port. The browser
test uploads an image, types a phrase and checks that the mask the page offers for download
equals `Predictor.predict_mask`'s; it writes a screenshot of the page (path printed; `pytest -s`
shows it). It is skipped when Chromium, its driver or selenium is missing (`.ci/run` installs
Debian's `chromium` and `chromium-driver`).
"""

import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image
from tests.helpers import assert_mask_near

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHRASE = "the blue square on the left"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def model_dir(workdir, photo_path):
    """A tiny R+RMI model directory (untrained: what is served is the directory's contract, and
    `refseg-train` writing one is tests/test_training.py's), its threshold at the photo's median."""
    from refseg_tf.training import experiments
    from tests.test_export import make_model_dir

    config = experiments.synthetic_rmi("r_rmi")
    config.data.image_size = 32
    directory = make_model_dir(str(workdir), "r_rmi", config=config)
    _threshold_at_the_median(directory, photo_path)
    return directory


def _threshold_at_the_median(model_dir, image_path):
    """Sets the model directory's threshold (`eval.threshold` in `config.json` and in
    `preprocessor.json`, which `Predictor` reads) so that about half the photo is foreground.

    An untrained model's probabilities sit near one value; at this threshold the mask has an
    outline, so that comparing two masks tests something.
    """
    from refseg_tf.inference import Predictor, read_image
    from refseg_tf.training import config as config_lib

    predictor = Predictor.from_model_dir(model_dir)
    probability = predictor.predict(read_image(image_path), PHRASE)
    threshold = float(np.median(probability))
    config = predictor.config
    config.eval.threshold = threshold
    config_lib.save_config(config, model_dir)
    preprocessor = predictor.preprocessor
    preprocessor.threshold = threshold
    preprocessor.save(model_dir)


@pytest.fixture(scope="module")
def service(model_dir):
    from refseg_tf.webdemo import DemoService

    return DemoService.from_model_dir(model_dir, max_pixels=200 * 200)


@pytest.fixture(scope="module")
def server(service):
    from refseg_tf.webdemo import make_server

    server = make_server(service, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _png_bytes(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(height=45, width=70):
    """A non-square picture: a blue square on the left, a red disc on the right."""
    image = np.full((height, width, 3), 200, np.uint8)
    image[10:30, 5:25] = (30, 60, 220)
    yy, xx = np.mgrid[:height, :width]
    image[(yy - 22) ** 2 + (xx - 52) ** 2 < 100] = (220, 40, 40)
    return image


@pytest.fixture(scope="module")
def photo_path(workdir):
    path = str(workdir / "photo.png")
    with open(path, "wb") as f:
        f.write(_png_bytes(_photo()))
    return path


def _post(server, body: bytes, path="/api/segment", headers=None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=120)
    connection.request("POST", path, body=body,
                       headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    data = json.loads(response.read())
    connection.close()
    return response.status, data


def _segment(server, image_bytes, expression, explain=False):
    body = json.dumps({"image": base64.b64encode(image_bytes).decode("ascii"),
                       "expression": expression, "explain": explain}).encode()
    return _post(server, body)


def _decode_mask(encoded):
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
        assert picture.format == "PNG" and picture.mode == "L"
        values = np.asarray(picture)
    assert set(np.unique(values)) <= {0, 255}
    return values == 255


def _get(server, path):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    headers = dict(response.getheaders())
    connection.close()
    return response.status, headers, body


# --------------------------------------------------------------------------- the endpoint


def test_page_and_info(server):
    status, headers, body = _get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="image-input"' in body and b"/app.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for asset in ("/app.js", "/style.css"):
        assert _get(server, asset)[0] == 200
    status, _, body = _get(server, "/api/info")
    info = json.loads(body)
    assert status == 200 and info["model"] == "r_rmi" and info["explain"] is True
    assert info["image_size"] == 32 and info["max_pixels"] == 200 * 200
    assert _get(server, "/nothing")[0] == 404
    assert server.server_address[0] == "127.0.0.1"


def test_segment_equals_predictor(server, service, photo_path):
    from refseg_tf.inference import read_image

    with open(photo_path, "rb") as f:
        status, answer = _segment(server, f.read(), PHRASE, explain=True)
    assert status == 200, answer
    predictor = service.backend.predictor
    expected = predictor.predict_mask(read_image(photo_path), PHRASE)
    assert 0.05 < expected.mean() < 0.95, expected.mean()
    # Two forward passes: equal away from the threshold (70 px photo, 32 px input: radius 3).
    assert_mask_near(_decode_mask(answer["mask_png"]), expected,
                     predictor.predict(read_image(photo_path), PHRASE), predictor.threshold, 3)
    assert (answer["width"], answer["height"]) == (70, 45)
    assert answer["foreground"] == pytest.approx(expected.mean())
    with Image.open(io.BytesIO(base64.b64decode(answer["overlay_png"]))) as overlay:
        assert overlay.size == (70, 45)
    with Image.open(io.BytesIO(base64.b64decode(answer["explain_jpg"]))) as explained:
        assert explained.format == "JPEG"


@pytest.mark.parametrize("expression", ["", "   ", None])
def test_empty_phrase_is_refused(server, photo_path, expression):
    with open(photo_path, "rb") as f:
        status, answer = _segment(server, f.read(), expression)
    assert status == 400 and "phrase is empty" in answer["error"]


def test_non_image_is_refused(server):
    status, answer = _segment(server, b"this is a text file, not a picture\n", PHRASE)
    assert status == 415 and "not an image" in answer["error"]
    status, answer = _segment(server, b"", PHRASE)
    assert status == 415 and "empty" in answer["error"]
    truncated = _png_bytes(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8))
    status, answer = _segment(server, truncated[: len(truncated) // 2], PHRASE)
    assert status == 415 and "cannot be decoded" in answer["error"]


def test_oversized_image_is_refused_before_decoding(server):
    status, answer = _segment(server, _png_bytes(np.zeros((201, 200, 3), np.uint8)), PHRASE)
    assert status == 413
    assert "201 = 40,200 pixels" in answer["error"] and "40,000" in answer["error"]


def test_oversized_upload_is_refused_before_reading(server, service):
    too_long = str(service.max_request_bytes + 1)
    status, answer = _post(server, b"{}", headers={"Content-Length": too_long})
    assert status == 413 and "too large" in answer["error"]


def test_malformed_requests(server):
    assert _post(server, b"not json")[0] == 400
    status, answer = _post(server, json.dumps({"image": "%%%", "expression": "x"}).encode())
    assert status == 400 and "base64" in answer["error"]
    status, answer = _post(server, json.dumps({"expression": "x"}).encode())
    assert status == 400 and "image first" in answer["error"]
    assert _post(server, b"{}", path="/elsewhere")[0] == 404


def test_service_rejects_bad_limits(service):
    from refseg_tf.webdemo import DemoService

    with pytest.raises(ValueError, match="`max_pixels` must be a positive integer"):
        DemoService(service.backend, max_pixels=0)


def test_serve_cli_starts_on_localhost(model_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "refseg_tf.serve", f"--model_dir={model_dir}", "--port=0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        assert "refseg-serve: r_rmi from" in line, (line, process.poll())
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        host, port = url[len("http://"):].rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/info")
        assert json.loads(connection.getresponse().read())["model"] == "r_rmi"
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_cli_needs_a_model(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, "-m", "refseg_tf.serve", "--port=0"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "model_dir" in result.stderr
    missing = tmp_path / "missing"
    result = subprocess.run(
        [sys.executable, "-m", "refseg_tf.serve", f"--model_dir={missing}", "--port=0"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1 and "refseg-serve: error:" in result.stderr
    assert str(missing) in result.stderr


@pytest.mark.slow
def test_saved_model_backend_equals_saved_model_predictor(model_dir, workdir, photo_path):
    from refseg_tf.export import SavedModelPredictor, export_model, image_bytes_for_serving
    from refseg_tf.inference import Predictor
    from refseg_tf.webdemo import DemoService, make_server

    export_dir = str(workdir / "exported")
    export_model(model_dir, export_dir, formats=("saved_model",))
    saved_model = os.path.join(export_dir, "saved_model", "1")
    server = make_server(DemoService.from_saved_model(saved_model), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = _get(server, "/api/info")
        assert json.loads(body)["explain"] is False
        with open(photo_path, "rb") as f:
            status, answer = _segment(server, f.read(), PHRASE)
        assert status == 200, answer
        saved = SavedModelPredictor(saved_model)
        probability, expected = saved.predict(image_bytes_for_serving(photo_path), PHRASE)
        # Two forward passes: equal away from the threshold (70 px photo, 32 px input).
        threshold = Predictor.from_model_dir(model_dir).threshold
        assert_mask_near(_decode_mask(answer["mask_png"]), expected, probability, threshold, 3)
        with open(photo_path, "rb") as f:
            status, answer = _segment(server, f.read(), PHRASE, explain=True)
        assert status == 400 and "no per-word maps" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- the page in a browser


def _browser_or_skip():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no Chromium browser or chromedriver on PATH (Debian: apt-get install "
                    "chromium chromium-driver; .ci/run installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=options)
    except Exception as error:  # a browser that is installed but cannot start here
        pytest.skip(f"Chromium did not start: {str(error).splitlines()[0]}")


@pytest.fixture(scope="module")
def browser():
    driver = _browser_or_skip()
    yield driver
    driver.quit()


def _submit(browser, server, image_path, expression):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    wait = WebDriverWait(browser, 120)
    wait.until(conditions.text_to_be_present_in_element((By.ID, "model-info"), "r_rmi"))
    browser.find_element(By.ID, "image-input").send_keys(image_path)
    field = browser.find_element(By.ID, "expression")
    field.clear()
    field.send_keys(expression)
    browser.find_element(By.ID, "segment-button").click()
    wait.until(lambda driver: driver.find_element(By.ID, "result").is_displayed()
               or (driver.find_element(By.ID, "message").is_displayed()
                   and "error" in driver.find_element(By.ID, "message").get_attribute("class")))
    return wait


def test_page_in_headless_chromium(browser, server, service, photo_path, tmp_path):
    from selenium.webdriver.common.by import By

    from refseg_tf.inference import read_image

    _submit(browser, server, photo_path, PHRASE)
    assert browser.find_element(By.ID, "result").is_displayed(), (
        browser.find_element(By.ID, "message").text)
    link = browser.find_element(By.ID, "mask-download")
    assert link.get_attribute("download") == "mask.png"
    href = link.get_attribute("href")
    assert href.startswith("data:image/png;base64,")
    predictor = service.backend.predictor
    expected = predictor.predict_mask(read_image(photo_path), PHRASE)
    assert 0.05 < expected.mean() < 0.95, expected.mean()
    # Two forward passes: equal away from the threshold (70 px photo, 32 px input: radius 3).
    assert_mask_near(_decode_mask(href.split(",", 1)[1]), expected,
                     predictor.predict(read_image(photo_path), PHRASE), predictor.threshold, 3)
    assert browser.find_element(By.ID, "explain-picture").is_displayed()
    assert "70 × 45 px" in browser.find_element(By.ID, "result-stats").text
    screenshot = str(tmp_path / "refseg_serve_page.png")
    assert browser.save_screenshot(screenshot)
    print(f"\nScreenshot of the demo page: {screenshot}")
    with Image.open(screenshot) as picture:
        assert picture.size[0] >= 800

    # Bad input shows the server's message on the page.
    _submit(browser, server, photo_path, "   ")
    assert "phrase is empty" in browser.find_element(By.ID, "message").text
    assert not browser.find_element(By.ID, "result").is_displayed()
    text_file = str(tmp_path / "notes.txt")
    with open(text_file, "w") as f:
        f.write("not a picture\n")
    _submit(browser, server, text_file, PHRASE)
    assert "not an image" in browser.find_element(By.ID, "message").text
