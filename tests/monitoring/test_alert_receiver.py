"""The lab's webhook receiver (lab/tools/alert_receiver.py, LAB ONLY): records, serves, clears."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECEIVER = REPO / "lab" / "tools" / "alert_receiver.py"


@pytest.fixture()
def receiver(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tmp_path / "alerts.jsonl"
    proc = subprocess.Popen([sys.executable, str(RECEIVER), "--listen", f"127.0.0.1:{port}", "--store", str(store)])
    base = f"http://127.0.0.1:{port}"
    for _ in range(50):
        try:
            urllib.request.urlopen(f"{base}/-/healthy", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield base, store
    proc.terminate()
    proc.wait(timeout=5)


def call(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_records_serves_and_clears_notifications(receiver):
    base, store = receiver
    notification = {"version": "4", "status": "firing", "alerts": [{"labels": {"alertname": "OllamaDown"}}]}
    assert call("POST", f"{base}/alerts", notification) == (200, {"status": "recorded"})
    status, received = call("GET", f"{base}/alerts")
    assert status == 200 and len(received) == 1
    assert received[0]["payload"] == notification and received[0]["path"] == "/alerts"
    assert json.loads(store.read_text().splitlines()[0])["payload"] == notification
    assert call("DELETE", f"{base}/alerts")[0] == 200
    assert call("GET", f"{base}/alerts") == (200, [])


def test_rejects_a_body_that_is_not_json(receiver):
    base, _ = receiver
    req = urllib.request.Request(f"{base}/alerts", data=b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
