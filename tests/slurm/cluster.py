"""A throwaway single-node Slurm cluster on this machine, for the tests: Debian's slurm-wlm and munge.

`start(root)` installs the two packages with apt-get where they are missing, starts munged (unless one already
answers), slurmctld and slurmd, with slurm.conf, state, pid files and logs under `root`, waits until the node is
idle and returns a `Cluster`; its `env` (SLURM_CONF) points sbatch, squeue and scontrol at it. `stop(cluster)`
cancels its jobs and ends, by process id, only the daemons that `start` started.

slurmd runs "configless": it fetches slurm.conf from slurmctld and links /run/slurm/conf to its copy, which is
where srun inside a job finds the cluster. SLURM_CONF cannot carry it there: snakemake's jobstep executor drops
every SLURM_* variable but the job's identity before it calls srun. /run/slurm/conf is removed again at stop.

Where the machine cannot run Slurm (not root, no apt-get, the packages cannot be installed, a Slurm already
running or configured), `start` raises `Unavailable` with the reason; a cluster that is installed but does not
come up raises `RuntimeError` with the daemons' logs.

Accounting, where it can be had: Debian's slurmdbd and mariadb-server (installed like the others). `start` then
also runs a MariaDB server of its own (data, socket and logs under `root`, TCP on 127.0.0.1 only) and slurmdbd,
and slurmctld keeps every job's record there, so `sacct` answers as on a real cluster: state, time limit, elapsed
time, requested memory and peak memory (jobacct_gather/linux, sampled every second). Where those two packages
cannot be installed or do not start, the cluster runs without accounting and says why (`Cluster.no_accounting`).

From a shell: `python tests/slurm/cluster.py start DIR` prints `export SLURM_CONF=...`; `... stop DIR` ends it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
PROGRAMS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel", "munged", "munge",
            "unmunge")
ACCOUNTING_PACKAGES = ("slurmdbd", "mariadb-server")
ACCOUNTING_PROGRAMS = ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
RUN_DIR = Path("/run/slurm")
MUNGE_RUN_DIR = Path("/run/munge")
CTLD_PORT = 6817
DBD_PORT = 6819
DB_PORT = 3307  # not MySQL's 3306, where a server of the machine's own may listen
DB_USER, DB_PASSWORD, DB_NAME = "slurm", "slurm-test-cluster", "slurm_acct_db"
# Finished jobs stay listed in squeue for a day: the squeue status command of the Snakemake plugin relies on it.
MIN_JOB_AGE = 86400


class Unavailable(Exception):
    """This machine cannot run a Slurm cluster for the tests; the message says why."""


@dataclass
class Cluster:
    root: Path
    node: str
    cpus: int
    memory_mb: int
    pids: dict[str, int] = field(default_factory=dict)  # the daemons this cluster started: name -> pid
    no_accounting: str = ""  # why this cluster keeps no job records ("" where sacct answers)
    remove: list[str] = field(default_factory=list)  # system paths this cluster created, removed at stop
    procs: list[subprocess.Popen] = field(default_factory=list, repr=False)  # to reap them

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def accounting(self) -> bool:
        return not self.no_accounting

    @property
    def env(self) -> dict[str, str]:
        """The environment for commands that talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH_PATH}

    def run(self, *cmd: str, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True,
                              timeout=timeout).stdout


def start(root: Path) -> Cluster:
    if os.geteuid() != 0:
        raise Unavailable("running slurmctld and slurmd needs root")
    install()
    refuse_other_slurm()
    hardware = node_hardware()
    cluster = Cluster(root=Path(root).resolve(), node=socket.gethostname().split(".")[0],
                      cpus=int(hardware["CPUs"]), memory_mb=int(hardware["RealMemory"]))
    try:
        start_munge(cluster)
        for name in ("state", "spool", "log"):
            (cluster.root / name).mkdir(parents=True, exist_ok=True)
        # slurm.conf first: sacctmgr finds slurmdbd through it.
        cluster.conf.write_text(slurm_conf(cluster, hardware))
        try:
            install(ACCOUNTING_PACKAGES, ACCOUNTING_PROGRAMS)
            start_accounting(cluster)
        except (Unavailable, RuntimeError, subprocess.SubprocessError) as e:
            for name in ("slurmdbd", "mariadbd"):
                end(cluster.pids.pop(name, None), name)
            cluster.no_accounting = str(e) or type(e).__name__
            cluster.conf.write_text(slurm_conf(cluster, hardware))
        if not RUN_DIR.exists():
            cluster.remove.append(str(RUN_DIR))
        cluster.remove.insert(0, str(RUN_DIR / "conf"))
        daemon(cluster, "slurmctld", ["-D", "-f", str(cluster.conf)], cluster.env)
        node_env = {k: v for k, v in cluster.env.items() if k != "SLURM_CONF"}
        daemon(cluster, "slurmd", ["-D", "--conf-server", f"127.0.0.1:{CTLD_PORT}"], node_env)
        wait_until_idle(cluster)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def stop(cluster: Cluster) -> None:
    """Cancel the cluster's jobs and end the daemons it started; what is already gone is skipped."""
    if alive(cluster.pids.get("slurmctld"), "slurmctld"):
        subprocess.run([which("scancel"), "--user", str(os.geteuid())], env=cluster.env, capture_output=True,
                       timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and steps_of(cluster):
            time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
        end(cluster.pids.get(name), name)
    # Job steps outlive slurmd; this cluster's have its log folder open.
    for pid in steps_of(cluster):
        end(pid, "slurmstepd")
    for proc in cluster.procs:
        proc.poll()
    for path in map(Path, cluster.remove):
        if path.is_symlink() and Path(os.readlink(path)).is_relative_to(cluster.root):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    cluster.pids.clear()
    save(cluster)


def install(packages: tuple[str, ...] = PACKAGES, programs: tuple[str, ...] = PROGRAMS) -> None:
    """apt-get install the packages when a program is missing; Unavailable when that cannot be done. Debian's
    policy-rc.d on these machines keeps the packages' own services (MariaDB's) from starting."""
    missing = [p for p in programs if which(p) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise Unavailable(f"{', '.join(missing)} missing and no apt-get to install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"`{' '.join(cmd)}` did not finish in 10 min") from None
        if proc.returncode != 0:
            raise Unavailable(f"`{' '.join(cmd)}` failed: {(proc.stdout + proc.stderr).strip()[-600:]}")
    still = [p for p in programs if which(p) is None]
    if still:
        raise Unavailable(f"{', '.join(still)} still missing after installing {' '.join(packages)}")


def start_accounting(cluster: Cluster) -> None:
    """A MariaDB server in `root/db` with the accounting database's user, and slurmdbd on it."""
    for port in (DB_PORT, DBD_PORT):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise Unavailable(f"port {port} on 127.0.0.1 is taken: not the test cluster's accounting")
    root = cluster.root
    if not (root / "db").exists():
        subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={root}/db", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
    daemon(cluster, "mariadbd", ["--no-defaults", f"--datadir={root}/db", "--user=root", f"--socket={root}/db.sock",
                                 f"--port={DB_PORT}", "--bind-address=127.0.0.1", f"--pid-file={root}/mariadbd.pid",
                                 f"--log-error={root}/log/mariadbd.log", "--innodb-buffer-pool-size=64M"],
           dict(os.environ))
    sql = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
           f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';")
    mariadb = [which("mariadb"), "--no-defaults", f"--socket={root}/db.sock", "-u", "root", "-e"]
    wait_for(lambda: subprocess.run([*mariadb, "SELECT 1"], capture_output=True, timeout=10).returncode == 0, 60,
             "MariaDB did not answer", cluster)
    subprocess.run([*mariadb, sql], check=True, capture_output=True, timeout=30)
    dbd_conf = root / "slurmdbd.conf"  # slurmdbd reads it beside slurm.conf (SLURM_CONF), mode 0600 or it refuses
    dbd_conf.write_text(f"""\
# Written by tests/slurm/cluster.py: the test cluster's accounting daemon.
AuthType=auth/munge
DbdHost={cluster.node}
DbdAddr=127.0.0.1
DbdPort={DBD_PORT}
SlurmUser=root
LogFile={root}/log/slurmdbd.log
PidFile={root}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser={DB_USER}
StoragePass={DB_PASSWORD}
StorageLoc={DB_NAME}
""")
    dbd_conf.chmod(0o600)
    daemon(cluster, "slurmdbd", ["-D"], cluster.env)

    def answers() -> bool:
        if not alive(cluster.pids["slurmdbd"], "slurmdbd"):
            raise RuntimeError(f"slurmdbd exited at start\n{logs(cluster)}")
        try:
            return subprocess.run([which("sacctmgr"), "-n", "list", "cluster"], env=cluster.env,
                                  capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    wait_for(answers, 60, "slurmdbd did not answer", cluster)
    listed = cluster.run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").split()
    if "testcluster" not in listed:
        cluster.run("sacctmgr", "-i", "add", "cluster", "testcluster")


def refuse_other_slurm() -> None:
    """A Slurm already running or configured here is someone else's: leave it alone."""
    for name in ("slurmctld", "slurmd"):
        pids = pids_named(name)
        if pids:
            raise Unavailable(f"a {name} is already running (pid {pids[0]}); not touching another cluster")
    if SYSTEM_CONF.exists():
        raise Unavailable(f"{SYSTEM_CONF} exists: srun in the jobs would read it instead of the test cluster's")
    link = RUN_DIR / "conf"
    if link.is_symlink():
        # No slurmd runs (above), so the link is one a killed slurmd left behind, whether or not its target (a
        # spool in an old pytest folder) still exists.
        link.unlink()
    elif link.exists():
        raise Unavailable(f"{link} exists: another configless slurmd's configuration")


def node_hardware() -> dict[str, str]:
    """What slurmd detects on this machine (`slurmd -C`): CPUs, sockets, cores, threads, RealMemory."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    fields = dict(item.split("=", 1) for item in out.splitlines()[0].split())
    return {key: fields[key] for key in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore",
                                         "RealMemory")}


def slurm_conf(cluster: Cluster, hardware: dict[str, str]) -> str:
    root = cluster.root
    hw = " ".join(f"{key}={value}" for key, value in hardware.items())
    accounting = (f"""\
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={DBD_PORT}""" if cluster.accounting else """\
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none""")
    return f"""\
# Written by tests/slurm/cluster.py: a single-node test cluster.
ClusterName=testcluster
SlurmctldHost={cluster.node}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmctldParameters=enable_configless
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
{accounting}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MinJobAge={MIN_JOB_AGE}
NodeName={cluster.node} NodeAddr=127.0.0.1 {hw} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_munge(cluster: Cluster) -> None:
    """Use the munged that answers, or start one as the munge user."""
    if munge_works():
        return
    if pids_named("munged"):
        raise Unavailable("a munged is running but does not answer `munge -n | unmunge`; not touching it")
    MUNGE_RUN_DIR.mkdir(mode=0o755, exist_ok=True)
    shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run([which("mungekey"), "--create"], check=True, capture_output=True, timeout=30)
        shutil.chown(key, "munge", "munge")
    daemon(cluster, "munged", ["--foreground"], dict(os.environ), user="munge")
    wait_for(munge_works, 10, "munged did not answer", cluster)


def munge_works() -> bool:
    munge = subprocess.run([which("munge"), "-n"], capture_output=True, timeout=10)
    if munge.returncode != 0:
        return False
    return subprocess.run([which("unmunge")], input=munge.stdout, capture_output=True, timeout=10).returncode == 0


def daemon(cluster: Cluster, name: str, args: list[str], env: dict[str, str], user: str | None = None) -> None:
    """Start a daemon in the foreground, so that its pid is the one Popen returns; its output under log/."""
    (cluster.root / "log").mkdir(parents=True, exist_ok=True)
    with open(cluster.root / "log" / f"{name}.out", "w") as out:
        proc = subprocess.Popen([which(name), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, user=user, group=user)
    cluster.procs.append(proc)
    cluster.pids[name] = proc.pid
    save(cluster)
    # Just after Popen returns, /proc may still show the forked Python under the pid.
    deadline = time.monotonic() + 10
    while comm(proc.pid) != name and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until_idle(cluster: Cluster) -> None:
    def idle() -> bool:
        for name in ("slurmctld", "slurmd"):
            if not alive(cluster.pids[name], name):
                raise RuntimeError(f"{name} exited at start\n{logs(cluster)}")
        proc = subprocess.run([which("sinfo"), "-h", "-o", "%T"], env=cluster.env, capture_output=True, text=True,
                              timeout=10)
        return proc.stdout.strip() == "idle"

    wait_for(idle, 60, "the node did not become idle", cluster)


def wait_for(ready, seconds: float, message: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{message} within {seconds} s\n{logs(cluster)}")
        time.sleep(0.5)


def logs(cluster: Cluster) -> str:
    """The tails of the daemons' logs, for error messages."""
    return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
                     for path in sorted(cluster.root.glob("log/*")))


def save(cluster: Cluster) -> None:
    (cluster.root / "cluster.json").write_text(json.dumps({"pids": cluster.pids, "remove": cluster.remove,
                                                          "no_accounting": cluster.no_accounting}))


def load(root: Path) -> Cluster:
    """The cluster that `start(root)` left in `root`, to stop it from another process."""
    root = Path(root).resolve()
    state = json.loads((root / "cluster.json").read_text())
    return Cluster(root=root, node=socket.gethostname().split(".")[0], cpus=0, memory_mb=0, pids=state["pids"],
                   remove=state["remove"], no_accounting=state.get("no_accounting", ""))


def which(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def alive(pid: int | None, name: str) -> bool:
    """Whether `pid` runs `name` and is not a zombie, so that a reused pid is never taken for ours."""
    if pid is None or comm(pid) != name:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pids_named(name: str) -> list[int]:
    return sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and alive(int(p.name), name))


def end(pid: int | None, name: str, grace: float = 15) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, while `pid` still runs `name`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid, name):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and alive(pid, name):
            time.sleep(0.2)
    if alive(pid, name):
        raise RuntimeError(f"{name} (pid {pid}) survived SIGKILL")


def steps_of(cluster: Cluster) -> list[int]:
    """slurmstepd processes of this cluster's jobs: those with a file under its folder open."""
    pids = []
    for pid in pids_named("slurmstepd"):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if Path(os.readlink(fd)).is_relative_to(cluster.root):
                    pids.append(pid)
                    break
            except OSError:
                pass
    return pids


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(f"usage: {argv[0]} start|stop DIR", file=sys.stderr)
        return 2
    if argv[1] == "start":
        try:
            cluster = start(Path(argv[2]))
        except Unavailable as e:
            print(f"no Slurm cluster: {e}", file=sys.stderr)
            return 1
        if cluster.no_accounting:
            print(f"no accounting (sacct): {cluster.no_accounting}", file=sys.stderr)
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        stop(load(Path(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
