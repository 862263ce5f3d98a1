"""tandem-server under real traffic: a burst of connections, half-open and slow clients, clients
that hang up on a non-streaming request, SIGTERM in the middle of streams, a model that fails
to load. Raw sockets where the official client cannot misbehave on purpose."""

import json
import signal
import socket
import subprocess
import threading
import time

import requests
import pytest

from conftest import ROOT, RunningServer

CHAT = {"model": "chat_tiny", "messages": [{"role": "user", "content": "hi"}]}


def raw_post(server, path, body, source="127.0.0.1"):
    """A POST on a fresh socket (bound to `source`); returns the socket, response unread."""
    data = json.dumps(body).encode()
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(server.host_port())
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(data)).encode() +
                 b"\r\n\r\n" + data)
    return sock


def read_all(sock, timeout=30):
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_burst_of_64_connections_is_accepted_at_once(server):
    """64 clients connect at the same instant, five times: none is reset or dropped (a
    dropped SYN costs the client a 1 s retransmit, which the time bound catches)."""
    host, port = server.host_port()

    def burst():
        barrier = threading.Barrier(64)
        failures = []

        def one():
            barrier.wait()
            try:
                sock = socket.create_connection((host, port), timeout=5)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status = read_all(sock, timeout=5).split(b"\r\n")[0]
                sock.close()
                if b" 200 " not in status:
                    failures.append(status)
            except OSError as e:
                failures.append(repr(e))

        threads = [threading.Thread(target=one) for _ in range(64)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return failures, time.monotonic() - start

    for _ in range(5):
        failures, seconds = burst()
        assert failures == []
        assert seconds < 0.9, f"a burst took {seconds:.2f} s: connections were dropped"


def test_keep_alive_responses_are_not_held_back_by_nagle(server):
    """A response is headers then body, a stream many small events: without TCP_NODELAY each
    write after the first waits for an ACK that the client may delay by 40 ms."""
    with requests.Session() as session:
        session.get(server.url + "/health")
        start = time.monotonic()
        for _ in range(20):
            assert session.get(server.url + "/health").status_code == 200
        assert time.monotonic() - start < 0.4  # 20 x 40 ms = 0.8 s when held back


def test_200_half_open_connections_do_not_starve_health(server):
    """200 clients send half a request and stall; /health and a completion still answer at
    once (each connection has its own thread; the stalled ones wait for their timeout)."""
    host, port = server.host_port()
    stalled = []
    for _ in range(200):
        sock = socket.create_connection((host, port))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
        stalled.append(sock)
    try:
        time.sleep(0.2)
        start = time.monotonic()
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        assert time.monotonic() - start < 1.0
        r = requests.post(server.url + "/v1/completions",
                          json={"prompt": "Hi", "max_tokens": 4}, timeout=5)
        assert r.status_code == 200, r.text
        assert server.metric("tandem_http_connections_open") >= 200
    finally:
        for sock in stalled:
            sock.close()


def test_connections_per_client_are_capped_and_slow_requests_time_out():
    """One client (127.0.0.2) over --max-client-connections gets 429s at once; the others
    (127.0.0.1) are served; a request that has not arrived whole after --request-timeout is
    dropped."""
    s = RunningServer("--max-client-connections", "8", "--request-timeout", "1")
    try:
        host, port = s.host_port()
        socks = []
        for _ in range(20):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.connect((host, port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # and nothing more
            socks.append(sock)
        time.sleep(0.2)
        start = time.monotonic()
        assert requests.get(s.url + "/health", timeout=5).status_code == 200
        assert time.monotonic() - start < 1.0
        for sock in socks:
            sock.setblocking(False)
        refused = []
        for sock in socks:
            try:
                refused.append(sock.recv(4096))
            except BlockingIOError:
                pass
        assert len(refused) == 12
        for answer in refused:
            assert answer.startswith(b"HTTP/1.1 429 "), answer
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 429
        assert s.metric('tandem_http_connections_refused_total{reason="client_limit"}') == 12
        # The 8 admitted ones are dropped once their request is 1 s old; the only connection
        # left open is the one asking (one kept-alive session: a new connection per call would
        # leave the last one still closing on the server's side, counted as open).
        with requests.Session() as session:
            deadline = time.monotonic() + 5
            while (time.monotonic() < deadline
                   and s.metric("tandem_http_connections_open", session=session) > 1):
                time.sleep(0.05)
            assert s.metric("tandem_http_connections_open", session=session) <= 1
        for sock in socks:
            sock.close()
    finally:
        s.stop()


def test_a_client_that_hangs_up_stops_its_non_streaming_request():
    """The engine stops generating within a step of the client closing its socket. On the demo
    model: the tiny test model's steps are shorter than the scheduling delays of a loaded
    machine (a sanitizer build in CI ran 3 of them before the handler's thread woke)."""
    server = RunningServer(model=ROOT / "models" / "demo" / "tandem-demo-moe")
    try:
        aborted = 'tandem_requests_aborted_total{reason="client_gone"}'
        tokens_before = server.metric("tandem_generation_tokens_total")
        sock = raw_post(server, "/v1/completions",
                        {"prompt": "hi", "max_tokens": 480, "ignore_eos": True})
        deadline = time.monotonic() + 60
        while server.metric("tandem_active_sequences") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        steps = server.metric("tandem_engine_steps_total")
        sock.close()
        while server.metric("tandem_active_sequences") > 0:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        # One step may be running as the abort lands, and one may start while /metrics answers.
        assert server.metric("tandem_engine_steps_total") - steps <= 2
        assert server.metric("tandem_generation_tokens_total") - tokens_before < 480
        assert server.metric(aborted) == 1
        assert server.metric("tandem_kv_cache_blocks_used") == 0
        assert server.alive()
    finally:
        server.stop()


def sse_events(response):
    """The data lines of a server-sent event stream, read until it ends."""
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            events.append(line[6:])
    return events


def stream_in_thread(server, results, key, body):
    def run():
        try:
            with requests.post(server.url + "/v1/chat/completions", json=body, stream=True,
                               timeout=30) as r:
                results[key] = sse_events(r)
        except requests.RequestException as e:
            results[key] = e
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_running(server, n):
    deadline = time.monotonic() + 20
    while server.metric("tandem_requests_running") + server.metric("tandem_requests_waiting") < n:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_sigterm_lets_streams_finish_within_the_timeout():
    s = RunningServer("--shutdown-timeout", "20")
    results = {}
    threads = [stream_in_thread(s, results, i, {**CHAT, "max_tokens": 40, "stream": True})
               for i in range(4)]
    wait_running(s, 1)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert s.proc.wait(timeout=20) == 0
    for events in results.values():
        assert events[-1] == b"[DONE]", events
        assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


def test_sigterm_past_the_timeout_ends_each_stream_with_an_error_and_done():
    """One sequence at a time and 16 streams of 480 tokens (7680 steps): at the timeout most
    are still queued. A stream that finished in time ends as usual; every other one ends with
    an error event and [DONE]; the exit status says requests were cut (4)."""
    s = RunningServer("--shutdown-timeout", "0.3", "--max-sequences", "1")
    results = {}
    threads = [stream_in_thread(s, results, i, {**CHAT, "max_tokens": 480, "ignore_eos": True,
                                                 "stream": True})
               for i in range(16)]
    wait_running(s, 16)
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    with pytest.raises(requests.ConnectionError):  # the listener is closed
        requests.get(s.url + "/health", timeout=2)
    for t in threads:
        t.join()
    assert s.proc.wait(timeout=20) == 4
    assert time.monotonic() - start < 0.3 + 3
    cut = 0
    for events in results.values():
        assert isinstance(events, list), events
        assert events[-1] == b"[DONE]", events
        last = json.loads(events[-2])
        if "error" in last:
            assert last["error"]["code"] == 503 and "shutting down" in last["error"]["message"]
            cut += 1
        else:
            assert last["choices"][0]["finish_reason"] == "length", last
    assert cut >= 8


def test_a_second_signal_exits_at_once():
    s = RunningServer("--shutdown-timeout", "60", "--max-sequences", "1")
    results = {}
    threads = [stream_in_thread(s, results, i, {**CHAT, "max_tokens": 480, "ignore_eos": True,
                                                 "stream": True})
               for i in range(16)]
    wait_running(s, 16)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    assert s.proc.poll() is None  # draining: 16 x 480 tokens, one sequence at a time
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=5) == 128 + signal.SIGINT
    for t in threads:
        t.join()


def test_a_model_that_fails_to_load_exits_with_the_error(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    binary = RunningServer.binary()
    proc = subprocess.run([binary, "--model", str(tmp_path), "--port", "0", "--threads", "2",
                           "--no-pin"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "cannot load" in proc.stderr and "config.json" in proc.stderr, proc.stderr
