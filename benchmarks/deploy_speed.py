#!/usr/bin/env python3
"""What a deploy costs on the running lab (`bin/lab up` first): prints

  1. a no-op `site.yml` (the lab is converged: changed=0 is checked and printed);
  2. gathering facts from the same hosts (`ansible all -m setup`), and the ratio 1/2;
  3. rolling out a new backend release on its own (`playbooks/app.yml`): the release is
     built by bin/build from a temporary worktree of HEAD whose version is bumped to
     <version>.post<N>, then the lab is rolled back to the release it ran (timed too).

The ratio is the figure docs/deploy-speed.md tracks (target: 20x or less). A measurement,
not a test: exits non-zero only when a run fails or the no-op run changes something.

    .venv/bin/python benchmarks/deploy_speed.py [--skip-release] [--mitogen]

--mitogen runs every step with Mitogen's mitogen_linear strategy (`pip install mitogen`
into .venv first) on an already converged lab, the evaluation docs/deploy-speed.md records.
The project does not use Mitogen: it refuses a new host's key at a first deploy, and
ansible-core deprecates third-party strategies (see there).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
INVENTORY = "inventories/lab"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


STRATEGY: dict[str, str] = {}  # extra environment for every run (--mitogen)


def env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_FORCE_COLOR="0", **STRATEGY)


def use_mitogen() -> None:
    try:
        import ansible_mitogen  # optional: only for this evaluation
    except ImportError:
        raise SystemExit(f"--mitogen: Mitogen is not installed: {VENV_BIN}/pip install mitogen") from None
    STRATEGY.update(ANSIBLE_STRATEGY_PLUGINS=str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
                    ANSIBLE_STRATEGY="mitogen_linear")


def timed(args: list[str], log: Path) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}); see {log}")
    return elapsed, done.stdout


def recap(output: str) -> tuple[int, int]:
    """(tasks run, hosts changed) from a playbook's output: TASK headers and the recap."""
    tasks = len(re.findall(r"^TASK \[", output, re.M))
    changed = sum(int(m.group(3)) for m in RECAP.finditer(output))
    return tasks, changed


def new_release(workdir: Path) -> Path:
    """A real new backend release: HEAD with the version bumped, through bin/build."""
    tree = workdir / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), "HEAD"], check=True,
                   capture_output=True)
    init = tree / "app/backend/src/querygpt/__init__.py"
    text = init.read_text()
    version = re.search(r'__version__ = "([^"]+)"', text).group(1)
    bumped = f"{version}.post{int(time.time())}"
    init.write_text(text.replace(f'__version__ = "{version}"', f'__version__ = "{bumped}"'))
    (tree / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run([str(tree / "bin/build"), "--out", str(workdir / "release")], cwd=tree, env=env(), check=True,
                   capture_output=True)
    return workdir / "release" / f"querygpt-{bumped}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-release", action="store_true", help="only the no-op and facts figures")
    parser.add_argument("--mitogen", action="store_true", help="every run with Mitogen's mitogen_linear strategy")
    args = parser.parse_args()
    if args.mitogen:
        use_mitogen()
        print("strategy: mitogen_linear")
    logs = Path(tempfile.mkdtemp(prefix="deploy-speed-"))
    started = time.monotonic()

    noop, out = timed([str(VENV_BIN / "ansible-playbook"), "site.yml", "-i", INVENTORY], logs / "noop.log")
    tasks, changed = recap(out)
    facts, _ = timed([str(VENV_BIN / "ansible"), "all", "-i", INVENTORY, "-m", "ansible.builtin.setup"],
                     logs / "facts.log")
    hosts = len(RECAP.findall(out))
    print(f"no-op site.yml:       {noop:7.1f} s  ({tasks} tasks, {hosts} hosts, changed={changed})")
    print(f"facts from all hosts: {facts:7.1f} s")
    print(f"ratio:                {noop / facts:7.1f}x  (target <= 20x)")

    if not args.skip_release:
        workdir = Path(tempfile.mkdtemp(prefix="deploy-speed-release-"))
        try:
            release = new_release(workdir)
            current = (ROOT / ".lab/release/current").resolve()
            rollout, out = timed([str(VENV_BIN / "ansible-playbook"), "playbooks/app.yml", "-i", INVENTORY,
                                  "-e", f"querygpt_release_dir={release}"], logs / "rollout.log")
            back, _ = timed([str(VENV_BIN / "ansible-playbook"), "playbooks/app.yml", "-i", INVENTORY,
                             "-e", f"querygpt_release_dir={current}"], logs / "rollback.log")
            print(f"backend release:      {rollout:7.1f} s  (playbooks/app.yml, {release.name}, "
                  f"changed={recap(out)[1]})")
            print(f"back to {current.name}: {back:7.1f} s")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(workdir / "tree")],
                           check=False, capture_output=True)
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"logs in {logs}; took {time.monotonic() - started:.0f} s")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
