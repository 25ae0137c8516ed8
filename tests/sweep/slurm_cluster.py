"""A real single-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd.

Debian's `slurmctld`, `slurmd` and `munge` packages (installed by `.ci/run`), started as root
with a generated `slurm.conf` (2 CPUs, one partition, proctrack/linuxproc and task/none: no
cgroups needed) in a private directory, on free loopback ports. Nothing on the machine's own
SLURM or munge configuration is read or changed: clients find this cluster through SLURM_CONF.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, Optional

BINARIES = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol')


def missing_reason() -> Optional[str]:
    """Why a cluster cannot be started here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f'SLURM test cluster needs {", ".join(absent)} (Debian: slurmctld slurmd munge slurm-client)'
    if os.geteuid() != 0:
        return 'SLURM test cluster runs its daemons as root'
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, root: str, cpus: int = 2) -> None:
        self.root = root
        self.cpus = cpus
        self.conf = os.path.join(root, 'slurm.conf')
        self.env: Dict[str, str] = {}

    def _write_conf(self) -> None:
        r, host = self.root, socket.gethostname()
        conf = f"""
ClusterName=algoperf-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MpiDefault=none
KillWait=20
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, 'w') as f:
            f.write(conf.lstrip())

    def start(self, timeout: float = 60.0) -> 'LocalSlurm':
        for d in ('munge', 'state', 'spool', 'log'):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        munge = os.path.join(self.root, 'munge')
        os.chmod(munge, 0o700)
        key = os.path.join(munge, 'munge.key')
        with open(key, 'wb') as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        subprocess.run(['munged', f'--key-file={key}', f'--socket={munge}/munge.sock',
                        f'--pid-file={munge}/munged.pid', f'--log-file={munge}/munged.log',
                        f'--seed-file={munge}/seed', '--force'], check=True, capture_output=True)
        self._write_conf()
        self.env = {**os.environ, 'SLURM_CONF': self.conf}
        subprocess.run(['slurmctld', '-f', self.conf], check=True, env=self.env, capture_output=True)
        subprocess.run(['slurmd', '-f', self.conf], check=True, env=self.env, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(['sinfo', '-h', '-o', '%T'], env=self.env, capture_output=True, text=True).stdout
            if out.strip() in ('idle', 'mixed', 'allocated'):
                return self
            time.sleep(0.5)
        raise RuntimeError(f'SLURM test cluster did not come up; see {self.root}/log')

    def scontrol(self, *args: str) -> str:
        return subprocess.run(['scontrol', *args], env=self.env, capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        # Jobs first, so no slurmstepd outlives the cluster.
        subprocess.run(['scancel', '--full', '--user=root'], env=self.env, capture_output=True, check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(['squeue', '-h'], env=self.env, capture_output=True, text=True).stdout
            if not out.strip():
                break
            time.sleep(0.5)
        for pid_file in ('slurmd.pid', 'slurmctld.pid', 'munge/munged.pid'):
            path = os.path.join(self.root, pid_file)
            try:
                with open(path) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        time.sleep(1)
