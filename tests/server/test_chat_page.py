"""The chat page at /: served as a static page, and driven in a real browser (headless Chromium
from Debian through Selenium) on the demo model: a typed message's streamed reply equals the
API's own answer, and the stop button ends a reply and its sequence on the server. (The demo
model, not the tiny test model: that one writes a whole reply in less time than a click.)"""

import os
import shutil
import time

import openai
import pytest
import requests

from conftest import MODEL, ROOT, RunningServer

DEMO = ROOT / "models" / "demo" / "tandem-demo-moe"

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def test_page_is_served_with_a_strict_policy(server):
    r = requests.get(server.url + "/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in r.headers["Content-Security-Policy"]
    assert "/v1/chat/completions" in r.text and r.text.rstrip().endswith("</html>")
    # The page is the file in the tree, byte for byte (nothing lost in embedding it).
    page = (ROOT / "tools" / "server" / "chat_page.html").read_text()
    assert r.text == page


def test_page_needs_no_key_but_the_api_does():
    s = RunningServer("--api-key", "secret-key")
    try:
        assert requests.get(s.url + "/").status_code == 200
        assert requests.get(s.base_url + "/models").status_code == 401
    finally:
        s.stop()


def test_no_chat_page_flag():
    s = RunningServer("--no-chat-page")
    try:
        r = requests.get(s.url + "/")
        assert r.status_code == 404
    finally:
        s.stop()


@pytest.fixture(scope="module")
def demo_server():
    s = RunningServer(model=DEMO)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium and chromedriver (Debian: apt-get install chromium "
                    "chromium-driver; tools/install-deps.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="no selenium (tools/test.sh installs it into .venv)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1200,800"):
        options.add_argument(arg)
    # The driver from Debian, named: Selenium must not try to download one.
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(predicate, timeout=60, what="the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def set_field(driver, field_id, value):
    element = driver.find_element("id", field_id)
    element.clear()
    element.send_keys(str(value))


def open_page(driver, server):
    driver.get(server.url + "/")
    model = driver.find_element("id", "model")
    wait_for(lambda: "context" in model.text, what="the model's name")
    return model.text


def send(driver, text):
    from selenium.webdriver.common.keys import Keys
    box = driver.find_element("id", "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def last_reply(driver):
    replies = driver.find_elements("css selector", ".msg.assistant")
    return replies[-1] if replies else None


def finished_reply(driver):
    reply = last_reply(driver)
    if reply is None:
        return None
    stats = reply.find_element("css selector", ".stats")
    return reply if stats.get_attribute("data-done") == "true" else None


def test_typed_message_streams_the_apis_reply(browser, demo_server):
    server = demo_server
    model = open_page(browser, server)
    assert model.startswith(DEMO.name)
    set_field(browser, "temperature", 0)
    set_field(browser, "max_tokens", 24)
    send(browser, "Hello there")
    reply = wait_for(lambda: finished_reply(browser), what="the reply")
    text = reply.find_element("css selector", ".text").text
    stats = reply.find_element("css selector", ".stats").text

    client = openai.OpenAI(base_url=server.base_url, api_key="unused")
    expected = client.chat.completions.create(
        model=DEMO.name, messages=[{"role": "user", "content": "Hello there"}], temperature=0,
        max_tokens=24)
    # (the browser's .text drops trailing white space as rendered)
    assert text == expected.choices[0].message.content.strip()
    assert f"{expected.usage.completion_tokens} tokens" in stats
    assert "finish: " + expected.choices[0].finish_reason in stats
    if expected.usage.completion_tokens > 1:
        assert "tokens/s" in stats
    shot = os.environ.get("TANDEM_CHAT_SCREENSHOT")
    if shot:  # how docs/chat_page.png was taken
        browser.save_screenshot(shot)


def test_stop_ends_the_reply_and_its_sequence(browser, demo_server):
    server = demo_server
    open_page(browser, server)
    browser.find_element("id", "clear").click()
    set_field(browser, "temperature", 0)
    set_field(browser, "max_tokens", "")  # none: the rest of the context, far longer than a click
    send(browser, "Tell me a long story")
    stop = browser.find_element("id", "stop")
    wait_for(stop.is_enabled, what="the stop button")
    stop.click()
    reply = wait_for(lambda: finished_reply(browser), what="the stopped reply")
    assert "stopped" in reply.find_element("css selector", ".stats").text
    assert browser.find_element("id", "send").is_enabled() and not stop.is_enabled()
    # The server aborts the sequence of a client that went away.
    wait_for(lambda: server.metric("tandem_requests_running") == 0, timeout=3,
             what="the engine to drop the stopped request")
