"""Starts tandem-server processes for the tests: the binary from $TANDEM_SERVER (CTest sets
it), the tiny chat model from tests/data/chat_tiny, a free loopback port."""

import os
import subprocess
import time
from pathlib import Path

import requests
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "data" / "chat_tiny"


class RunningServer:
    @staticmethod
    def binary():
        return os.environ.get("TANDEM_SERVER", str(ROOT / "build" / "tools" / "tandem-server"))

    def __init__(self, *args, model=MODEL):
        self.proc = subprocess.Popen(
            [self.binary(), "--model", str(model), "--port", "0", "--threads", "2", "--no-pin",
             "--log-level", "warn", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, line
        self.url = line.split()[-1]
        self.base_url = self.url + "/v1"
        deadline = time.time() + 60
        while time.time() < deadline:
            if requests.get(self.url + "/health").status_code == 200:
                return
            time.sleep(0.05)
        raise RuntimeError("tandem-server did not become healthy")

    def alive(self):
        return self.proc.poll() is None and requests.get(self.url + "/health").status_code == 200

    def metric(self, name, headers=None, session=None):
        """A sample by its full name, labels included: 'x_total{reason="a"}'. With a session, over
        its kept-alive connection (a new connection per call leaves the last one closing, so
        counts of open connections would race it)."""
        get = session.get if session is not None else requests.get
        for line in get(self.url + "/metrics", headers=headers).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def host_port(self):
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--max-body-bytes", "65536", "--admin-key", "admin-secret",
                      "--weights-dir", str(ROOT / "tests" / "data"))
    yield s
    s.stop()
    assert s.proc.returncode == 0, "tandem-server did not exit cleanly"
