"""A full disk (a real ENOSPC on a small tmpfs) and unusable storage directories: the
classifiers are handed back with the reason, the worker backs off instead of spinning,
`atm status` and the log say what is wrong, and the run completes once space is freed."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from process_support import ATM_EXE, wait_for

from atm import constants as C
from atm import registry
from atm.cli import storage_directory_problems
from atm.config import Settings
from atm.models import Classifier

POLL_INTERVAL = 0.2
WINDOW_SECONDS = 6.0
BUDGET = 3
PAUSE = re.compile(r"pausing ([0-9.]+)s")


@contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """Mount a small tmpfs on ``folder`` (skip the test where mounting is not allowed)."""
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                 capture_output=True, text=True, timeout=30)
    except OSError as e:
        pytest.skip(f"cannot run mount: {e}")
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (root on Linux needed): "
                    f"{mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; return it (delete it to free the space)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with pytest.raises(OSError, match="No space left on device"):
        with open(folder / "probe", "wb") as handle:
            handle.write(b"x" * 4096)
    (folder / "probe").unlink()
    return filler


def storage_failures(db, run_id: int) -> list:
    return [c for c in db.get_classifiers(run_id)
            if (c.error_message or "").startswith(C.STORAGE_ERROR_PREFIX)]


@pytest.mark.slow
def test_a_full_disk_hands_classifiers_back_backs_off_and_recovers(
        db, sqlite_url, workdir, demo):
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=BUDGET, methods=["dt"])
    with tmpfs(workdir / "disk", "256k") as disk:
        models, metrics = disk / "models", disk / "metrics"
        models.mkdir()
        metrics.mkdir()
        filler = fill(disk)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATM_")}
        env.update(ATM_POLL_INTERVAL=str(POLL_INTERVAL), ATM_HEARTBEAT_INTERVAL="0.5")
        settings = ["--sql-url", sqlite_url, "--models-dir", str(models),
                    "--metrics-dir", str(metrics)]
        log = workdir / "worker.log"
        with open(log, "w") as log_file:
            worker = subprocess.Popen([ATM_EXE, "worker", *settings], cwd=workdir, env=env,
                                      stdout=log_file, stderr=subprocess.STDOUT)
        try:
            def first_failure() -> list:
                assert worker.poll() is None, log.read_text()
                return storage_failures(db, run.id)

            try:
                first = wait_for(first_failure, timeout=60, what="the first storage failure")
            except pytest.fail.Exception:
                pytest.fail(f"no storage failure within 60 s; worker log:\n{log.read_text()}")
            began = time.monotonic()
            time.sleep(WINDOW_SECONDS)
            failed = storage_failures(db, run.id)
            seconds = time.monotonic() - began
            # Handed back, with the reason, and no budget spent on the full disk.
            assert all(c.status == C.CLASSIFIER_ERRORED for c in failed)
            assert all("No space left on device" in c.error_message and str(models)
                       in c.error_message for c in failed), failed[0].error_message
            assert db.get_datarun(run.id).n_started <= 1  # at most the one being fitted
            assert {p.status for p in db.get_hyperpartitions(run.id)} == {"incomplete"}
            # No spinning: with pauses doubling from the poll interval, at most
            # log2(window / poll + 1) + 1 failures fit in the window (a spinning worker
            # fails once per fit, ~0.2 s).
            in_window = len(failed) - len(first)
            assert 1 <= in_window <= 6, (in_window, seconds)
            # Nothing half-written is left on the full disk.
            assert sorted(p.name for p in disk.rglob("*")) == ["filler", "metrics", "models"]

            status = subprocess.run([ATM_EXE, "status", *settings], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=60)
            assert status.returncode == 1, status.stderr  # no instance runs here: `atm worker`
            lines = status.stdout.splitlines()
            assert lines[0] == "ATM is not running."
            saved = [line for line in lines if "could not be saved" in line]
            assert len(saved) == 1, status.stdout
            reported = re.fullmatch(r"storage problem: (\d+) classifiers could not be saved "
                                    r"in the last 10 min; latest \(classifier \d+ at "
                                    r"[-\d]+ [:\d]+ UTC\): cannot write model file .*",
                                    saved[0])
            assert reported, saved[0]
            assert len(failed) <= int(reported[1]) <= len(storage_failures(db, run.id))
            assert "No space left on device" in saved[0] and str(models) in saved[0]
            assert (f"storage problem: only 0 B free (0.0% of 256 KB) on the disk of the "
                    f"models directory {models} and the metrics directory {metrics}"
                    in lines), status.stdout

            text = log.read_text()
            assert "No space left on device" in text and str(models) in text
            assert "fix the models/metrics directories" in text
            pauses = [float(p) for p in PAUSE.findall(text)]
            assert len(pauses) >= 2 and pauses == [
                min(round(POLL_INTERVAL * 2 ** i, 1), 60.0) for i in range(len(pauses))]
            assert "Traceback" not in text

            filler.unlink()  # the operator frees space: the run completes on its own
            freed = time.monotonic()
            assert worker.wait(timeout=60) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        recovered = time.monotonic() - freed
        counts = db.count_classifiers(run.id)
        failed = storage_failures(db, run.id)
        assert counts == {"running": 0, "complete": BUDGET, "errored": len(failed)}
        assert db.get_datarun(run.id).n_started == BUDGET
        assert db.get_datarun(run.id).status == C.DATARUN_COMPLETE
        stems = {Path(c.model_location).stem
                 for c in db.get_classifiers(run.id, [C.CLASSIFIER_COMPLETE])}
        assert {p.name for p in models.iterdir()} == {f"{s}.model" for s in stems}
        assert {p.name for p in metrics.iterdir()} == {f"{s}.metric" for s in stems}
    print(f"{len(first)} + {in_window} storage failures in {seconds:.1f} s, then "
          f"{len(failed)} in all; recovered in {recovered:.1f} s")


def test_status_names_unwritable_missing_and_full_directories(workdir):
    (workdir / "blocker").write_text("a file where a directory should be")
    settings = Settings(models_dir=str(workdir / "blocker" / "models"),
                        metrics_dir=str(workdir / "metrics" / "new"))
    assert storage_directory_problems(settings) == [
        f"models directory {workdir}/blocker/models cannot be created: "
        f"{workdir}/blocker is not a directory"]  # a missing metrics/new is made by workers

    with tmpfs(workdir / "ro", "64k", read_only=True) as read_only:
        settings = Settings(models_dir=str(read_only), metrics_dir=str(read_only / "sub"))
        assert storage_directory_problems(settings) == [
            f"models directory {read_only} is not writable",
            f"metrics directory {read_only}/sub cannot be created: {read_only} is not "
            f"writable"]

    with tmpfs(workdir / "small", "64k") as small:
        (small / "models").mkdir()
        settings = Settings(models_dir=str(small / "models"), metrics_dir=str(workdir))
        assert storage_directory_problems(settings) == [
            f"only 64 KB free (100.0% of 64 KB) on the disk of the models directory "
            f"{small}/models"]
        fill(small)
        assert storage_directory_problems(settings) == [
            f"only 0 B free (0.0% of 64 KB) on the disk of the models directory "
            f"{small}/models"]


def test_recent_storage_failures_counts_only_recent_storage_hand_backs(any_db, workdir, demo):
    dataset = registry.add_dataset(any_db, demo("iris"))
    run = registry.add_datarun(any_db, dataset.id, budget=5, methods=["dt"])
    partition = run.hyperpartitions[0].id
    ids = [any_db.claim_classifier(run.id, partition, {"max_depth": depth}, "h", f"w{i}", 1)
           for i, depth in enumerate((2, 3, 4, 5))]
    assert any_db.recent_storage_failures(10) == (0, None)
    any_db.hand_back_classifier(ids[0], "w0", "cannot write model file 'old'",
                                prefix=C.STORAGE_ERROR_PREFIX)
    any_db.hand_back_classifier(ids[1], "w1", "cannot write model file 'm': No space left",
                                prefix=C.STORAGE_ERROR_PREFIX)
    any_db.hand_back_classifier(ids[2], "w2", "worker stopped")  # worker lost: not storage
    any_db.mark_classifier_errored(ids[3], "w3", "Traceback ...\nOSError: [Errno 28] No "
                                                "space left on device")  # the fit's own fault
    with any_db.session_scope(write=True) as session:  # the first failure is an hour old
        old = session.get(Classifier, ids[0])
        old.end_time = old.end_time - timedelta(hours=1)
    count, latest = any_db.recent_storage_failures(10)
    assert (count, latest.id) == (1, ids[1])
    assert latest.error_message.startswith(
        "storage error: cannot write model file 'm': No space left")
    assert any_db.recent_storage_failures(120)[0] == 2
