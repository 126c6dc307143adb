"""Runs the project's test stages and prints how long each took.

A stage that fails does not stop the later ones, so one run shows every failure; the exit
status is non-zero when any stage failed. Output of each command streams as it runs, except
where stages run side by side: the molecule and lab stages do (the lab's converge leaves a
core idle for long stretches, and molecule fills it), each printing its log whole as it ends.
QGPT_SERIAL_STAGES=1 runs them one after the other.

QGPT_TEST_BUDGET (seconds, from the start of bin/test, bootstrap included) bounds the whole
run: a command still running when it is spent gets SIGINT (pytest then writes its report,
ansible stops), later steps and scenarios are not started, and the summary still prints,
naming what ran out of time. CI sets it below its hard limit, so a slow run says where the
time went instead of being killed silently.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import threading
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from . import aptcache, bootstrap, image
from .cli import parse_recap
from .run import LabError
from .paths import REPO, VENV

LOGS = REPO / ".cache" / "test-logs"

STAGES = ["lint", "pytest", "frontend", "molecule", "lab"]


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    steps: list[tuple[str, bool, float]] = field(default_factory=list)


# time.monotonic() by which every command must have ended; None: no budget (set by main).
DEADLINE: float | None = None
# After SIGINT, how long a command may take to write its reports before it is killed.
GRACE_SECONDS = 45
# Commands that clean up (molecule destroy, lab down) may run this long past the budget.
CLEANUP_SECONDS = 120
OUT_OF_TIME = "out of time (QGPT_TEST_BUDGET spent)"


def remaining() -> float | None:
    return None if DEADLINE is None else DEADLINE - time.monotonic()


def out_of_time() -> bool:
    left = remaining()
    return left is not None and left <= 0


def _stop(proc: subprocess.Popen) -> str | None:
    """SIGINT to the command's process group (pytest then writes its report, ansible stops);
    SIGKILL after GRACE_SECONDS. Returns what it printed meanwhile, when captured."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def run_bounded(cmd: list[str], cwd: Path, env: dict[str, str], stdout: TextIO | int | None,
                cleanup: bool = False) -> tuple[int, str | None]:
    """Run `cmd` in its own process group until it ends or the budget is spent, then _stop
    it. Returns (exit status, captured output when stdout is PIPE). Without a budget nothing
    is bounded; with one, a cleanup command gets at least CLEANUP_SECONDS, spent or not.
    Ctrl-C on bin/test reaches the command too (its own process group would not see it)."""
    left = remaining()
    if cleanup and left is not None:
        left = max(left, CLEANUP_SECONDS)
    if left is not None and left <= 0:
        return 124, OUT_OF_TIME if stdout == subprocess.PIPE else None
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not None else None,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=left)
        return proc.returncode, out
    except KeyboardInterrupt:
        _stop(proc)
        raise
    except subprocess.TimeoutExpired:
        out = _stop(proc)
    note = f"\n{' '.join(cmd[:3])}...: {OUT_OF_TIME}, stopped\n"
    if stdout == subprocess.PIPE:
        return 124, (out or "") + note
    if stdout is None:
        print(note, end="", flush=True)
    else:
        stdout.write(note)
        stdout.flush()
    return 124, out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PY_COLORS", "0")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["QGPT_LAB_IMAGE"] = image.image_ref()
    env.update({name: image.image_ref(suite) for name, suite in OTHER_IMAGES.items()})
    return env


# Images a scenario may name besides the lab's (which bootstrap builds): the variable its
# molecule.yml names the image by, and the Debian suite. The scenario that needs one builds it
# when it starts (scenario_images), in the molecule stage rather than ahead of every stage.
OTHER_IMAGES = {"QGPT_LAB_IMAGE_DEBIAN12": "bookworm"}


def scenario_images(scenario: Path) -> list[str]:
    """The Debian suites of the other images the scenario's molecule.yml names."""
    text = (scenario / "molecule.yml").read_text()
    return [suite for name, suite in OTHER_IMAGES.items() if "${" + name in text]


def sh(cmd: list[str], cwd: Path = REPO, out: TextIO | None = None, cleanup: bool = False) -> bool:
    """Run a command, its output to this process's stdout, or to `out` (a log) when given;
    bounded by the run's budget (see run_bounded)."""
    header = f"\n$ {' '.join(cmd)}   (in {cwd.relative_to(REPO) if cwd != REPO else '.'})\n"
    if out is None:
        print(header, end="", flush=True)
    else:
        out.write(header)
        out.flush()
    return run_bounded(cmd, cwd, _env(), out, cleanup)[0] == 0


def timed_steps(steps: list[tuple[str, Callable[[], bool]]]) -> tuple[bool, list[tuple[str, bool, float]]]:
    """Each step in turn, timed; once the budget is spent the rest are recorded as failed,
    not run."""
    done = []
    for name, step in steps:
        if out_of_time():
            done.append((f"{name}: not run, {OUT_OF_TIME}", False, 0.0))
            continue
        start = time.monotonic()
        ok = step()
        done.append((name, ok, time.monotonic() - start))
    return all(ok for _, ok, _ in done), done


def stage_lint() -> tuple[bool, list]:
    return timed_steps([
        ("yamllint", lambda: sh(["yamllint", "--strict", "."])),
        ("ansible-lint", lambda: sh(["ansible-lint", "--profile", "production"])),
    ])


def _junit_path(step: str) -> Path:
    return LOGS / (re.sub(r"[^a-z0-9]+", "-", step.lower()) + ".junit.xml")


def junit(step: str) -> list[str]:
    """pytest's --junitxml option for `step`, whose failures the summary then names (the end of
    a long log is often all a reader of CI sees). A report of an earlier run is removed first."""
    LOGS.mkdir(parents=True, exist_ok=True)
    _junit_path(step).unlink(missing_ok=True)
    return [f"--junitxml={_junit_path(step)}"]


def failed_tests(step: str) -> list[str]:
    """'ERROR|FAILED <id>' for every test of the step's JUnit report that did not pass."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(_junit_path(step)).getroot()
    except (OSError, ET.ParseError):
        return []
    found = []
    for case in root.iter("testcase"):
        for kind, label in (("error", "ERROR"), ("failure", "FAILED")):
            if case.find(kind) is not None:
                module = case.get("classname", "").replace(".", "/")
                found.append(f"{label} {module}.py::{case.get('name', '?')}")
                break
    return found


# A bound per test (pytest-timeout, setup and teardown included): a test that hangs fails
# alone, with its stack, instead of spending the run's budget. Bounds, not figures: several
# times the slowest test measured on two cores (2026-12-05: the PostgreSQL failover, 156 s;
# in the pytest stage a preflight batch's setup, 37 s, and the stand-in backend's start,
# bounded at 180 s). A test that needs longer says so with its own pytest.mark.timeout.
TEST_TIMEOUT = {"pytest": 300, "lab tests": 420}


def stage_pytest() -> tuple[bool, list]:
    return timed_steps([
        ("pytest", lambda: sh(["pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "--durations=15",
                               f"--timeout={TEST_TIMEOUT['pytest']}", *junit("pytest"), "tests",
                               "--ignore=tests/lab"])),
    ])


def node_ok() -> bool:
    try:
        bootstrap.check_node()
    except LabError as err:
        print(f"frontend: {err}", flush=True)
        return False
    return True


def stage_frontend() -> tuple[bool, list]:
    web = REPO / "app" / "frontend"
    return timed_steps([
        ("node >= 20.19", node_ok),
        ("npm ci", lambda: sh(["npm", "ci", "--no-audit", "--no-fund"], web)),
        ("vitest", lambda: sh(["npm", "test"], web)),
        ("vite build", lambda: sh(["npm", "run", "build"], web)),
    ])


# Scenarios that take longest start first, so the two-at-a-time pool does not end on one
# long scenario running alone. The rest follow by name. Measured in CI 2026-12-06 (beside the
# lab): backend 1006 s, postgresql 933 (with the standby it no longer has), prometheus_stack
# 567, backup 478, nginx 446, qdrant 399, ollama 269; the others 136-214 s.
LONGEST_FIRST = ("backend", "postgresql", "prometheus_stack", "backup", "nginx", "qdrant", "ollama")


def molecule_scenarios() -> list[Path]:
    """Every role's scenario directories (roles/<role>/molecule/<scenario>), longest first."""
    def order(scenario: Path) -> tuple[int, str]:
        role = scenario.parent.parent.name
        rank = LONGEST_FIRST.index(role) if role in LONGEST_FIRST else len(LONGEST_FIRST)
        return rank, str(scenario)
    # A role may share another's scenario by a link (journal_upload's is journal_remote's):
    # each directory runs once, under the name of the first role that holds it.
    unique: dict[Path, Path] = {}
    for scenario in sorted(scenario_dirs(), key=order):
        unique.setdefault(scenario.resolve(), scenario)
    return list(unique.values())


def scenario_dirs() -> list[Path]:
    """Every roles/<role>/molecule/<scenario> directory, links included."""
    return [p.parent for p in REPO.glob("roles/*/molecule/*/molecule.yml")]


def roles_holding(scenario: Path) -> set[str]:
    """The roles whose scenario this is, its own and those that link to it."""
    return {d.parent.parent.name for d in scenario_dirs() if d.resolve() == scenario.resolve()}


def instance_name(scenario: Path) -> str:
    """The scenario's container name: its own, so scenarios can run side by side.

    A scenario that still names the host `instance` literally in its inventory keeps that
    name (and so takes turns with every other such scenario on the name's lock).
    """
    text = (scenario / "molecule.yml").read_text()
    if re.search(r"^\s*instance:", text, re.MULTILINE):
        return "instance"
    return f"qgpt-mol-{scenario.parent.parent.name}-{scenario.name}".replace("_", "-")


class ScenarioRun:
    """One scenario's commands, their output kept in a log (printed whole when it ends)."""

    def __init__(self, scenario: Path, check_mode: bool = True) -> None:
        self.scenario = scenario
        self.check_mode = check_mode
        self.role_dir, self.name = scenario.parent.parent, scenario.name
        self.instance = instance_name(scenario)
        # Molecule's state for this scenario lives where this run can see it: a container
        # that does not exist then means a fresh start (no state to clear with a destroy).
        self.ephemeral = REPO / ".cache" / "molecule" / f"{self.role_dir.name}-{self.name}"
        self.env = dict(_env(), QGPT_MOLECULE_INSTANCE=self.instance,
                        MOLECULE_EPHEMERAL_DIRECTORY=str(self.ephemeral))
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"molecule-{self.role_dir.name}-{self.name}.log"
        self.log = self.log_path.open("w")

    def sh(self, cmd: list[str], cleanup: bool = False) -> tuple[bool, str]:
        self.log.write(f"\n$ {' '.join(cmd)}   (in {self.role_dir.relative_to(REPO)})\n")
        self.log.flush()
        status, out = run_bounded(cmd, self.role_dir, self.env, subprocess.PIPE, cleanup)
        self.log.write(out or "")
        self.log.flush()
        return status == 0, out or ""

    def container_exists(self) -> bool:
        return subprocess.run(["docker", "container", "inspect", self.instance], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False).returncode == 0

    def check_mode_clean(self) -> bool:
        """`--check --diff` on the converged instance must report changed=0 on every host."""
        ok, out = self.sh(["molecule", "converge", "-s", self.name, "--", "--check", "--diff"])
        recap = parse_recap(out)
        changed = {host: c.get("changed", 0) for host, c in recap.items() if c.get("changed", 0)}
        if ok and recap and not changed:
            return True
        self.log.write(f"check mode was not clean: exit ok={ok}, changed={changed or 'no recap'}\n")
        return False

    def run(self) -> bool:
        """The scenario's own sequence, with a check-mode step after idempotence (unless the
        lab's check-mode pass covers the role); always destroy."""
        # Two bin/test runs on one machine (two checkouts, say) take turns per container name.
        with Path(f"/tmp/querygpt-{instance_name(self.scenario)}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._sequence()
            finally:
                self.sh(["molecule", "destroy", "-s", self.name], cleanup=True)
                self.log.close()

    def _sequence(self) -> bool:
        ok = True
        # What an interrupted run left: its container is destroyed through molecule; without
        # a container, clearing molecule's state is enough (it would otherwise take the
        # removed container for a created one). A fresh machine skips a whole playbook run.
        if self.container_exists():
            self.sh(["molecule", "destroy", "-s", self.name])
        else:
            shutil.rmtree(self.ephemeral, ignore_errors=True)
        for suite in scenario_images(self.scenario):
            if not self.sh([str(REPO / "bin" / "lab"), "image", "--suite", suite])[0]:
                self.log.write(f"FAILED building the {suite} image\n")
                return False
        for action in scenario_sequence(self.scenario):
            # `molecule converge` itself creates and prepares; destroy runs at the end anyway.
            if action in ("destroy", "create", "prepare"):
                continue
            if not self.sh(["molecule", action.replace("_", "-"), "-s", self.name])[0]:
                self.log.write(f"FAILED at {action}\n")
                return False
            if action == "idempotence" and self.check_mode:
                ok = self.check_mode_clean() and ok
        return ok


def scenario_sequence(scenario: Path) -> list[str]:
    data = yaml.safe_load((scenario / "molecule.yml").read_text()) or {}
    base = yaml.safe_load((REPO / "molecule" / "config.yml").read_text())
    return (data.get("scenario") or {}).get("test_sequence") or base["scenario"]["test_sequence"]


def stage_molecule(roles: list[str] | None = None, jobs: int = 2, check_mode: bool = True) -> tuple[bool, list]:
    """Scenarios `jobs` at a time, each in its own container; each log printed as it ends.

    `check_mode` adds `converge --check --diff` (changed=0) after idempotence. The full run
    leaves it to the lab stage, whose check-mode pass of site.yml covers every role with the
    production wiring: a behaviour is tested in one place, not in both.
    """
    scenarios = [s for s in molecule_scenarios() if not roles or roles_holding(s) & set(roles)]
    if roles and not scenarios:
        print(f"molecule: no scenario for roles {', '.join(roles)}", flush=True)
        return False, []
    print_lock = threading.Lock()

    def one(scenario: Path) -> tuple[str, bool, float]:
        label = f"{scenario.parent.parent.name}/{scenario.name}"
        if out_of_time():
            return f"{label}: not run, {OUT_OF_TIME}", False, 0.0
        start = time.monotonic()
        run = ScenarioRun(scenario, check_mode)
        ok = run.run()
        took = time.monotonic() - start
        with print_lock:
            print(f"\n{'-' * 72}\n# molecule {label}: {'ok' if ok else 'FAILED'} in {took:.0f}s "
                  f"(log: {run.log_path.relative_to(REPO)})\n{'-' * 72}", flush=True)
            sys.stdout.write(run.log_path.read_text())
            sys.stdout.flush()
        return label, ok, took

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(one, scenarios))
    return all(ok for _, ok, _ in done), done


# The lab's check-mode pass: every role once, as wired for production, in three runs side by
# side. The monitoring host runs the baseline roles (which every host runs with the same
# variables, its address aside) and its own; one host of each other tier runs its tier's
# roles and its firewall (whose openings differ per group), not the rest of the baseline
# again. Not the second edge and backend (the same roles and variables as the first, zone and
# address aside), not the bastion (nothing but the baseline roles). The tiers are split in
# two runs: their plays follow one another, one host each, and a run mostly waits on its
# one host (2026-12-06: 183 s for the monitoring run beside 261 s for all tiers in one).
BASELINE_TAGS = "common,node_exporter,internal_pki,journal_upload"
CHECK_PASSES = [
    ("site.yml --check --diff, monitoring: changed=0", ["--limit", "monitoring"]),
    ("site.yml --check --diff, data tier: changed=0",
     ["--limit", "qdrant[0]:ollama[0]:postgres[0]", "--skip-tags", BASELINE_TAGS]),
    ("site.yml --check --diff, app and edge tiers: changed=0",
     ["--limit", "edge[0]:backend[0]", "--skip-tags", BASELINE_TAGS]),
]


def side_by_side(commands: list[list[str]], out: TextIO | None = None) -> bool:
    """Run commands at the same time, each writing its own log; the logs go to `out` (or
    stdout) one after the other once all have ended. For commands on disjoint lab hosts."""
    logs = [LOGS / f"side-by-side-{i}.log" for i in range(len(commands))]
    LOGS.mkdir(parents=True, exist_ok=True)

    def one(pair: tuple[list[str], Path]) -> bool:
        cmd, log = pair
        with log.open("w") as handle:
            return sh(cmd, out=handle)

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        results = list(pool.map(one, zip(commands, logs)))
    for log in logs:
        text = log.read_text()
        if out is None:
            print(text, end="", flush=True)
        else:
            out.write(text)
            out.flush()
        log.unlink()
    return all(results)


def stage_lab(keep: bool, out: TextIO | None = None) -> tuple[bool, list]:
    lab = str(REPO / "bin" / "lab")
    steps = [
        ("lab up (fresh fleet, converge)", lambda: sh([lab, "down"], out=out) and sh([lab, "up"], out=out)),
        # site.yml again in check mode on the converged lab: --check --diff must be clean for
        # every role, as wired for production (molecule checks each role's real second run,
        # idempotence). Only site.yml: the lab's own prepare playbook is tooling. The passes
        # touch disjoint hosts and each mostly waits on its hosts: they run side by side.
        (f"site.yml --check --diff, {len(CHECK_PASSES)} runs side by side: changed=0",
         lambda: side_by_side([[lab, "converge", "--assert-idempotent", "--check", "--", *extra]
                               for _, extra in CHECK_PASSES], out=out)),
        ("lab tests", lambda: sh(["pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
                                  f"--timeout={TEST_TIMEOUT['lab tests']}", *junit("lab tests"), "tests/lab"],
                                 out=out)),
    ]
    ok, done = timed_steps(steps)
    if not keep:
        start = time.monotonic()
        down_ok = sh([lab, "down"], out=out, cleanup=True)
        done.append(("lab down", down_ok, time.monotonic() - start))
        ok = ok and down_ok
    return ok, done


def stage_lab_beside(keep: bool) -> Callable[[], tuple[bool, list]]:
    """Start the lab stage in a thread, its output in a log; the returned call waits for it
    and prints the log whole."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / "lab.log"
    outcome: dict[str, tuple[bool, list]] = {}

    def work() -> None:
        with log_path.open("w") as out:
            try:
                outcome["lab"] = stage_lab(keep, out)
            except Exception as err:  # noqa: BLE001 - reported as the stage's failure below
                out.write(f"\nlab stage crashed: {err!r}\n")
                outcome["lab"] = (False, [])

    thread = threading.Thread(target=work, name="lab-stage")
    thread.start()

    def finish() -> tuple[bool, list]:
        thread.join()
        print(f"\n{'-' * 72}\n# lab (ran beside molecule; log: {os.path.relpath(log_path, REPO)})\n{'-' * 72}",
              flush=True)
        sys.stdout.write(log_path.read_text())
        sys.stdout.flush()
        return outcome["lab"]

    return finish


def machine() -> str:
    """Cores, memory and free disk of this machine: timings mean little without them."""
    free = f"{shutil.disk_usage(REPO).free / 2**30:.1f} GiB disk free"
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError):
        return f"{os.cpu_count()} cores, {free}"
    return f"{os.cpu_count()} cores, {kib / 1024 / 1024:.1f} GiB memory, {free}"


def summary(results: list[Result], total: float) -> None:
    print("\n" + "=" * 72)
    print(f"Timing summary ({machine()})")
    for res in results:
        print(f"  {'ok  ' if res.ok else 'FAIL'} {res.name:44} {res.seconds:7.1f}s")
        for name, ok, secs in res.steps:
            print(f"         {'ok  ' if ok else 'FAIL'} {name:39} {secs:7.1f}s")
            failures = [] if ok else failed_tests(name)
            for line in failures[:10]:
                print(f"                {line}")
            if len(failures) > 10:
                print(f"                ... and {len(failures) - 10} more")
    print(f"  total{'':45} {total:7.1f}s")
    passed = sum(r.ok for r in results)
    print(f"stages: {passed} passed, {len(results) - passed} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/test", description=__doc__)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--roles", default="",
                        help="comma-separated roles whose molecule scenarios to run (default: all)")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    results: list[Result] = []
    t0 = time.monotonic() - float(os.environ.get("QGPT_BOOTSTRAP_SECONDS", "0"))
    global DEADLINE
    if os.environ.get("QGPT_TEST_BUDGET"):
        DEADLINE = t0 + float(os.environ["QGPT_TEST_BUDGET"])
    bootstrap.bootstrap()
    if {"molecule", "lab"} & set(wanted):
        aptcache.ensure()
        image.build()
    results.append(Result("bootstrap (packages, venvs, image)", True, time.monotonic() - t0))

    runners: dict[str, Callable[[], tuple[bool, list]]] = {
        "lint": stage_lint, "pytest": stage_pytest, "frontend": stage_frontend,
        # Check mode per scenario only when this run has no lab stage to do it for every role.
        "molecule": lambda: stage_molecule([r for r in args.roles.split(",") if r],
                                           int(os.environ.get("QGPT_MOLECULE_JOBS", "2")),
                                           check_mode="lab" not in wanted),
        "lab": lambda: stage_lab(args.keep_lab),
    }
    beside = {"molecule", "lab"} <= set(wanted) and os.environ.get("QGPT_SERIAL_STAGES", "") in ("", "0")
    for name in STAGES:
        if name not in wanted:
            continue
        if beside and name == "molecule":
            print(f"\n{'#' * 72}\n# stages: molecule and lab, side by side\n{'#' * 72}", flush=True)
            runners["lab"] = stage_lab_beside(args.keep_lab)
        else:
            print(f"\n{'#' * 72}\n# stage: {name}\n{'#' * 72}", flush=True)
        t0 = time.monotonic()
        ok, steps = runners[name]()
        # beside molecule, the lab's own time is its steps' (joining it waits for molecule too)
        seconds = sum(secs for _, _, secs in steps) if beside and name == "lab" else time.monotonic() - t0
        results.append(Result(name, ok, seconds, steps=steps))
    summary(results, time.monotonic() - started + float(os.environ.get("QGPT_BOOTSTRAP_SECONDS", "0")))
    return 0 if all(r.ok for r in results) else 1
