"""The whole path on the lab, through the edges, as a user reaches it.

HTTPS to each edge by its server name, verified against the lab ACME server's (pebble's)
root: the certificate is a real one certbot obtained over HTTP-01. Uploads and questions go
through `/api/` with the lab-tests admin's API token (conftest.py, `lab_identity`); the UI
test drives Debian's chromium against the same edge, logged in through the login page.
Identity itself through the edge is test_lab_access.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import urllib3
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

PROBE = Path(__file__).resolve().parents[2] / "benchmarks" / "httpprobe.py"
sys.path.insert(0, str(PROBE.parent))
import httpprobe  # noqa: E402  (stdlib only: also runs on the lab hosts)
from labview import acme_root_pem  # noqa: E402

SCHEMA = [
    "CREATE TABLE customers (customer_id INT PRIMARY KEY, name TEXT, country TEXT);",
    "CREATE TABLE orders (order_id INT PRIMARY KEY, customer_id INT REFERENCES customers,",
    "    ordered_at TIMESTAMP, total NUMERIC);",
]


def write_pdf(path: Path, lines: list[str]) -> Path:
    pdf = canvas.Canvas(str(path), pagesize=A4)
    y = 800
    for line in lines:
        pdf.drawString(40, y, line)
        y -= 18
    pdf.save()
    return path


@pytest.fixture(scope="module")
def schema_pdf(tmp_path_factory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("pdf") / "edge-schema.pdf", ["Sales database schema", *SCHEMA])


@pytest.fixture(scope="module")
def acme_root(lab, tmp_path_factory) -> Path:
    """Pebble's current root CA, as lab clients trust it."""
    path = tmp_path_factory.mktemp("acme") / "pebble-root.pem"
    path.write_text(acme_root_pem(lab))
    return path


class Edge:
    """HTTPS to one edge by its server name (the lab has no DNS: the address is given). API
    calls (/api/, except /api/health, which needs no identity) carry `token` as a bearer token
    unless `anonymous=True`."""

    def __init__(self, name: str, address: str, ca_file: Path, token: str = "") -> None:
        self.name, self.address = name, address
        self._token = token
        self.pool = urllib3.HTTPSConnectionPool(
            address, 443, server_hostname=name, assert_hostname=name,
            cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file), timeout=urllib3.Timeout(10, 180),
            retries=False)

    def __repr__(self) -> str:  # never the token
        return f"Edge({self.name!r}, {self.address!r})"

    def request(self, method: str, path: str, anonymous: bool = False, **kw) -> urllib3.BaseHTTPResponse:
        headers = {"Host": self.name, **kw.pop("headers", {})}
        if self._token and not anonymous and path.startswith("/api/") and not path.startswith("/api/health"):
            headers.setdefault("Authorization", f"Bearer {self._token}")
        return self.pool.request(method, path, headers=headers, **kw)

    def upload(self, pdf: Path, collection: str, content_type: str = "application/pdf"):
        return self.request("POST", "/api/upload", fields={
            "pdf_file": (pdf.name, pdf.read_bytes(), content_type), "collection_name": collection})

    def query(self, question: str, collection: str):
        return self.request("POST", "/api/query", body=json.dumps({"query": question, "collection_name": collection}),
                            headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def edges(lab, acme_root, lab_token) -> list[Edge]:
    return [Edge(lab.render("nginx_server_name", h), lab.address(h), acme_root, lab_token)
            for h in sorted(lab.groups["edge"])]


def test_each_edge_serves_a_certificate_from_the_lab_acme_server(edges):
    """The handshake verifies against pebble's root and the edge's own name: certbot's real cert."""
    for edge in edges:
        resp = edge.request("GET", "/")
        assert resp.status == 200, edge.name
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "no-cache" in resp.headers.get("Cache-Control", "")
        assert b'<div id="root">' in resp.data


def test_plain_http_redirects_to_https(lab, edges):
    edge = edges[0]
    resp = urllib3.PoolManager().request("GET", f"http://{edge.address}/api/health", headers={"Host": edge.name},
                                         redirect=False)
    assert resp.status == 301
    assert resp.headers["Location"] == f"https://{edge.name}/api/health"


def test_hashed_assets_are_cached_for_long(edges):
    edge = edges[0]
    index = edge.request("GET", "/").data.decode()
    asset = index.split('src="', 1)[1].split('"', 1)[0]
    assert asset.startswith("/assets/"), asset
    resp = edge.request("GET", asset)
    assert resp.status == 200
    assert "immutable" in resp.headers["Cache-Control"]


def test_upload_through_one_edge_then_ask_through_the_other(edges, schema_pdf):
    collection = f"edge_{uuid.uuid4().hex[:8]}"
    first, second = edges
    upload = first.upload(schema_pdf, collection)
    assert upload.status == 200, upload.data
    assert json.loads(upload.data)["chunks"] > 0
    answer = second.query("How many orders did each customer place?", collection)
    assert answer.status == 200, answer.data
    body = json.loads(answer.data)
    assert body["result"].strip()
    assert body["sources"], body
    assert all(s.get("filename") == schema_pdf.name for s in body["sources"]), body["sources"]


def test_a_bad_upload_gets_a_4xx_with_a_reason_through_the_edge(edges, tmp_path):
    bogus = tmp_path / "not-a.pdf"
    bogus.write_text("this is not a PDF")
    resp = edges[0].upload(bogus, "edge_bad")
    assert 400 <= resp.status < 500, resp.status
    assert json.loads(resp.data)["detail"]


def test_a_kept_alive_request_to_a_backend_is_as_fast_as_a_new_connection(lab):
    """From an edge, as nginx reaches its upstreams. A Nagle/delayed-ACK stall cost ~40 ms on
    every kept-alive request (querygpt/transport.py); a few ms of slack stays far from it."""
    edge, backend = sorted(lab.groups["edge"])[0], sorted(lab.groups["backend"])[0]
    subprocess.run(["docker", "cp", str(PROBE), f"{lab.name(edge)}:/var/tmp/httpprobe.py"], check=True)
    done = lab.exec(edge, f"python3 /var/tmp/httpprobe.py keepalive https://{lab.address(backend)}:8000/health --requests 30"
                          " --ca /etc/journal-tls/ca.pem",
                    timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kept_alive_p50"] <= result["new_connection_p50"] + 5, result


def test_a_kept_alive_request_through_the_edge_is_as_fast_as_a_new_connection(edges, acme_root):
    """Through nginx's TLS and its kept-alive upstream connections, as a browser's API calls go.
    A new connection pays a TLS handshake, so this bounds the kept-alive p50 from above; the
    stall it guards against made kept-alive requests slower than new ones."""
    for edge in edges:
        target = httpprobe.Target(f"https://{edge.address}/api/health", ca=str(acme_root), server_name=edge.name)
        result = httpprobe.keepalive(target, requests=30)
        assert result["kept_alive_p50"] <= result["new_connection_p50"] + 5, (edge.name, result)


def test_the_edge_fails_over_when_a_backend_stops(lab, edges):
    """proxy_next_upstream: with one backend down, every request through the edge still answers."""
    backend = sorted(lab.groups["backend"])[0]
    stop = lab.ssh(backend, "sudo systemctl stop querygpt-backend")
    assert stop.returncode == 0, stop.stderr
    try:
        statuses = [edges[0].request("GET", "/api/health").status for _ in range(8)]
    finally:
        start = lab.ssh(backend, "sudo systemctl start querygpt-backend")
        assert start.returncode == 0, start.stderr
    assert statuses == [200] * 8, statuses
    deadline = time.monotonic() + 60
    while lab.exec(lab.groups["edge"][0], f"curl -sf --cacert /etc/journal-tls/ca.pem https://{lab.address(backend)}:8000/ready").returncode != 0:
        assert time.monotonic() < deadline, f"{backend} did not come back"
        time.sleep(1)


def test_nginx_writes_a_new_log_after_logrotate_rotates_it(lab, edges):
    """The edge's access log is rotated (Debian's rule for nginx, run by the logrotate
    roles/common installs), and nginx reopens it on the signal the rule's postrotate sends
    through /run/nginx.pid: a request before the rotation is in access.log.1, one after it in
    the new access.log, so the rotated file stops growing and its space can come back."""
    host, edge = sorted(lab.groups["edge"])[0], edges[0]
    before, after = (f"/logrotate-{uuid.uuid4().hex}" for _ in range(2))
    edge.request("GET", before, anonymous=True)
    rotated = lab.exec(host, "logrotate --force /etc/logrotate.d/nginx")
    assert rotated.returncode == 0, rotated.stderr
    edge.request("GET", after, anonymous=True)
    logs = "/var/log/nginx"
    for _ in range(10):  # the reopen is asynchronous (a signal to the master, then each worker)
        if lab.exec(host, f"grep -q {after} {logs}/access.log").returncode == 0:
            break
        time.sleep(0.5)
    assert lab.exec(host, f"grep -q {after} {logs}/access.log").returncode == 0, "nginx did not write a new access.log"
    assert lab.exec(host, f"grep -q {before} {logs}/access.log.1").returncode == 0, "access.log was not rotated"
    assert lab.exec(host, f"grep -q {after} {logs}/access.log.1").returncode != 0, "nginx kept writing the rotated file"


def test_the_edge_routes_only_the_public_api(lab, edges):
    """Readiness, metrics and the OpenAPI documents answer on a backend's port from inside the
    VPC (here from an edge host), never through the edge; errors the edge generates are JSON
    like the API's, with no internal address."""
    backend = lab.address(sorted(lab.groups["backend"])[0])
    inside = lab.exec(lab.groups["edge"][0], " ; ".join(
        f"curl -s --cacert /etc/journal-tls/ca.pem -o /dev/null -w '%{{http_code}} ' https://{backend}:8000{path}"
        for path in ("/ready", "/metrics", "/openapi.json", "/docs")))
    assert inside.stdout.split() == ["200"] * 4, inside.stdout
    for path in ("/api/ready", "/api/metrics", "/api/openapi.json", "/api/docs"):
        response = edges[0].request("GET", path)
        assert (response.status, response.json()) == (404, {"detail": "Not Found"}), path
        assert response.headers["Content-Type"] == "application/json"
    too_big = edges[0].request("POST", "/api/query", body=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                               headers={"Content-Type": "application/json"})
    assert too_big.status == 413 and too_big.headers["Content-Type"] == "application/json"
    assert "too large" in too_big.json()["detail"] and "10.42." not in too_big.data.decode()


def test_the_waf_blocks_attacks_and_passes_sql_questions(lab, edges, schema_pdf):
    """ModSecurity + CRS on the edge (roles/nginx, "WAF"): CRS test payloads get the JSON 403 and
    land in the edge's journal under the request's id; a question full of SQL and a PDF whose
    name holds a quote (the two narrow exclusions) still reach the backend."""
    edge = edges[0]
    request_id = f"waf-{uuid.uuid4().hex}"
    blocked = {
        "SQL injection in a query string": edge.request(
            "GET", "/?id=1%27%20OR%20%271%27=%271", headers={"X-Request-ID": request_id}),
        "XSS in a query string": edge.request("GET", "/api/health?q=%3Cscript%3Ealert(1)%3C/script%3E"),
        "SQL injection in a form field": edge.request("POST", "/api/upload", fields={
            "pdf_file": (schema_pdf.name, schema_pdf.read_bytes(), "application/pdf"),
            "collection_name": "1' OR '1'='1"}),
        "XSS in the question": edge.query("<script>alert(document.cookie)</script>", "edge_waf"),
    }
    for what, response in blocked.items():
        assert response.status == 403, (what, response.status, response.data[:200])
        assert response.headers["Content-Type"] == "application/json", what
        assert "X-Request-ID" in response.json()["detail"], what
    collection = f"edge_waf_{uuid.uuid4().hex[:6]}"
    quoted = schema_pdf.parent / "O'Brien's schema.pdf"
    quoted.write_bytes(schema_pdf.read_bytes())
    upload = edge.upload(quoted, collection)
    assert upload.status == 200, upload.data
    answer = edge.query("Which customers placed orders? SELECT name FROM customers JOIN orders "
                        "ON orders.customer_id = customers.customer_id; DROP TABLE orders", collection)
    assert answer.status == 200, answer.data
    journal = lab.exec(sorted(lab.groups["edge"])[0], "journalctl -q -o cat -t querygpt-waf-audit --since=-10min")
    assert request_id in journal.stdout, journal.stdout[-2000:]


def test_the_query_endpoint_is_rate_limited(edges):
    """A burst well past the configured rate gets 429s, not a queue of work for the backend."""
    responses = [edges[1].request("POST", "/api/query", body=b"{}", headers={"Content-Type": "application/json"})
                 for _ in range(60)]
    refused = [r for r in responses if r.status == 429]
    assert refused, [r.status for r in responses]
    assert refused[0].json() == {"detail": "Too many requests: slow down and try again", "reason": "edge_rate"}


# --- the UI, in Debian's chromium ----------------------------------------------------------

@pytest.fixture(scope="module")
def browser(edges, acme_root, tmp_path_factory, lab_identity):
    """Headless chromium trusting pebble's root through its own NSS database (no flags that
    switch certificate checks off); the edge's name mapped to its address; logged in as the
    lab-tests admin through the login page (the session cookie then serves every page)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "lab-acme", "-i", str(acme_root)],
                   check=True)
    edge = edges[0]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={home / 'profile'}", f"--host-resolver-rules=MAP {edge.name} {edge.address}"):
        options.add_argument(arg)
    service = Service(executable_path="/usr/bin/chromedriver", env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        log_in(driver, edge, lab_identity)
        yield driver
    finally:
        driver.quit()


def log_in(driver, edge: Edge, identity) -> None:
    """The login page as a user meets it: username, password, "Log in"; done when the form is gone."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"https://{edge.name}/")
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    by_label(driver, "Username").send_keys(identity.username)
    by_label(driver, "Password").send_keys(identity.password)
    button(driver, "Log in").click()
    try:
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    except Exception:  # the page's own words say why (its text never holds the password)
        raise AssertionError(f"the login page stayed: {driver.find_element(By.TAG_NAME, 'body').text[:500]}") from None


def by_label(driver, text: str):
    from selenium.webdriver.common.by import By

    label = driver.find_element(By.XPATH, f"//label[normalize-space()='{text}']")
    return driver.find_element(By.ID, label.get_attribute("for"))


def button(driver, text: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']")


def test_ui_upload_then_question(browser, edges, schema_pdf, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    collection = f"ui_{uuid.uuid4().hex[:8]}"
    wait = WebDriverWait(browser, 180)
    browser.get(f"https://{edges[0].name}/#/upload")
    by_label(browser, "Schema PDF").send_keys(str(schema_pdf))
    field = by_label(browser, "Collection")
    field.clear()
    field.send_keys(collection)
    button(browser, "Upload").click()
    status = browser.find_element(By.CSS_SELECTOR, "[role=status]")
    wait.until(lambda d: "Uploaded" in status.text or "failed" in status.text)
    assert f"into collection “{collection}”" in status.text, status.text

    browser.find_element(By.LINK_TEXT, "Chat").click()
    field = by_label(browser, "Collection")
    field.clear()
    field.send_keys(collection)
    by_label(browser, "Question").send_keys("Which customers placed orders last month?")
    button(browser, "Ask").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=sql-result]")))
    sql = browser.find_element(By.CSS_SELECTOR, "[data-testid=sql-result]").text
    assert sql.strip(), "empty SQL result"
    sources = browser.find_element(By.CSS_SELECTOR, "[data-testid=sources]").text
    assert schema_pdf.name in sources, sources
    browser.save_screenshot(str(tmp_path / "chat.png"))


def test_ui_history_then_documents_then_erase(browser, edges, schema_pdf, tmp_path):
    """The app-state pages as a user meets them: the question just asked is in History, with
    its SQL; the uploaded file is listed under its collection; deleting it asks first, then
    reports what was erased, and the file is no longer listed. Screenshots of each page are kept in
    .cache/screenshots for a person to look at."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(__file__).resolve().parents[2] / ".cache" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)
    collection = f"ui_{uuid.uuid4().hex[:8]}"
    edges[0].upload(schema_pdf, collection)
    edges[0].query("Which customers placed orders last month?", collection)

    browser.get(f"https://{edges[0].name}/#/history")
    wait.until(lambda d: collection in d.find_element(By.TAG_NAME, "main").text)
    assert "Which customers placed orders last month?" in browser.find_element(By.TAG_NAME, "main").text
    browser.save_screenshot(str(shots / "history.png"))

    browser.get(f"https://{edges[0].name}/#/documents")
    wait.until(lambda d: d.find_elements(By.XPATH, f"//button[starts-with(normalize-space(), '{collection}')]"))
    browser.find_element(By.XPATH, f"//button[starts-with(normalize-space(), '{collection}')]").click()
    # Other collections hold a file of the same name: take the Delete button only from this
    # collection's table, once it has loaded.
    wait.until(lambda d: d.find_element(By.ID, "documents-heading").text == f"Documents in “{collection}”")
    delete = wait.until(
        lambda d: d.find_element(
            By.CSS_SELECTOR, f"table.documents[aria-busy='false'] button[aria-label='Delete {schema_pdf.name}']"
        )
    )
    browser.save_screenshot(str(shots / "documents.png"))
    delete.click()
    dialog = browser.find_element(By.CSS_SELECTOR, "[role=alertdialog]")
    assert "every stored version" in dialog.text
    browser.save_screenshot(str(shots / "documents-confirm.png"))
    button(browser, "Delete permanently").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "[role=status]").text.startswith("Deleted "))
    status = browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    assert f"Deleted {schema_pdf.name} from “{collection}”" in status and "stored version" in status, status
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f"button[aria-label='Delete {schema_pdf.name}']"))
    browser.save_screenshot(str(shots / "documents-erased.png"))
