"""Several machines: `atm worker` processes on distinct hosts share one PostgreSQL URL and
one models/metrics location (MULTI_MACHINE.md).

Each "machine" is a network namespace linked to the root namespace by a veth pair, with
its own host name (a UTS namespace). PostgreSQL listens on 127.0.0.1 only, as on the CI
machines, so the test relays TCP from the root end of each veth link to it: a worker
reaches the database over its link, as it would over a LAN. The working directory is
shared, as an NFS mount would be. Skipped where the machine does not allow network
namespaces (not root, no CAP_NET_ADMIN, no `ip`/`unshare`) or PostgreSQL is not
configured.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from load_support import ATM_EXE, fast_env, problems_in, spawn, stop, wait_exit
from process_support import wait_for, write_gated_method
from sqlalchemy.engine import make_url

from atm import constants as C
from atm import registry

BUDGET = 6

class TcpRelay:
    """Forwards every TCP connection made to ``(host, <port>)`` to ``target`` and notes
    the peers it served (a database host's LAN address, in miniature)."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.peers: set[str] = set()
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, (peer, _port) = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.add(peer)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@dataclass
class Namespace:
    name: str
    veth: str        # the root namespace's end of the link
    root_address: str
    address: str     # the namespace's end


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.200.0.0/13 that no interface of this machine uses."""
    used = _run("ip", "-o", "-4", "addr", "show").stdout
    rng = random.Random(f"{os.getpid()}-{time.time_ns()}")
    for _ in range(200):
        subnet = ipaddress.ip_network(
            f"10.{rng.randrange(200, 208)}.{rng.randrange(256)}.{rng.randrange(0, 256, 4)}/30")
        if f" 10.{subnet.network_address.packed[1]}.{subnet.network_address.packed[2]}." \
                not in used:
            return subnet
    pytest.skip("no free 10.200.0.0/13 subnet for a veth link")


@pytest.fixture
def namespaces() -> Iterator[Callable[[], Namespace]]:
    """Make network namespaces linked to this one by veth pairs; all removed afterwards,
    whatever happens in the test."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
    made: list[Namespace] = []

    def make() -> Namespace:
        tag = uuid.uuid4().hex[:8]
        subnet = _free_subnet()
        root_address, address = (str(a) for a in subnet.hosts())
        space = Namespace(f"atm-{tag}", f"atm{tag}r", root_address, address)
        added = _run("ip", "netns", "add", space.name)
        if added.returncode != 0:
            pytest.skip(f"`ip netns add` is not allowed here: {added.stderr.strip()}")
        made.append(space)
        peer = f"atm{tag}n"
        steps = [
            ("ip", "link", "add", space.veth, "type", "veth", "peer", "name", peer),
            ("ip", "link", "set", peer, "netns", space.name),
            ("ip", "addr", "add", f"{root_address}/30", "dev", space.veth),
            ("ip", "link", "set", space.veth, "up"),
            ("ip", "netns", "exec", space.name, "ip", "addr", "add", f"{address}/30",
             "dev", peer),
            ("ip", "netns", "exec", space.name, "ip", "link", "set", peer, "up"),
            ("ip", "netns", "exec", space.name, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            result = _run(*step)
            if result.returncode != 0:
                pytest.skip(f"cannot set up a veth link ({' '.join(step)}): "
                            f"{result.stderr.strip()}")
        probe = _run("ip", "netns", "exec", space.name, "unshare", "--uts", "hostname",
                     "probe")
        if probe.returncode != 0:
            pytest.skip(f"`unshare --uts` is not allowed here: {probe.stderr.strip()}")
        return space

    yield make
    for space in made:
        _run("ip", "link", "del", space.veth)  # removes both ends
        _run("ip", "netns", "del", space.name)


def in_namespace(space: Namespace, host: str, *command: str) -> list[str]:
    """``command`` run in ``space`` under the host name ``host``."""
    return ["ip", "netns", "exec", space.name, "unshare", "--uts", "sh", "-c",
            'hostname "$0" && exec "$@"', host, *command]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_workers_on_two_hosts_share_one_database_and_one_models_folder(
        namespaces, any_db, workdir, demo):
    method, gate, gate_env = write_gated_method(workdir)
    sys.path.insert(0, str(workdir))  # registering imports the method's class
    try:
        dataset = registry.add_dataset(any_db, demo("iris"))
        run = registry.add_datarun(any_db, dataset.id, budget=BUDGET, methods=[str(method)])
    finally:
        sys.path.remove(str(workdir))

    database = make_url(any_db.url)
    tag = uuid.uuid4().hex[:6]
    hosts = {f"atm-host-a-{tag}": namespaces(), f"atm-host-b-{tag}": namespaces()}
    relays: list[TcpRelay] = []
    workers: list[subprocess.Popen] = []
    logs = [workdir / f"worker-{host}.log" for host in hosts]
    try:
        for (host, space), log in zip(hosts.items(), logs, strict=True):
            relay = TcpRelay(space.root_address, (database.host, database.port or 5432))
            relays.append(relay)
            url = database.set(host=space.root_address, port=relay.port)
            command = in_namespace(space, host, ATM_EXE, "worker", "--sql-url",
                                   url.render_as_string(hide_password=False))
            env = fast_env(**gate_env)
            workers.append(spawn(command, log, workdir, env))
        # one fit of each host is held at the gate, so both hosts take part
        wait_for(lambda: {c.host for c in any_db.get_classifiers(run.id, ["running"])}
                 == set(hosts), what="a running classifier on each host")
        gate.unlink()
        wait_exit(workers, logs, timeout=150)
    finally:
        for process in workers:
            stop(process)
        for relay in relays:
            relay.close()

    assert problems_in(logs) == {}
    # each worker reached the database over its own veth link, not a local socket
    assert [relay.peers for relay in relays] == [{space.address} for space in hosts.values()]
    classifiers = any_db.get_classifiers(run.id)
    assert {c.host for c in classifiers} == set(hosts)
    assert len(classifiers) == BUDGET
    assert all(c.status == C.CLASSIFIER_COMPLETE for c in classifiers)
    finished = any_db.get_datarun(run.id)
    assert (finished.status, finished.n_started) == (C.DATARUN_COMPLETE, BUDGET)
    # both hosts wrote their files to the one shared models/metrics folder
    for classifier in classifiers:
        assert (workdir / classifier.model_location).is_file()
        assert (workdir / classifier.metrics_location).is_file()
