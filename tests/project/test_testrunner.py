"""bin/test's own logic that decides what runs: molecule's fresh start, the lab's check passes."""
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
from labctl import testrunner  # noqa: E402

spec = importlib.util.spec_from_file_location("site_roles", REPO / "plugins" / "filter" / "site_roles.py")
site_roles_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(site_roles_module)
site_roles = site_roles_module.site_roles

SCENARIO = REPO / "roles" / "qdrant" / "molecule" / "default"


@pytest.fixture
def new_run(tmp_path, monkeypatch):
    """A ScenarioRun whose log goes to tmp_path, never over bin/test's real molecule logs."""
    monkeypatch.setattr(testrunner, "LOGS", tmp_path / "logs")
    runs = []
    yield lambda: runs.append(testrunner.ScenarioRun(SCENARIO, check_mode=False)) or runs[-1]
    for run in runs:
        run.log.close()


@pytest.fixture
def scenario_run(new_run, tmp_path, monkeypatch):
    monkeypatch.setattr(testrunner, "scenario_sequence", lambda _: ["destroy", "create", "converge", "destroy"])
    run = new_run()
    run.ephemeral = tmp_path / "ephemeral"
    commands = []
    monkeypatch.setattr(run, "sh", lambda cmd: commands.append(cmd[1]) or (True, ""))
    return run, commands


def test_a_fresh_start_clears_molecule_state_instead_of_running_destroy(scenario_run, monkeypatch):
    run, commands = scenario_run
    (run.ephemeral / "state.yml").parent.mkdir(parents=True)
    (run.ephemeral / "state.yml").write_text("created: true\n")
    monkeypatch.setattr(run, "container_exists", lambda: False)
    assert run._sequence()
    assert commands == ["converge"]
    assert not run.ephemeral.exists(), "a stale 'created: true' would make molecule skip create"


def test_a_leftover_container_is_destroyed_first(scenario_run, monkeypatch):
    run, commands = scenario_run
    monkeypatch.setattr(run, "container_exists", lambda: True)
    assert run._sequence()
    assert commands == ["destroy", "converge"]


UPGRADE_SCENARIO = REPO / "roles" / "common" / "molecule" / "upgrade_debian"


def test_a_scenario_on_another_image_builds_it_first_and_stops_when_it_cannot(tmp_path, monkeypatch):
    assert testrunner.scenario_images(UPGRADE_SCENARIO) == ["bookworm"]
    assert testrunner.scenario_images(SCENARIO) == []
    monkeypatch.setattr(testrunner, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(testrunner, "scenario_sequence", lambda _: ["create", "converge", "verify"])
    run = testrunner.ScenarioRun(UPGRADE_SCENARIO, check_mode=False)
    run.ephemeral = tmp_path / "ephemeral"
    monkeypatch.setattr(run, "container_exists", lambda: False)
    # the image the scenario names is the one built for this recipe
    assert run.env["QGPT_LAB_IMAGE_DEBIAN12"] == testrunner.image.image_ref("bookworm")
    for built, expected in ((True, [["image", "--suite", "bookworm"], ["converge"], ["verify"]]),
                            (False, [["image", "--suite", "bookworm"]])):
        commands = []
        monkeypatch.setattr(run, "sh", lambda cmd, ok=built: commands.append(cmd[1:]) or (ok or cmd[1] != "image", ""))
        assert run._sequence() is built
        assert [c if c[0] == "image" else c[:1] for c in commands] == expected
    run.log.close()


def test_molecule_state_lives_where_the_runner_looks_for_it(new_run):
    run = new_run()
    assert run.env["MOLECULE_EPHEMERAL_DIRECTORY"] == str(run.ephemeral)
    assert run.ephemeral.is_relative_to(REPO / ".cache")


def test_the_check_passes_cover_every_role_of_site_yml():
    """The check-mode runs together reach every role site.yml runs (each with the
    production wiring), and each run names only groups and tags that exist."""
    site = str(REPO / "site.yml")
    groups = ["bastion", "edge", "backend", "qdrant", "ollama", "postgres", "monitoring"]
    every_role = {role for group in groups for role in site_roles([group], site)}
    covered = set()
    for _, extra in testrunner.CHECK_PASSES:
        args = dict(zip(extra[::2], extra[1::2]))
        skipped = set(args.get("--skip-tags", "").split(",")) - {""}
        assert skipped <= every_role, skipped - every_role
        limited = {re.sub(r"\[\d+\]$", "", g) for g in args["--limit"].split(":")}
        assert limited <= set(groups), limited - set(groups)
        covered |= {role for group in limited for role in site_roles([group], site)} - skipped
    assert covered == every_role, every_role - covered
    # they run side by side (testrunner.side_by_side): never on the same host
    limits = [set(dict(zip(extra[::2], extra[1::2]))["--limit"].split(":")) for _, extra in testrunner.CHECK_PASSES]
    groups_of = [{re.sub(r"\[\d+\]$", "", g) for g in limit} for limit in limits]
    for i, mine in enumerate(groups_of):
        for theirs in groups_of[i + 1:]:
            assert not mine & theirs, f"two check passes on {mine & theirs}"


def test_side_by_side_runs_the_commands_at_once_and_keeps_their_logs_apart(tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(testrunner, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(testrunner, "DEADLINE", None)
    # each waits (5 s at most) for the other to have started: only at the same time do both pass
    a, b = tmp_path / "a", tmp_path / "b"
    wait = "for i in $(seq 50); do [ -e {0} ] && exit 0; sleep 0.1; done; exit 1"
    out = io.StringIO()
    ok = testrunner.side_by_side([["bash", "-c", f"touch {a}; echo first; " + wait.format(b)],
                                  ["bash", "-c", f"touch {b}; echo second; " + wait.format(a)]], out=out)
    assert ok, out.getvalue()
    text = out.getvalue()
    assert text.index("first") < text.index("second"), "each command's log whole, in the given order"
    assert not list((tmp_path / "logs").iterdir()), "the logs were handed on"
    assert not testrunner.side_by_side([["true"], ["false"]], out=io.StringIO())


@pytest.fixture
def fake_stages(tmp_path, monkeypatch):
    """bin/test's main() with every stage replaced by one that records when it ran; a stage
    named in `waits_for` returns only once the stages it lists have started (or fails after 10 s)."""
    import threading
    import time

    monkeypatch.setattr(testrunner, "LOGS", tmp_path / "logs")
    monkeypatch.delenv("QGPT_SERIAL_STAGES", raising=False)
    monkeypatch.delenv("QGPT_TEST_BUDGET", raising=False)
    monkeypatch.setattr(testrunner, "DEADLINE", None)
    for module, name in ((testrunner.bootstrap, "bootstrap"), (testrunner.aptcache, "ensure"),
                         (testrunner.image, "build")):
        monkeypatch.setattr(module, name, lambda *a, **k: None)
    started = {name: threading.Event() for name in testrunner.STAGES}
    spans: dict[str, tuple[float, float]] = {}
    waits_for: dict[str, list[str]] = {}

    def fake(name):
        def stage(*args, **kwargs):
            begin = time.monotonic()
            started[name].set()
            ok = all(started[other].wait(10) for other in waits_for.get(name, []))
            spans[name] = (begin, time.monotonic())
            return ok, [(name, ok, 0.01)]
        return stage

    for name in testrunner.STAGES:
        monkeypatch.setattr(testrunner, f"stage_{name}", fake(name))
    return spans, waits_for


def test_the_lab_runs_beside_molecule_and_every_other_stage_alone(fake_stages, capsys):
    spans, waits_for = fake_stages
    # Each of these returns only if the other started while it ran.
    waits_for.update(molecule=["lab"], lab=["molecule"])

    assert testrunner.main([]) == 0

    out = capsys.readouterr().out
    summary = out[out.index("Timing summary"):]
    assert [line.split()[1] for line in summary.splitlines()[2:] if line.startswith("  ok")] == testrunner.STAGES
    # Measured: lint, pytest and frontend beside anything else ran far longer than their share.
    alone = sorted((spans[name] for name in ("lint", "pytest", "frontend")), key=lambda span: span[0])
    assert all(earlier[1] <= later[0] for earlier, later in zip(alone, alone[1:]))
    assert alone[-1][1] <= min(spans["molecule"][0], spans["lab"][0])


def test_serial_stages_run_one_after_the_other(fake_stages, monkeypatch):
    spans, _ = fake_stages
    monkeypatch.setenv("QGPT_SERIAL_STAGES", "1")

    assert testrunner.main([]) == 0

    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    assert [name for name, _ in ordered] == testrunner.STAGES
    assert all(earlier[1][1] <= later[1][0] for earlier, later in zip(ordered, ordered[1:]))


def test_a_scenario_shared_by_a_link_runs_once_and_every_role_is_covered():
    scenarios = testrunner.molecule_scenarios()
    assert len({s.resolve() for s in scenarios}) == len(scenarios)
    covered = {s.resolve() for s in scenarios}
    for role in sorted((REPO / "roles").iterdir()):
        if (role / "molecule" / "default").exists():
            assert (role / "molecule" / "default").resolve() in covered, role.name
    for role, host in (("journal_upload", "journal_remote"), ("node_exporter", "prometheus_stack")):
        shared = REPO / "roles" / role / "molecule" / "default"
        assert shared.is_symlink() and shared.resolve() == REPO / "roles" / host / "molecule" / "default"
        assert (shared / "tests" / f"test_{role}.py").is_file(), f"{role}'s own tests run in {host}'s scenario"


def test_a_role_whose_scenario_is_a_link_selects_the_shared_scenario():
    """`bin/test --stages molecule --roles node_exporter` runs prometheus_stack's scenario."""
    holding = {s.parent.parent.name: testrunner.roles_holding(s) for s in testrunner.molecule_scenarios()}
    assert holding["prometheus_stack"] == {"prometheus_stack", "node_exporter"}
    assert holding["journal_remote"] == {"journal_remote", "journal_upload"}
    assert holding["qdrant"] == {"qdrant"}


def test_the_summary_names_the_tests_a_failed_step_failed_on(tmp_path, monkeypatch, capsys):
    """CI shows the end of the log: the timing summary lists the failed and errored test ids of
    a failed pytest step (an ERROR in a fixture included), read from its JUnit report."""
    monkeypatch.setattr(testrunner, "LOGS", tmp_path)
    option = testrunner.junit("lab tests")
    assert option == [f"--junitxml={tmp_path / 'lab-tests.junit.xml'}"]
    (tmp_path / "lab-tests.junit.xml").write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.lab.test_lab_edge" name="test_ui"><failure message="stale"/></testcase>'
        '<testcase classname="tests.lab.test_lab_edge" name="test_ok"/>'
        '<testcase classname="tests.integration.test_x" name="test_y[a]"><error message="timeout"/></testcase>'
        '</testsuite></testsuites>')
    testrunner.summary([testrunner.Result("lab", False, 9.0, steps=[("lab tests", False, 9.0)])], 9.0)
    out = capsys.readouterr().out
    assert "FAILED tests/lab/test_lab_edge.py::test_ui" in out
    assert "ERROR tests/integration/test_x.py::test_y[a]" in out
    assert "test_ok" not in out
    # a report left by an earlier run is removed before the next one
    testrunner.junit("lab tests")
    assert not (tmp_path / "lab-tests.junit.xml").exists()


@pytest.fixture
def budget(monkeypatch):
    """A run whose budget ends `seconds` from now, with a short grace after SIGINT."""
    monkeypatch.setattr(testrunner, "GRACE_SECONDS", 5)

    def spend(seconds: float) -> None:
        monkeypatch.setattr(testrunner, "DEADLINE", time.monotonic() + seconds)
    return spend


def test_a_command_still_running_when_the_budget_ends_gets_sigint_and_fails(budget, tmp_path):
    """The command sees SIGINT (pytest writes its report then, ansible stops), not a kill, and
    the step fails saying why: CI's hard limit never hits a silent run."""
    budget(1.5)
    script = tmp_path / "slow.py"
    script.write_text("import signal, sys, time\n"
                      "signal.signal(signal.SIGINT, lambda *_: (print('got SIGINT', flush=True), sys.exit(3)))\n"
                      "time.sleep(60)\n")
    begin = time.monotonic()
    status, out = testrunner.run_bounded([sys.executable, str(script)], tmp_path, {}, subprocess.PIPE)
    assert time.monotonic() - begin < 10
    assert status == 124
    assert "got SIGINT" in out and testrunner.OUT_OF_TIME in out


def test_a_command_that_ignores_sigint_is_killed_after_the_grace(budget, tmp_path, monkeypatch):
    budget(0.5)
    monkeypatch.setattr(testrunner, "GRACE_SECONDS", 1)
    script = tmp_path / "stubborn.py"
    script.write_text("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n")
    begin = time.monotonic()
    status, _ = testrunner.run_bounded([sys.executable, str(script)], tmp_path, {}, subprocess.PIPE)
    assert status == 124 and time.monotonic() - begin < 10


def test_once_the_budget_is_spent_later_steps_do_not_run_but_cleanup_does(budget, tmp_path):
    budget(1)
    ran = []
    ok, done = testrunner.timed_steps([
        ("slow", lambda: ran.append("slow") or testrunner.sh(["sleep", "30"])),
        ("next", lambda: ran.append("next") or True),
    ])
    assert not ok and ran == ["slow"]
    assert [(name, passed) for name, passed, _ in done] == [
        ("slow", False), (f"next: not run, {testrunner.OUT_OF_TIME}", False)]
    # a cleanup command (molecule destroy, lab down) still runs once the budget is spent
    assert testrunner.sh(["true"], cleanup=True)
    assert not testrunner.sh(["true"])


def test_without_a_budget_commands_run_to_their_end(tmp_path, monkeypatch):
    monkeypatch.setattr(testrunner, "DEADLINE", None)
    assert testrunner.run_bounded(["sh", "-c", "sleep 1; echo done"], tmp_path, {"PATH": "/usr/bin:/bin"},
                                  subprocess.PIPE) == (0, "done\n")


def test_ctrl_c_on_bin_test_reaches_the_command_in_its_own_process_group(tmp_path, monkeypatch):
    """The command runs in a process group of its own (so the budget can stop all of it); a
    Ctrl-C that interrupts bin/test must still stop it, not leave it running."""
    monkeypatch.setattr(testrunner, "DEADLINE", None)
    monkeypatch.setattr(testrunner, "GRACE_SECONDS", 5)
    mark = tmp_path / "got-sigint"
    script = tmp_path / "wait.py"
    script.write_text("import pathlib, signal, sys, time\n"
                      f"signal.signal(signal.SIGINT, lambda *_: (pathlib.Path({str(mark)!r}).touch(), sys.exit(3)))\n"
                      "print('ready', flush=True)\n"
                      "time.sleep(60)\n")
    original = subprocess.Popen.communicate
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(kwargs.get("timeout"))
        if len(calls) == 1:
            self.stdout.readline()  # the handler is set
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        testrunner.run_bounded([sys.executable, str(script)], tmp_path, {}, subprocess.PIPE)
    assert mark.exists(), "the command did not get SIGINT"


def test_without_a_budget_cleanup_is_not_bounded_either(monkeypatch):
    monkeypatch.setattr(testrunner, "DEADLINE", None)
    seen = []
    monkeypatch.setattr(subprocess.Popen, "communicate", lambda self, timeout=None: (seen.append(timeout), ("", None))[1])
    testrunner.run_bounded(["true"], REPO, {}, subprocess.PIPE, cleanup=True)
    assert seen == [None]
    # with a budget not yet spent, a cleanup gets the rest of it, CLEANUP_SECONDS at least
    monkeypatch.setattr(testrunner, "DEADLINE", time.monotonic() + 10 * testrunner.CLEANUP_SECONDS)
    testrunner.run_bounded(["true"], REPO, {}, subprocess.PIPE, cleanup=True)
    assert seen[1] > 9 * testrunner.CLEANUP_SECONDS


def test_main_takes_the_budget_from_qgpt_test_budget_counting_the_bootstrap(fake_stages, monkeypatch):
    monkeypatch.setenv("QGPT_TEST_BUDGET", "1000")
    monkeypatch.setenv("QGPT_BOOTSTRAP_SECONDS", "100")
    before = time.monotonic()
    assert testrunner.main([]) == 0
    assert before + 900 - 1 <= testrunner.DEADLINE <= time.monotonic() + 900
