#!/usr/bin/env python3
"""Drives the built-in chat page (src/web/chat.html) in headless Chromium.

Run by tests/browser.rs, which starts `switchboard serve --auth password` with
groups 1=general and 2=random, and plays the other side with plain TCP clients
(PEER, then LATE). The two sides pace each other through what they see:

  page                                        TCP side (tests/browser.rs)
  log in as USER (wrong password first)       PEER is logged in, in group 1, watching it
  join general, publish "hello from the browser"
                                              PEER gets it; publishes a UTF-8 text and a
                                              non-UTF-8 one to group 1, SENDs USER a message
  shows all three; one-to-one to an offline
  user (readable error), then to PEER
                                              PEER gets the message; LATE joins group 1
  shows "LATE joined general"; sends PEER
  "drop the connection"
                                              kills the server, starts it again on the same
                                              ports; PEER logs in again and waits for USER
                                              to be back in group 1, then publishes
  reconnects by itself (log in, rejoin),
  shows "welcome back"; screenshot

Usage: chat_page.py URL USER PASSWORD PEER LATE SCREENSHOT_PATH
Exits 0 when every check passed, 1 (with the page's state) otherwise, 2 when
Chromium, chromedriver or Selenium is missing.
"""

import os
import shutil
import signal
import sys
import time

USAGE = "usage: chat_page.py URL USER PASSWORD PEER LATE SCREENSHOT_PATH"
TOTAL_SECONDS = 120  # the whole run, whatever happens
WAIT = 15  # any one thing the page should show


def find(names, env):
    if os.environ.get(env):
        return os.environ[env]
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def main():
    if len(sys.argv) != 7:
        print(USAGE, file=sys.stderr)
        return 2
    url, user, password, peer, late, shot = sys.argv[1:]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select, WebDriverWait
    except ImportError as e:
        print(f"MISSING: selenium ({e}); run .ci/run or `pip install selenium`", file=sys.stderr)
        return 2
    browser = find(["chromium", "chromium-browser", "google-chrome"], "CHROMIUM")
    driver_bin = find(["chromedriver"], "CHROMEDRIVER")
    if not browser or not driver_bin:
        print("MISSING: chromium and chromium-driver; run .ci/run or "
              "`apt-get install chromium chromium-driver`", file=sys.stderr)
        return 2

    def on_alarm(_sig, _frame):
        raise TimeoutError(f"the browser run took over {TOTAL_SECONDS} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TOTAL_SECONDS)

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions",
                 "--disable-component-update", "--disable-crash-reporter", "--disable-breakpad", "--disable-sync", "--no-first-run",
                 "--no-default-browser-check", "--mute-audio", "--window-size=1000,900"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: Selenium Manager has nothing to look up or download.
    service = Service(executable_path=driver_bin, log_output=os.devnull)
    started = time.monotonic()
    d = webdriver.Chrome(service=service, options=opts)
    step_name = "start"
    try:
        d.set_page_load_timeout(WAIT)
        d.set_script_timeout(WAIT)

        def step(name):
            nonlocal step_name
            step_name = name
            print(f"[{time.monotonic() - started:5.1f} s] {name}", flush=True)

        def el(i):
            return d.find_element(By.ID, i)

        def text(i):
            return el(i).text

        def wait_for(what, cond, timeout=WAIT):
            try:
                return WebDriverWait(d, timeout, poll_frequency=0.1).until(lambda _d: cond())
            except Exception as e:
                raise AssertionError(f"the page did not show {what} within {timeout} s") from e

        def log_lines():
            # Each entry is "HH:MM" then the text.
            return [li.text.split(" ", 1)[-1] for li in d.find_elements(By.CSS_SELECTOR, "#log li")]

        def wait_log(line, timeout=WAIT):
            wait_for(f"the log line {line!r}", lambda: line in log_lines(), timeout)

        def type_into(i, value):
            e = el(i)
            e.clear()
            e.send_keys(value)

        step("open the page")
        d.get(url)
        assert d.title == "Switchboard chat", f"title {d.title!r}"
        assert el("user").is_displayed() and not el("password").is_displayed()
        assert el("log").get_attribute("aria-live") == "polite"

        step("log in: the server asks for a password")
        type_into("user", user)
        el("login").click()
        wait_for("the password field", lambda: el("password").is_displayed())
        assert "asks for a password" in text("status"), text("status")

        step("a wrong password gets a readable error")
        type_into("password", "not-" + password)
        el("password").send_keys(Keys.ENTER)
        wait_for("the auth-failed error",
                 lambda: "wrong user name or password" in text("error"))

        step("the right password logs in")
        type_into("password", password)
        el("login").click()
        wait_for("Logged in", lambda: text("status") == f"Logged in as {user}.")
        assert not el("login-form").is_displayed() and el("chat").is_displayed()

        step("the group list")
        wait_for("both groups", lambda: [o.text for o in Select(el("groups")).options]
                 == ["general (#1)", "random (#2)"])
        wait_for(f"{peer} online", lambda: peer in text("who").split("\n"))

        step("join general")
        Select(el("groups")).select_by_value("1")
        el("join").click()
        wait_log("You joined general")
        wait_for("general marked as joined",
                 lambda: Select(el("groups")).first_selected_option.text == "general (#1) ✓ joined")

        step("stay connected across the server's keep-alive pings (PONG)")
        time.sleep(3.5)  # the test's server pings after 1 s of silence, gives 1 s to answer
        assert text("status") == f"Logged in as {user}.", text("status")
        assert "Connection lost." not in log_lines() and not text("error"), \
            f"the connection dropped: {log_lines()} {text('error')!r}"

        step("publish to general with the keyboard")
        el("message").send_keys("hello from the browser", Keys.ENTER)
        wait_log(f"[general] {user}: hello from the browser")

        step(f"what {peer} publishes and sends")
        wait_log(f"[general] {peer}: hello from {peer} ✓ ünïcödé")
        wait_log(f"[general] {peer}: binary \ufffd\ufffd")
        wait_log(f"{peer} → you: psst, {user}")

        step("a one-to-one message to someone offline: readable error")
        type_into("to", "nobody")
        type_into("message", "anyone there?")
        el("send").click()
        wait_for("the no-such-user error", lambda: text("error")
                 == "Could not send to nobody: that user is not online (nobody is not online).")

        step(f"a one-to-one message to {peer}, picked from the online list")
        el("to").clear()
        d.find_element(By.XPATH, f"//ul[@id='who']//button[text()='{peer}']").click()
        assert el("to").get_attribute("value") == peer
        el("message").send_keys(f"thanks, {peer}", Keys.ENTER)
        wait_log(f"you → {peer}: thanks, {peer}")

        step(f"presence: {late} joins general")
        wait_log(f"{late} joined general")
        wait_for(f"{late} online", lambda: late in text("who").split("\n"))

        step("the server restarts: the page reconnects, logs in and rejoins")
        el("message").send_keys("drop the connection", Keys.ENTER)
        wait_log(f"you → {peer}: drop the connection")
        wait_for("the reconnecting status", lambda: "reconnecting" in text("status"))
        wait_for("Logged in again", lambda: text("status") == f"Logged in as {user}.", 40)
        wait_log("Rejoined general")
        wait_log(f"[general] {peer}: welcome back, {user}")
        el("to").clear()
        el("message").send_keys("glad to be back", Keys.ENTER)
        wait_log(f"[general] {user}: glad to be back")

        step("screenshot")
        d.execute_script("document.getElementById('message').blur()")
        if not d.save_screenshot(shot):
            raise AssertionError(f"cannot save the screenshot to {shot}")
        print(f"screenshot: {shot}")
        print(f"PASS in {time.monotonic() - started:.1f} s", flush=True)
        return 0
    except BaseException as e:  # noqa: BLE001 - report everything, then fail
        print(f"FAIL at step {step_name!r}: {type(e).__name__}: {e}", file=sys.stderr)
        try:
            print("status: " + d.find_element(By.ID, "status").text, file=sys.stderr)
            print("error: " + d.find_element(By.ID, "error").text, file=sys.stderr)
            print("log:\n  " + "\n  ".join(
                li.text for li in d.find_elements(By.CSS_SELECTOR, "#log li")), file=sys.stderr)
            for entry in d.get_log("browser"):
                print(f"console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
            d.save_screenshot(shot + ".failed.png")
            print(f"screenshot of the failure: {shot}.failed.png", file=sys.stderr)
        except Exception as e2:  # noqa: BLE001
            print(f"(cannot read the page's state: {e2})", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        d.quit()


if __name__ == "__main__":
    sys.exit(main())
