"""A real one-node SLURM cluster on this machine for tests: Debian's packages, a config under a temp folder
linked from /etc/slurm, munged + slurmctld + slurmd started here and stopped again (only the daemons this
module started; the links are removed so no later SLURM client looks for a controller that is gone)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
# The job step the slurm plugin starts inside each job (srun) drops SLURM_CONF: the config must be where every
# SLURM command looks by default.
SYSTEM_CONF = Path("/etc/slurm")
MARKER = "tests/slurm/cluster.py"  # named in both templates: tells our config from a real one
CTLD_PORT, SLURMD_PORT = 6817, 6818


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be set up here (not root, no package registry): tests skip with this message."""


@dataclass
class Cluster:
    """A running test cluster: its folder, the client environment (SLURM_CONF) and the daemons it started."""

    root: Path
    env: dict[str, str]
    node: str
    cpus: int
    mem_mb: int
    started: dict[str, subprocess.Popen] = field(default_factory=dict)
    links: list[Path] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (finished ones stay MinJobAge = 600 s): scontrol's fields."""
        out = self.run("scontrol", "-o", "show", "job", check=False)
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if "JobId=" in line]

    def node_state(self) -> str:
        """The node's state as sinfo reports it (idle, mixed, allocated, drained, down, ...)."""
        out = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False)
        return ",".join(sorted(set(out.split())))  # one line per partition

    def log_tail(self, n: int = 20) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop exactly the daemons started here, newest first."""
        if "slurmctld" in self.started and self.started["slurmctld"].poll() is None:
            self.run("scancel", "--user", str(os.getuid()), check=False)
            live = {"CONFIGURING", "RUNNING", "COMPLETING"}  # steps still on the node
            wait_for(lambda: not any(j.get("JobState") in live for j in self.jobs()), timeout=30)
        for name in reversed(list(self.started)):
            stop_process(self.started.pop(name), name)
        while self.links:
            self.links.pop().unlink(missing_ok=True)


def wait_for(ready, timeout: float, interval: float = 0.5) -> bool:
    """Poll ready() until it is true or timeout seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(interval)
    return bool(ready())


def stop_process(proc: subprocess.Popen, name: str, timeout: float = 15) -> None:
    """SIGTERM one daemon by its pid, SIGKILL it if it is still there after timeout seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
        proc.kill()
        proc.wait(timeout)


def install_packages() -> None:
    """Install Debian's SLURM and munge packages where missing; SlurmUnavailable when that cannot happen."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("a test SLURM cluster needs root (apt-get, munged as user munge, slurmd)")
    if all(Path(p).exists() for p in DAEMONS.values()) and shutil.which("sbatch"):
        return
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # a stale package list: refresh once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr.strip()[-500:]}")


def machine() -> tuple[int, int]:
    """(CPUs, memory in MB) of this machine, from /proc."""
    cpus = len(re.findall(r"^processor\s*:", Path("/proc/cpuinfo").read_text(), flags=re.M))
    mem_kb = int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), flags=re.M).group(1))
    return cpus, mem_kb // 1024


def write_config(root: Path, node: str, cpus: int, mem_mb: int) -> Path:
    """Write slurm.conf and gres.conf of a one-node cluster keeping its state in root; slurm.conf's path."""
    values = dict(root=root, node=node, addr="127.0.0.1", cpus=cpus, mem_mb=mem_mb,
                  ctld_port=CTLD_PORT, slurmd_port=SLURMD_PORT)  # fmt: skip
    (root / "etc").mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    for name in ("slurm.conf", "gres.conf"):  # slurmd reads gres.conf next to slurm.conf
        text = Template((HERE / f"{name}.in").read_text()).substitute(values)
        (root / "etc" / name).write_text(text)
    return root / "etc/slurm.conf"


def link_config(etc: Path) -> list[Path]:
    """Symlink slurm.conf and gres.conf from etc into /etc/slurm; the links made (to remove at the end)."""
    links = [SYSTEM_CONF / name for name in ("slurm.conf", "gres.conf")]
    for link in links:
        # a link of ours is left by a test session that was killed; anything else is a real set-up
        ours = link.is_symlink() and (not link.exists() or MARKER in link.read_text())
        if (link.exists() or link.is_symlink()) and not ours:
            raise SlurmUnavailable(f"{link} exists: this machine has its own SLURM set-up; not touching it")
    SYSTEM_CONF.mkdir(parents=True, exist_ok=True)
    for link in links:
        link.unlink(missing_ok=True)
        link.symlink_to(etc / link.name)
    return links


def munge_works() -> bool:
    """Whether a munged answers on the default socket (credentials encode and decode)."""
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munged(root: Path) -> subprocess.Popen | None:
    """Start munged as user munge (creating its key if missing), or None when one already answers."""
    if munge_works():
        return None
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
    MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    for path in (MUNGE_KEY, MUNGE_RUN):
        shutil.chown(path, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    MUNGE_RUN.chmod(0o755)
    proc = launch([DAEMONS["munged"], "--foreground"], root / "munged.log", user="munge", group="munge")
    if not wait_for(munge_works, timeout=20):
        stop_process(proc, "munged")
        raise RuntimeError(f"munged did not come up:\n{(root / 'munged.log').read_text()[-2000:]}")
    return proc


def launch(cmd: list[str], logfile: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start a daemon in the foreground (so its pid is ours to stop), output to logfile."""
    with open(logfile, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, **kwargs)  # fmt: skip


def port_free(port: int) -> bool:
    """Whether nothing listens on this TCP port (another SLURM would answer there)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_cluster(root: Path, timeout: float = 90) -> Cluster:
    """Install (if needed), configure and start a one-node cluster in root; returns it with its node idle."""
    install_packages()
    if not (port_free(CTLD_PORT) and port_free(SLURMD_PORT)):
        raise SlurmUnavailable(f"ports {CTLD_PORT}/{SLURMD_PORT} are taken: another SLURM runs here")
    node = socket.gethostname().split(".")[0]
    cpus, mem_mb = machine()
    conf = write_config(root, node, cpus, mem_mb)
    env = dict(os.environ, SLURM_CONF=str(SYSTEM_CONF / "slurm.conf"))
    cluster = Cluster(root=root, env=env, node=node, cpus=cpus, mem_mb=mem_mb)
    try:
        cluster.links = link_config(conf.parent)
        munged = start_munged(root)
        if munged is not None:
            cluster.started["munged"] = munged
        cluster.started["slurmctld"] = launch([DAEMONS["slurmctld"], "-D"], root / "slurmctld.out", env)
        if not wait_for(lambda: cluster.run("scontrol", "ping", check=False).count("UP") > 0, timeout):
            raise RuntimeError(f"slurmctld did not answer:\n{cluster.log_tail()}")
        cluster.started["slurmd"] = launch([DAEMONS["slurmd"], "-D", "-N", node], root / "slurmd.out", env)
        if not wait_for(lambda: cluster.node_state() == "idle", timeout):
            raise RuntimeError(f"node {node} is {cluster.node_state()!r}, not idle:\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        raise
    log.info("SLURM test cluster up: node %s, %d CPUs, %d MB, config %s", node, cpus, mem_mb, conf)
    return cluster


@contextmanager
def running_cluster(root: Path) -> Iterator[Cluster]:
    """A started cluster for the with-block, stopped afterwards whatever happens (SIGTERM included)."""

    def leave(signum, frame):
        raise SystemExit(f"signal {signum}")  # unwinds to the finally below: no daemon outlives the session

    previous = signal.signal(signal.SIGTERM, leave)
    cluster = None
    try:
        cluster = start_cluster(root)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A one-node SLURM cluster (partitions cpu (default) and gpu, one fake GPU) for the whole session."""
    try:
        with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster
    except SlurmUnavailable as e:
        pytest.skip(str(e))
