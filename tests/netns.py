"""Hosts for the multi-host tests: Linux network namespaces on one bridge, each with its own
``/etc/hosts`` (``ip netns exec`` mounts ``/etc/netns/NAME/hosts`` over it), so that processes
reach each other by name (``postgres``, ``mlflow``) as docker-compose's services do, and a
host can be cut off (its link down) or killed (every process in it) for real.

Needs root (CI runs as root); elsewhere the tests that use it skip, and in CI they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def available() -> None:
    """Skip (or fail, in CI) where namespaces cannot be made: not root, or no ``ip``."""
    if os.geteuid() == 0 and shutil.which("ip"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("the multi-host tests need root and iproute2 (ip netns) in CI")
    pytest.skip("network namespaces need root and iproute2")


class Network:
    """Namespaces ``NAME`` on one bridge, reachable from each other and from this process by
    name (in the namespaces) or address (here)."""

    def __init__(self, names: list[str]) -> None:
        self.tag = uuid.uuid4().hex[:6]
        # A /24 that no interface here uses, from the tag: tests on one machine get apart.
        self._subnet = f"10.{200 + int(self.tag[:2], 16) % 50}.{int(self.tag[2:4], 16)}"
        self.bridge = f"fmsbr{self.tag}"
        self.names = names
        self.address = {name: f"{self._subnet}.{i + 2}" for i, name in enumerate(names)}
        self._processes: list[subprocess.Popen] = []

    def namespace(self, name: str) -> str:
        return f"fms-{name}-{self.tag}"

    def _host_end(self, name: str) -> str:
        return f"vh{self.names.index(name)}{self.tag}"

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self._subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{address} {name}\n" for name, address in self.address.items()
        )
        for i, name in enumerate(self.names):
            ns, host_end, ns_end = self.namespace(name), self._host_end(name), f"vn{i}{self.tag}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", ns_end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)

    def destroy(self) -> None:
        for name in self.names:
            self.kill(name)
        for p in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        for name in self.names:
            ns = self.namespace(name)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def command(self, name: str, args: list[str], *, user: str | None = None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.namespace(name)]
        return [*prefix, *(["runuser", "-u", user, "--"] if user else []), *args]

    def run(self, name: str, args: list[str], *, user: str | None = None, **kwargs):
        return subprocess.run(self.command(name, args, user=user), **kwargs)

    def start(
        self, name: str, args: list[str], *, log: Path, cwd: Path, env: dict[str, str],
        user: str | None = None,
    ) -> subprocess.Popen:  # fmt: skip
        with open(log, "ab") as out:
            process = subprocess.Popen(
                self.command(name, args, user=user), cwd=cwd, env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._processes.append(process)
        return process

    def pids(self, name: str) -> list[int]:
        done = subprocess.run(
            ["ip", "netns", "pids", self.namespace(name)], capture_output=True, text=True
        )
        return [int(p) for p in done.stdout.split()]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Every process of host ``name`` gets ``sig`` (the host dies); how many there were."""
        pids = self.pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return len(pids)

    def link(self, name: str, *, up: bool) -> None:
        """Take host ``name`` off the network (its cable pulled), or put it back."""
        _ip("link", "set", self._host_end(name), "up" if up else "down")


@contextlib.contextmanager
def network(names: list[str]) -> Iterator[Network]:
    available()
    net = Network(names)
    try:
        net.create()
        yield net
    finally:
        net.destroy()


def start_postgres(net: Network, host: str, directory: Path, *, password: str) -> None:
    """A PostgreSQL cluster of its own in namespace ``host``, listening on its address with
    password authentication, databases ``optuna`` and ``mlflow``; stopped with the network."""
    version = sorted(os.listdir(PG_BIN))[-1]
    bin_dir = PG_BIN / version / "bin"
    directory.mkdir(parents=True)
    shutil.chown(directory, "postgres", "postgres")
    pwfile = directory / "pw"
    pwfile.write_text(password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    data = directory / "data"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(data),
         "-U", "postgres", f"--pwfile={pwfile}", "--auth-local=trust",
         "--auth-host=scram-sha-256"],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {net.address[host].rsplit('.', 1)[0]}.0/24 scram-sha-256\n")
    net.start(
        host,
        [str(bin_dir / "postgres"), "-D", str(data), "-c", f"listen_addresses={net.address[host]}",
         "-c", f"unix_socket_directories={directory}", "-p", "5432"],
        log=directory / "postgres.log", cwd=directory, env={"PATH": os.environ["PATH"]},
        user="postgres",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        ready = net.run(
            host, [str(bin_dir / "pg_isready"), "-h", str(directory), "-p", "5432"],
            user="postgres", capture_output=True,
        )  # fmt: skip
        if ready.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError((directory / "postgres.log").read_text())
        time.sleep(0.5)
    for database in ("optuna", "mlflow"):
        net.run(
            host, [str(bin_dir / "createdb"), "-h", str(directory), "-p", "5432", database],
            user="postgres", check=True, capture_output=True,
        )  # fmt: skip
