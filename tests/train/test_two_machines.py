"""Two machines on one host: two network namespaces joined by a veth pair, named node1 and node2, each running the
two-machine torchrun command of docs/distributed.md. They share this host's disk, as machines with one file system do.

Needs root and `ip netns`. Where they are not permitted the tests skip and say why; in CI (CI=true) they fail
instead, as the browser test does, so that they always run there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.runs.rundir import read_metrics

from ..support.processes import kill_tree

pytestmark = pytest.mark.netns  # processes comes with the procs fixture (tests/conftest.py)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"  # the page the README links for torchrun
SUBNET = "10.123.45"  # inside the namespaces only: nothing on the host sees it


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


class Machines:
    """node1 and node2: a network namespace each (loopback up, one end of the veth pair, an address), a hosts
    file that names both (ip netns exec mounts /etc/netns/NAME/hosts over /etc/hosts) and, per command, a host name
    of its own (a UTS namespace), so that torchrun's agent on node1 knows itself as the rendezvous host."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = {"node1": f"cnl{tag}n1", "node2": f"cnl{tag}n2"}
        self.addr = {"node1": f"{SUBNET}.1", "node2": f"{SUBNET}.2"}
        self.made: list[str] = []

    def make(self) -> None:
        veth = [f"cv{self.ns['node1'][3:]}", f"cv{self.ns['node2'][3:]}"]
        for name in self.ns.values():
            _ip("netns", "add", name)
            self.made.append(name)
        _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        hosts = "".join(f"{a} {n}\n" for n, a in self.addr.items()) + "127.0.0.1 localhost\n"
        for (node, name), dev in zip(self.ns.items(), veth):
            _ip("link", "set", dev, "netns", name)
            _ip("-n", name, "addr", "add", f"{self.addr[node]}/24", "dev", dev)
            _ip("-n", name, "link", "set", dev, "up")
            _ip("-n", name, "link", "set", "lo", "up")  # gloo and the store also talk over loopback
            etc = Path("/etc/netns") / name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)

    def command(self, node: str, argv: list[str]) -> list[str]:
        """argv run on `node`: in its namespace, under its own host name."""
        return ["ip", "netns", "exec", self.ns[node], "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                node, *argv]

    def remove(self) -> None:
        for name in self.made:  # the veth pair goes with its namespaces
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


@pytest.fixture
def machines(procs):
    m = Machines()
    try:
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
            raise PermissionError("needs root, ip (iproute2) and unshare")
        m.make()
    except (PermissionError, OSError, subprocess.CalledProcessError) as e:
        m.remove()
        why = getattr(e, "stderr", None) or str(e)
        if os.environ.get("CI") == "true":
            pytest.fail(f"network namespaces are needed in CI: {why}")
        pytest.skip(f"network namespaces are not permitted here: {why.strip()}")
    try:
        yield m
    finally:
        procs.close()  # every agent and worker first, then their namespaces
        m.remove()


def two_machine_command() -> list[str]:
    """The two-machine torchrun command of docs/distributed.md, as words."""
    text = DOCS.read_text()
    match = re.search(r"^torchrun --nnodes .*?(?<!\\)$", text, flags=re.M | re.S)
    assert match, "docs/distributed.md has no two-machine torchrun command"
    return shlex.split(match.group(0).replace("\\\n", " "))


def _agent(words: list[str], train_args: list[str]) -> list[str]:
    """The page's torchrun options as written, but 1 process a machine; the test's own training arguments."""
    torchrun = words[1 : words.index("-m")]
    torchrun[torchrun.index("--nproc-per-node") + 1] = "1"
    return [sys.executable, "-m", "torch.distributed.run", *torchrun, "-m", "cnnlab", "train", *train_args]


@pytest.mark.slow
def test_the_two_machine_command_runs_on_two_namespaces_and_survives_losing_one(machines, procs, tmp_path, noise_folder, reliability):
    words = two_machine_command()
    assert "node1:29500" in words and "--max-restarts" in words and words[words.index("--nnodes") + 1] == "1:2"
    name = words[words.index("--run-name") + 1]
    out = tmp_path / "runs"
    train_args = ["--model", "basic_cnn", "--dataset", f"imagefolder:{noise_folder}", "--batch-size", "4",
                  "--epochs", "60", "--run-name", name, "--checkpoint-every", "0.5", "--no-progress", "--out", str(out)]
    cmd = _agent(words, train_args)
    started = time.monotonic()
    agents = {node: procs.start(machines.command(node, cmd), log=tmp_path / f"{node}.log") for node in ("node1", "node2")}
    run = out / name

    def log(node: str) -> str:
        return (tmp_path / f"{node}.log").read_text()

    end = time.monotonic() + 60
    while not ((run / "metrics.csv").exists() and len(read_metrics(run / "metrics.csv")) >= 3):
        assert all(a.poll() is None for a in agents.values()), (log("node1"), log("node2"))
        assert time.monotonic() < end, (log("node1"), log("node2"))
        time.sleep(0.05)
    assert "in 2 processes" in log("node1"), log("node1")
    kill_tree(agents["node2"])  # the second machine is lost: its agent and its worker at once
    lost = time.monotonic()
    try:  # about 50 s on 2 idle cores; generous, as a busy or slower machine takes several times as long
        agents["node1"].wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node1 did not finish the run alone:\n{log('node1')[-3000:]}")
    node1 = log("node1")
    assert agents["node1"].returncode == 0, node1[-3000:]
    assert [d.name for d in out.iterdir()] == [name]
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == list(range(1, 61))
    assert "resuming" in node1 and (run / "summary.json").exists(), node1[-3000:]
    import torch

    assert torch.load(run / "last.pt", weights_only=True)["world_size"] == 1
    reliability("distributed training", "two machines (network namespaces node1 and node2, docs/distributed.md's torchrun command "
                "with --nnodes 1:2 --max-restarts 3); node2 killed (agent and worker) after 3 epochs", 1,
                f"node1's agent started its group again alone, which resumed the run; it ended {time.monotonic() - lost:.0f} s "
                f"after the loss (the whole test {time.monotonic() - started:.0f} s), exit 0, one run directory, each epoch once")


@pytest.mark.slow
def test_a_rendezvous_host_that_never_answers_ends_the_readme_command_within_its_timeout(machines, procs, tmp_path, reliability):
    # node1 is lost before the run starts: its address no longer answers (no ARP reply, so no refusal either).
    # What the user sees is torchrun's own report, bounded by --rdzv-conf read_timeout; cnnlab never starts.
    _ip("-n", machines.ns["node1"], "addr", "flush", "dev", f"cv{machines.ns['node1'][3:]}")
    words = two_machine_command()
    at = words.index("-m")
    words = [*words[:at], "--rdzv-conf", "read_timeout=5", *words[at:]]
    cmd = _agent(words, ["--out", str(tmp_path / "runs")])
    t = time.monotonic()
    p = procs.start(machines.command("node2", cmd))
    out, err = p.communicate(timeout=90)
    waited = time.monotonic() - t
    assert p.returncode != 0 and waited < 45, (waited, err[-3000:])
    # "has failed to connect to any network address of (node1, 29500)" (no route to host), or "has timed out after
    # 5000ms while trying to connect to (node1, 29500)" where the packets are lost on the way
    said = [line for line in err.splitlines() if line.startswith("torch.distributed.DistNetworkError") and "(node1, 29500)" in line]
    last = err.rstrip().splitlines()[-1]
    assert said and "RendezvousConnectionError: The connection to the C10d store has failed" in last, err[-3000:]
    assert not (tmp_path / "runs").exists()
    reliability("distributed training", "the rendezvous host (node1 of docs/distributed.md's command) never answers "
                "(--rdzv-conf read_timeout=5)", 1,
                f"torchrun on node2 ended {waited:.0f} s later, exit {p.returncode}, before cnnlab started; its traceback "
                f"says '{said[0][34:].split(' The client socket has failed to connect to ')[0][:120]}' and ends "
                "with RendezvousConnectionError; no run directory")
