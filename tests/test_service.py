"""The `atm` service commands with real processes: start, status, stop, restart,
get_demos and make_config, each in its own temporary directory on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from process_support import ATM_EXE, wait_for

from atm import constants as C
from atm.config import Settings
from atm.database import Database

SERVICE_NAMES = ("atm-supervisor", "atm-server", "atm-worker", "atm-fit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_in(folder: Path) -> list[psutil.Process]:
    """Live ATM service processes whose working directory is ``folder``."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in SERVICE_NAMES and Path(proc.cwd()) == folder and alive(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


class Instance:
    """Runs `atm` commands in one temporary working directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ATM_")}
        # A lost classifier is reaped within seconds, and idle workers poll often.
        self.env.update(ATM_HEARTBEAT_INTERVAL="0.5", ATM_HEARTBEAT_GRACE="3",
                        ATM_POLL_INTERVAL="0.5", OMP_NUM_THREADS="1")

    def atm(self, *args: str, timeout: float = 150.0) -> subprocess.CompletedProcess:
        return subprocess.run([ATM_EXE, *args], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.CompletedProcess:
        result = self.atm("start", "--port", str(self.port), *args)
        assert result.returncode == 0, result.stderr
        return result

    def supervisor(self, pid_file: str = "atm.pid") -> psutil.Process:
        return psutil.Process(int((self.folder / pid_file).read_text()))

    def workers(self, pid_file: str = "atm.pid") -> list[psutil.Process]:
        return [p for p in self.supervisor(pid_file).children()
                if alive(p) and p.name() == "atm-worker"]

    def kill_all(self) -> None:
        procs = processes_in(self.folder)
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)


@pytest.fixture
def instance(tmp_path):
    """An ATM working directory; whatever runs in it is killed afterwards, pass or fail."""
    inst = Instance(tmp_path.resolve())
    yield inst
    inst.kill_all()


def register_demo(inst: Instance, name: str) -> int:
    response = requests.post(f"{inst.url}/api/datasets", timeout=30,
                             json={"class_column": "class", "train_path": f"demos/{name}.csv"})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def start_run(inst: Instance, dataset_id: int, budget: int) -> int:
    response = requests.post(f"{inst.url}/api/run", timeout=30, json={
        "dataset_id": dataset_id, "budget": budget, "methods": ["logreg", "dt"]})
    assert response.status_code in (200, 201), response.text
    return response.json()["datarun_ids"][0]


def wait_complete(inst: Instance, run_id: int) -> dict:
    def done():
        run = requests.get(f"{inst.url}/api/dataruns/{run_id}", timeout=30).json()
        return run if run["status"] == C.DATARUN_COMPLETE else None
    return wait_for(done, what=f"datarun {run_id} to complete")


def not_lost(classifier) -> bool:
    return not (classifier.error_message or "").startswith(C.WORKER_LOST_PREFIX)


def test_walkthrough_start_status_demo_run_stop(instance):
    started = instance.start("-w", "2")
    assert "ATM is running with 2 workers" in started.stdout
    assert f"ATM REST server is listening on {instance.url}" in started.stdout

    status = instance.atm("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:2] == [
        "ATM is running with 2 workers", f"ATM REST server is listening on {instance.url}"]
    service = processes_in(instance.folder)
    assert sorted(p.name() for p in service) == [  # two server processes by default
        "atm-server", "atm-server", "atm-supervisor", "atm-worker", "atm-worker"]

    demos = instance.atm("get_demos")
    assert demos.returncode == 0, demos.stderr
    assert "demos/iris.csv: 150 rows, 4 features, 3 classes" in demos.stdout

    dataset_id = register_demo(instance, "iris")
    run_id = start_run(instance, dataset_id, budget=10)
    wait_complete(instance, run_id)
    listing = requests.get(f"{instance.url}/api/datasets/{dataset_id}/dataruns", timeout=30)
    assert listing.json()["num_results"] == 1

    stopped = instance.atm("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "ATM stopped." in stopped.stdout
    assert not any(alive(p) for p in service)
    assert processes_in(instance.folder) == []
    assert not (instance.folder / "atm.pid").exists()

    db = Database(f"sqlite:///{instance.folder / 'atm.db'}")
    classifiers = [c for c in db.get_classifiers(run_id) if not_lost(c)]
    assert len(classifiers) == 10
    complete = [c for c in classifiers if c.status == C.CLASSIFIER_COMPLETE]
    assert complete, [c.error_message for c in classifiers]
    for classifier in complete:
        assert (instance.folder / classifier.model_location).is_file()
        assert (instance.folder / classifier.metrics_location).is_file()
    log = (instance.folder / "atm.log").read_text()
    for role in ("supervisor", "server", "worker"):
        assert f"[{role} " in log
    assert f"classifier {complete[-1].id} datarun {run_id}" in log


def test_killed_worker_is_replaced_and_budget_stays_exact(instance):
    instance.start("-w", "2")
    assert instance.atm("get_demos").returncode == 0
    run_id = start_run(instance, register_demo(instance, "breast_cancer"), budget=12)
    db = Database(f"sqlite:///{instance.folder / 'atm.db'}", create=False)
    worker_pids = {p.pid for p in instance.workers()}

    def running_classifier():
        running = db.get_classifiers(run_id, [C.CLASSIFIER_RUNNING])
        return next((c for c in running if c.pid in worker_pids), None)

    victim = wait_for(running_classifier, what="a running classifier")
    os.kill(victim.pid, signal.SIGKILL)

    def replaced():
        pids = {p.pid for p in instance.workers()}
        return len(pids) == 2 and victim.pid not in pids
    wait_for(replaced, what="the supervisor to replace the killed worker")
    status = instance.atm("status")
    assert "ATM is running with 2 workers" in status.stdout

    wait_complete(instance, run_id)
    classifiers = db.get_classifiers(run_id)
    counted = [c for c in classifiers if not_lost(c)]
    assert len(counted) == 12
    assert db.get_datarun(run_id).n_started == 12
    killed = db.get_classifier(victim.id)
    if killed.status != C.CLASSIFIER_COMPLETE:  # it may have finished just before the kill
        assert killed.status == C.CLASSIFIER_ERRORED and not not_lost(killed)
    log = (instance.folder / "atm.log").read_text()
    assert f"(pid {victim.pid}) died (killed by SIGKILL)" in log

    assert instance.atm("stop").returncode == 0
    assert processes_in(instance.folder) == []


def test_a_killed_server_process_is_replaced_while_the_other_serves(instance):
    instance.start("-w", "0", "--server-processes", "2")
    servers = [p for p in instance.supervisor().children() if p.name() == "atm-server"]
    assert len(servers) == 2
    victim = servers[0]
    victim.kill()
    victim.wait(timeout=10)
    # The survivor accepts on the same socket: the API keeps answering meanwhile.
    answers = [requests.get(f"{instance.url}/api/datasets", timeout=30).status_code
               for _ in range(40)]
    assert answers == [200] * 40

    def replaced():
        pids = {p.pid for p in instance.supervisor().children()
                if alive(p) and p.name() == "atm-server"}
        return len(pids) == 2 and victim.pid not in pids
    wait_for(replaced, what="the supervisor to replace the killed server process")
    log = (instance.folder / "atm.log").read_text()
    assert f"(pid {victim.pid}) died (killed by SIGKILL)" in log
    assert instance.atm("stop").returncode == 0
    assert processes_in(instance.folder) == []


@pytest.mark.parametrize("option", ["--server-processes", "--server-threads"])
def test_server_processes_and_threads_must_be_at_least_one(instance, option):
    result = instance.atm("start", "--port", str(instance.port), option, "0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith(f"{option} must be at least 1, got 0")
    assert processes_in(instance.folder) == [] and not (instance.folder / "atm.pid").exists()


@pytest.mark.slow
def test_whole_service_killed_mid_run_resumes_at_exact_budget(instance):
    instance.start("-w", "2")
    assert instance.atm("get_demos").returncode == 0
    run_id = start_run(instance, register_demo(instance, "wine"), budget=14)
    db = Database(f"sqlite:///{instance.folder / 'atm.db'}")

    def mid_run():
        counts = db.count_classifiers(run_id)
        return counts["complete"] >= 2 and counts["running"] >= 1
    wait_for(mid_run, what="classifiers complete and running")
    instance.kill_all()  # SIGKILL to every ATM process at once: supervisor, server, workers, fits
    assert not processes_in(instance.folder)
    interrupted = {c.id for c in db.get_classifiers(run_id, [C.CLASSIFIER_RUNNING])}
    assert interrupted and (instance.folder / "atm.pid").exists()  # left behind, stale

    instance.start("-w", "2")
    wait_complete(instance, run_id)
    classifiers = db.get_classifiers(run_id)
    lost = {c.id for c in classifiers if not not_lost(c)}
    assert lost == interrupted  # exactly the interrupted ones were reaped, nothing else
    ran = [c for c in classifiers if not_lost(c)]
    assert len(ran) == 14 and all(c.status == C.CLASSIFIER_COMPLETE for c in ran)
    assert db.get_datarun(run_id).n_started == 14
    # no partial model or metrics file is visible: every file belongs to a complete row
    recorded = {Path(c.model_location).name for c in ran} | {
        Path(c.metrics_location).name for c in ran}
    on_disk = {p.name for folder in ("models", "metrics")
               for p in (instance.folder / folder).iterdir() if not p.name.startswith(".")}
    assert on_disk == recorded
    assert instance.atm("stop").returncode == 0


def test_second_start_is_refused_but_another_pid_file_runs(instance):
    instance.start("--no-server", "-w", "1")
    first = instance.supervisor()

    again = instance.atm("start", "--no-server", "-w", "1")
    assert again.returncode != 0
    assert "ATM is already running!" in again.stderr
    assert f"pid {first.pid}" in again.stderr
    assert instance.supervisor().pid == first.pid

    instance.start("--no-server", "-w", "1", "--pid", "second.pid")
    second = instance.atm("status", "--pid", "second.pid")
    assert second.stdout.splitlines() == ["ATM is running with 1 worker"]
    assert instance.supervisor("second.pid").pid != first.pid

    for pid_file in ("atm.pid", "second.pid"):
        assert instance.atm("stop", "--pid", pid_file).returncode == 0
    assert processes_in(instance.folder) == []


def test_port_in_use_is_reported_and_nothing_runs(instance):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", instance.port))
        taken.listen()
        result = instance.atm("start", "--port", str(instance.port))
    assert result.returncode != 0
    assert f"port {instance.port} on 127.0.0.1 is already in use" in result.stderr
    assert processes_in(instance.folder) == []
    assert not (instance.folder / "atm.pid").exists()


def test_unreachable_database_is_reported_and_nothing_runs(instance):
    result = instance.atm("start", "--no-server",
                          "--sql-url", f"sqlite:///{instance.folder}/no/such/dir/atm.db")
    assert result.returncode != 0
    assert "cannot use the database" in result.stderr
    assert processes_in(instance.folder) == []
    assert not (instance.folder / "atm.pid").exists()


def test_stop_and_status_when_nothing_runs(instance):
    status = instance.atm("status")
    assert (status.returncode, status.stdout) == (1, "ATM is not running.\n")
    stop = instance.atm("stop")
    assert (stop.returncode, stop.stdout) == (0, "ATM is not running.\n")


def test_pid_file_of_another_process_is_not_atm(instance):
    """A pid reused by an unrelated process must not count as ATM, nor be killed."""
    (instance.folder / "atm.pid").write_text(f"{os.getpid()}\n")
    status = instance.atm("status")
    assert (status.returncode, status.stdout) == (1, "ATM is not running.\n")
    assert instance.atm("stop", "--force").returncode == 0
    assert not (instance.folder / "atm.pid").exists()


def test_stale_pid_file_after_kill_9(instance):
    instance.start("--no-server", "-w", "1")
    supervisor = instance.supervisor()
    children = supervisor.children()
    supervisor.kill()
    # The workers notice their supervisor died and exit too: no orphans.
    wait_for(lambda: not any(alive(p) for p in [supervisor, *children]),
             what="the killed instance's processes to exit")
    assert (instance.folder / "atm.pid").exists()
    status = instance.atm("status")
    assert (status.returncode, status.stdout) == (1, "ATM is not running.\n")

    restarted = instance.start("--no-server", "-w", "1")
    assert "removed the stale pid file" in restarted.stderr
    assert instance.supervisor().pid != supervisor.pid
    assert instance.atm("status").returncode == 0
    assert instance.atm("stop").returncode == 0
    assert processes_in(instance.folder) == []


def test_restart_applies_new_options(instance):
    instance.start("--no-server", "-w", "1")
    before = instance.supervisor()
    result = instance.atm("restart", "--no-server", "-w", "2")
    assert result.returncode == 0, result.stderr
    assert "ATM is running with 2 workers" in result.stdout
    assert not alive(before)
    assert len(instance.workers()) == 2
    # --force without waiting: the whole tree goes, whether it stopped or was killed.
    forced = instance.atm("stop", "--force", "--timeout", "0")
    assert forced.returncode == 0, forced.stderr
    assert "ATM stopped." in forced.stdout or "was killed" in forced.stdout
    assert processes_in(instance.folder) == []
    assert not (instance.folder / "atm.pid").exists()


def test_get_demos_and_make_config(instance):
    first = instance.atm("get_demos")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert "demos/wine.csv: 178 rows, 13 features, 3 classes" in lines
    assert "demos/breast_cancer.csv: 569 rows, 30 features, 2 classes" in lines
    assert {p.name for p in (instance.folder / "demos").iterdir()} == {
        "breast_cancer.csv", "iris.csv", "penguins.csv", "wine.csv"}
    (instance.folder / "demos" / "iris.csv").write_text("mine\n")
    again = instance.atm("get_demos")
    assert "kept the file already there" in again.stdout
    assert (instance.folder / "demos" / "iris.csv").read_text() == "mine\n"

    made = instance.atm("make_config")
    assert (made.returncode, made.stdout) == (0, "Generating file atm.yaml\n")
    written = yaml.safe_load((instance.folder / "atm.yaml").read_text())
    assert written == Settings().as_dict()
    refused = instance.atm("make_config")
    assert refused.returncode != 0 and "--force" in refused.stderr

    # --config reads the file: a bad value in it is reported before anything starts.
    written["port"] = "not-a-port"
    (instance.folder / "atm.yaml").write_text(yaml.safe_dump(written))
    bad = instance.atm("start", "--config", "atm.yaml", "--no-server")
    assert bad.returncode != 0 and "setting 'port' must be of type int" in bad.stderr
    assert processes_in(instance.folder) == []


def test_server_runs_in_the_foreground_until_terminated(instance):
    server = subprocess.Popen([ATM_EXE, "server", "--port", str(instance.port)],
                              cwd=instance.folder, env=instance.env, stderr=subprocess.PIPE,
                              text=True)
    try:
        def answers():
            try:
                return requests.get(f"{instance.url}/api/datasets", timeout=5)
            except requests.ConnectionError:
                return None
        response = wait_for(answers, what="the foreground server to answer")
        assert response.json()["num_results"] == 0
        server.terminate()
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0
        assert f"ATM REST server is listening on {instance.url}" in err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_zombie_supervisor_counts_as_not_running(instance):
    """A foreground ATM killed by -9 and not yet reaped by its parent is a zombie."""
    foreground = subprocess.Popen([ATM_EXE, "start", "--foreground", "--no-server", "-w", "1"],
                                  cwd=instance.folder, env=instance.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "ATM is running with 1 worker" in foreground.stdout.readline()
        assert instance.atm("status").returncode == 0
        supervisor = psutil.Process(foreground.pid)
        worker = instance.workers()[0]
        foreground.send_signal(signal.SIGKILL)
        wait_for(lambda: supervisor.status() == psutil.STATUS_ZOMBIE, what="a zombie")
        wait_for(lambda: not alive(worker), what="the worker to follow its supervisor")
        status = instance.atm("status")
        assert (status.returncode, status.stdout) == (1, "ATM is not running.\n")
        assert supervisor.status() == psutil.STATUS_ZOMBIE  # still unreaped: the case tested
    finally:
        if foreground.poll() is None:
            foreground.kill()
        foreground.wait()
