"""`scenewright serve` end to end in headless Chromium: plan, drag a box, generate with a tiny model, bad input.

The app runs in this process (Gradio's server thread) on a free 127.0.0.1 port with a tiny random-weight
Stable Diffusion; Selenium drives Debian's chromium + chromedriver. Skipped only when chromium is absent
and CI is not set: in CI a missing browser fails (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
if not HAVE_BROWSER and os.environ.get("CI"):
    raise RuntimeError(f"CI is set but chromium/chromedriver are missing ({CHROMIUM}, {CHROMEDRIVER}); .ci/run installs them")
pytestmark = pytest.mark.skipif(not HAVE_BROWSER, reason="chromium + chromedriver not installed (apt-get install chromium chromium-driver)")

TINY_OPTIONS = dict(car_res=[16, 16], sar_res=[16, 16], max_refinement_steps=1)
TIMEOUT = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(**build_options) -> tuple[object, str]:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from scenewright.agent.web import build_app

    app = build_app(**build_options)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    return app, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app_url():
    from scenewright.synth import Synthesizer
    from scenewright.synth.testing import get_dummy_pipe

    app, url = _serve(synthesizer=Synthesizer.from_pipe(get_dummy_pipe(seed=0)), method_options=TINY_OPTIONS)
    yield url
    app.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1300,1100"):  # fmt: skip
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="sw-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _boxes(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".sw-box")


def _state(driver) -> dict:
    return json.loads(driver.execute_script("return document.querySelector('#sw-state textarea').value"))


def _message(driver) -> str:
    return _css(driver, "#sw-message").text


def _wait_message(driver, needle: str) -> str:
    _wait(driver, lambda d: needle in _message(d), f"message containing {needle!r}")
    return _message(driver)


def _open_and_plan(driver, url: str, text: str, count: int) -> None:
    driver.get(url)
    box = _wait(driver, lambda d: d.execute_script("return document.querySelector('#sw-text textarea')"), "the page")
    box.clear()
    box.send_keys(text)
    _css(driver, "#sw-plan").click()
    _wait(driver, lambda d: len(_boxes(d)) == count, f"{count} planned boxes on the canvas")


def test_plan_drag_generate_download(app_url, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    _open_and_plan(browser, app_url, "a cat to the left of a dog", 2)
    assert "Planned 2 box(es)" in _message(browser)
    before = _state(browser)["boxes"]
    assert [b["name"] for b in before] == ["cat", "dog"]
    width = _css(browser, ".sw-canvas").size["width"]

    cat = _boxes(browser)[0]
    ActionChains(browser).move_to_element(cat).click_and_hold().move_by_offset(40, -60).release().perform()
    _wait(browser, lambda d: _state(d)["boxes"][0]["x"] != before[0]["x"], "the drag to reach the box state")
    moved = _state(browser)["boxes"]
    assert moved[0]["x"] - before[0]["x"] == pytest.approx(40 / width, abs=0.01)
    assert moved[0]["y"] - before[0]["y"] == pytest.approx(-60 / width, abs=0.01)  # the canvas is square
    assert moved[0]["w"] == pytest.approx(before[0]["w"]) and moved[1] == before[1]  # a move, not a resize

    steps = _css(browser, "#sw-steps input")
    steps.clear()
    steps.send_keys("2")
    attempts = _css(browser, "#sw-attempts input")
    assert attempts.get_attribute("value") == "4"  # `scenewright run`'s budget by default
    attempts.clear()
    attempts.send_keys("2")  # two attempts of the tiny model fit the page's wait
    _css(browser, "#sw-generate").click()
    _wait_message(browser, "Generated with car, sar")
    src = _wait(browser, lambda d: d.execute_script("const i = document.querySelector('#sw-image img'); return i && i.src"),
                "the generated image")  # fmt: skip
    assert src
    verdict = _css(browser, "#sw-scores").text
    assert "count_acc" in verdict and ("✔" in verdict or "✘" in verdict)  # a readable list, not raw JSON
    natural = browser.execute_script("const i = document.querySelector('#sw-image img'); return i.naturalWidth")
    assert natural == 512  # the 64 px image scaled up to the canvas

    link = _wait(browser, lambda d: d.execute_script("const a = document.querySelector('#sw-download a'); return a && a.href"),
                 "the layout download link")  # fmt: skip
    with urllib.request.urlopen(link, timeout=TIMEOUT) as response:
        from scenewright.layout.schema import Layout

        saved = Layout.parse(response.read())
    assert saved.prompt == "a cat to the left of a dog"
    assert saved.objects[0].box[0] == pytest.approx(moved[0]["x"])  # the layout drawn is the edited one


def test_bad_input_shows_a_message_not_a_traceback(app_url, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(app_url)
    _wait(browser, lambda d: d.execute_script("return document.querySelector('#sw-text textarea')"), "the page")
    _css(browser, "#sw-plan").click()
    assert "Error" in _wait_message(browser, "the text is empty")  # the message itself: an earlier error may still show

    _open_and_plan(browser, app_url, "a cat to the left of a dog", 2)
    dog = _boxes(browser)[1]
    dog.click()  # select it, then relabel it with something the text does not name
    label = _css(browser, ".sw-label")
    label.clear()
    label.send_keys("a giraffe")
    _wait(browser, lambda d: _state(d)["boxes"][1]["phrase"] == "a giraffe", "the relabel to reach the box state")
    _css(browser, "#sw-generate").click()
    assert "Error" in _wait_message(browser, "its label 'giraffe' is not in the text")  # the message itself: an earlier error may still show

    _css(browser, ".sw-remove").click()  # the giraffe goes; one box is left
    _wait(browser, lambda d: len(_state(d)["boxes"]) == 1, "the removal to reach the box state")
    handle, size = _css(browser, ".sw-box .sw-handle"), _boxes(browser)[0].size
    drag = (-size["width"] - 20, -size["height"] - 20)  # past the box's top-left corner, still on the canvas
    ActionChains(browser).move_to_element(handle).click_and_hold().move_by_offset(*drag).release().perform()
    _wait(browser, lambda d: _state(d)["boxes"][0]["w"] == 0, "the resize to zero")
    _css(browser, "#sw-generate").click()
    assert "Error" in _wait_message(browser, "box 1 'a cat' has zero area")  # the message itself: an earlier error may still show

    canvas = _css(browser, ".sw-canvas")  # deselect (press on empty canvas), then add a labelled box
    corner = (canvas.size["width"] // 2 - 10, -canvas.size["height"] // 2 + 10)  # top right, from the centre
    ActionChains(browser).move_to_element_with_offset(canvas, *corner).click().perform()
    label.clear()
    label.send_keys("a dog")
    _css(browser, ".sw-add").click()
    _wait(browser, lambda d: len(_state(d)["boxes"]) == 2, "the added box to reach the box state")
    assert _state(browser)["boxes"][0]["w"] == 0 and _state(browser)["boxes"][1]["phrase"] == "a dog"
    assert "Traceback" not in browser.page_source


def test_missing_model_is_a_message(browser, tmp_path):
    app, url = _serve(model=str(tmp_path / "no-such-model"))
    try:
        _open_and_plan(browser, url, "a cat", 1)
        _css(browser, "#sw-generate").click()
        assert "Error" in _wait_message(browser, "does not exist")  # the message itself: an earlier error may still show
    finally:
        app.close()
