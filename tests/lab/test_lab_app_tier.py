"""The backend on the lab: served to the edge only, and answering from the lab's data tier."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from labview import auth_header_file

PROBE = "timeout 3 bash -c '</dev/tcp/{address}/{port}' && echo open || echo closed"
# The internal CA on every host (roles/internal_pki) and the name every backend's certificate
# carries, as the site sets it (group_vars/all/tls.yml).
INTERNAL_CA = "/etc/journal-tls/ca.pem"
BACKEND_TLS_NAME = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "group_vars" / "all" / "tls.yml").read_text()
)["internal_tls_backend_name"]
SCHEMA = [
    "CREATE TABLE customers (customer_id INT PRIMARY KEY, name TEXT, country TEXT);",
    "CREATE TABLE orders (order_id INT PRIMARY KEY, customer_id INT REFERENCES customers,",
    "    ordered_at TIMESTAMP, total NUMERIC);",
]


@pytest.fixture(scope="module")
def schema_pdf(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pdf") / "lab-schema.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4)
    y = 800
    for line in ["Sales database schema", *SCHEMA]:
        pdf.drawString(40, y, line)
        y -= 18
    pdf.save()
    return str(path)


def test_backend_port_is_open_to_the_edge_only(lab):
    for backend in lab.groups["backend"]:
        address = lab.address(backend)
        for edge in lab.groups["edge"]:
            assert lab.exec(edge, PROBE.format(address=address, port=8000)).stdout.strip() == "open"
        bastion = lab.groups["bastion"][0]
        assert lab.exec(bastion, PROBE.format(address=address, port=8000)).stdout.strip() == "closed"


def test_every_backend_is_ready(lab):
    edge = lab.groups["edge"][0]
    for backend in lab.groups["backend"]:
        ready = lab.exec(edge, f"curl -s --cacert {INTERNAL_CA} -w ' %{{http_code}}' https://{lab.address(backend)}:8000/ready")
        assert ready.stdout.endswith(" 200"), f"{backend}: {ready.stdout}"


def test_backends_serve_only_tls_verified_by_the_internal_ca(lab):
    """docs/architecture.md, "Internal TLS": each backend's certificate verifies against the
    internal CA for its address (Prometheus scrapes by address) and for the one name every
    backend's certificate carries (nginx's proxy_ssl_name); plaintext gets no answer."""
    edge = lab.groups["edge"][0]
    for backend in lab.groups["backend"]:
        address = lab.address(backend)
        plain = lab.exec(edge, f"curl -s --max-time 10 -o /dev/null -w '%{{http_code}}' http://{address}:8000/health")
        assert plain.returncode != 0 and plain.stdout == "000", (backend, plain)
        for check in (f"-verify_ip {address}", f"-verify_hostname {BACKEND_TLS_NAME} -servername {BACKEND_TLS_NAME}"):
            verified = lab.exec(edge, f"openssl s_client -connect {address}:8000 -CAfile {INTERNAL_CA} {check}"
                                      " -verify_return_error -brief </dev/null 2>&1").stdout
            assert "Verification: OK" in verified, (backend, check, verified)


def test_upload_on_one_az_then_query_on_the_other(lab, schema_pdf, lab_token):
    """Both backends share the data tier: what one indexes, the other answers from (both as the
    lab-tests admin: its token works on every backend)."""
    edge = lab.groups["edge"][0]
    first, second = sorted(lab.groups["backend"])
    collection = f"lab_{uuid.uuid4().hex[:8]}"
    auth = f"-H @{auth_header_file(lab, edge, lab_token)}"
    subprocess.run(["docker", "cp", schema_pdf, f"{lab.name(edge)}:/var/tmp/lab-schema.pdf"], check=True)
    upload = lab.exec(edge, (
        f"curl -s {auth} -F 'pdf_file=@/var/tmp/lab-schema.pdf;type=application/pdf' -F collection_name={collection} "
        f"--cacert {INTERNAL_CA} https://{lab.address(first)}:8000/upload"
    ), timeout=120)
    body = json.loads(upload.stdout)
    assert body.get("chunks", 0) > 0, body
    query = json.dumps({"query": "How many orders did each customer place?", "collection_name": collection})
    answer = lab.exec(edge, (
        f"curl -s {auth} -H 'Content-Type: application/json' -d '{query}' --cacert {INTERNAL_CA} https://{lab.address(second)}:8000/query"
    ), timeout=120)
    result = json.loads(answer.stdout)
    assert "orders" in result["result"].lower() or "customers" in result["result"].lower(), result
    assert result["sources"] and result["sources"][0]["filename"] == "lab-schema.pdf"


def test_each_backend_runs_the_default_number_of_workers(lab):
    """backend_workers' default: one per vCPU plus one, at most 8, each a uvicorn worker
    process under the service's main process."""
    for backend in lab.groups["backend"]:
        nproc = int(lab.ssh(backend, "nproc").stdout)
        wanted = min(nproc + 1, 8)
        env = lab.ssh(backend, "sudo grep -E '^QUERYGPT_WORKERS=' /etc/querygpt/backend.env").stdout.strip()
        assert env == f"QUERYGPT_WORKERS={wanted}", f"{backend}: {env!r}"
        pid = lab.ssh(backend, "systemctl show querygpt-backend --property MainPID --value").stdout.strip()
        # uvicorn spawns its workers (multiprocessing's spawn_main); the resource tracker, also
        # a child of the main process, is not a worker
        workers = lab.ssh(backend, f"pgrep -P {pid} -f spawn_main").stdout.split()
        assert len(workers) == wanted, f"{backend}: {len(workers)} worker processes under {pid}, expected {wanted}"
