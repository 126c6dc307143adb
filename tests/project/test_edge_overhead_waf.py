"""benchmarks/edge_overhead.py --without-waf: the edge's nginx.conf has ModSecurity off only
while the measurement runs, and is the same file again afterwards, also when the measurement
fails. The switch's shell commands run for real on a copy of an edge's nginx.conf (nginx and
systemctl are stand-ins that succeed); fast, no lab."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("edge_overhead", REPO / "benchmarks" / "edge_overhead.py")
edge_overhead = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(edge_overhead)

CONF = """http {
    server {
        listen 443 ssl;
        # ModSecurity with the OWASP Core Rule Set: modsecurity on; in this comment stays
        modsecurity on;
        modsecurity_rules_file /etc/nginx/waf/modsecurity.conf;
    }
}
"""


class LocalLab:
    """What the context manager uses of labview.Lab: exec runs the command here."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.commands: list[str] = []

    def name(self, host: str) -> str:
        return f"container-of-{host}"

    def exec(self, host: str, command: str, timeout: int = 20) -> subprocess.CompletedProcess:
        self.commands.append(command)
        return subprocess.run(["bash", "-c", f"PATH={self.bin_dir}:$PATH; {command}"],
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture()
def edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalLab, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("nginx", "systemctl"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF)
    monkeypatch.setattr(edge_overhead, "NGINX_CONF", str(conf))
    monkeypatch.setattr(edge_overhead.time, "sleep", lambda seconds: None)
    return LocalLab(bin_dir), conf


def test_the_waf_is_off_only_inside_and_the_file_is_restored_after_a_failure(edge) -> None:
    lab, conf = edge
    seen = []
    with pytest.raises(RuntimeError, match="measurement failed"):
        with edge_overhead.waf_switched_off(lab, "edge-1"):
            seen.append(conf.read_text())
            raise RuntimeError("measurement failed")
    inside = seen[0].splitlines()
    assert "        modsecurity off;" in inside and "        modsecurity on;" not in inside
    assert "in this comment stays" in seen[0]  # only the directive's line changes
    assert conf.read_text() == CONF
    assert sorted(p.name for p in conf.parent.iterdir()) == ["bin", "nginx.conf"]  # no copy left behind
    assert any("systemctl reload nginx" in c for c in lab.commands[1:])  # reloaded with the file put back


def test_an_edge_without_the_waf_on_is_refused_unchanged(edge) -> None:
    lab, conf = edge
    conf.write_text(CONF.replace("        modsecurity on;\n", ""))
    before = conf.read_text()
    with pytest.raises(SystemExit, match="container-of-edge-1"):
        with edge_overhead.waf_switched_off(lab, "edge-1"):
            pytest.fail("measured without switching anything")
    assert conf.read_text() == before
    assert len(lab.commands) == 1
