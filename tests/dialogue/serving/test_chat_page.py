"""The chat page at / in a real browser: headless Chromium, driven by Selenium, talking to the real server.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``apt-get install chromium chromium-driver``; browsers
cannot be downloaded here) and the ``selenium`` package (the ``dev`` extra). Slow: run with ``-m slow``.
"""

import os
import shutil

import pytest
from support import SUNNY, serve_app, stage_reward, taught_replier

from csrl.dialogue.serving.reply_api import ReplyService
from csrl.dialogue.serving.scoring import TurnScorer
from csrl.dialogue.serving.server import create_app

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("apt-get install chromium chromium-driver", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,900")
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(one_thread):
    app = create_app(TurnScorer(stage_reward(), [SUNNY], {"weather"}), replies=ReplyService(taught_replier(), [SUNNY]))
    with serve_app(app) as url:
        yield url


def _send(browser, text, turns_before):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = browser.find_element(By.ID, "message")
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CLASS_NAME, "agent-turn")) > turns_before)
    return browser.find_elements(By.CLASS_NAME, "agent-turn")[-1]


def test_typing_a_message_shows_the_policys_turn_and_its_scores(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server + "/")
    assert browser.title == "csrl chat"
    turn = _send(browser, "Weather in Detroit?", 0)
    assert turn.find_element(By.CLASS_NAME, "reply").text == "Sunny all day in Detroit."
    process = turn.find_element(By.CLASS_NAME, "process").text
    assert "intent: weather" in process and "search: weather Detroit" in process and "k-sunny" in process
    assert turn.find_element(By.CLASS_NAME, "scores").text.startswith("reward 1.000")
    assert browser.find_element(By.CLASS_NAME, "customer").text == "Weather in Detroit?"

    Select(browser.find_element(By.ID, "decoding")).select_by_value("best_of_n")
    n = browser.find_element(By.ID, "n")
    n.clear()
    n.send_keys("3")
    turn = _send(browser, "And on Friday?", 1)
    assert "best of 3" in turn.find_element(By.CLASS_NAME, "scores").text
    assert browser.find_element(By.ID, "error").text == ""
    browser.save_screenshot(str(tmp_path / "chat.png"))

    browser.find_element(By.ID, "reset").click()
    assert browser.find_elements(By.CLASS_NAME, "agent-turn") == []
