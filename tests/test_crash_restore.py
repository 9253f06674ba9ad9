"""Crash-restore drill: a server shard is SIGKILLed in the middle of training, and a new job
with `restore=` carries on from the last checkpoint as if nothing had happened but the loss
of the updates made since it.

Three real MPI jobs of 2 workers + 2 server shards (tests/scenarios/ps_crash_restore.py,
a small MLP under BSP with momentum and Adam on the servers):
  straight  trains STEPS steps without a break;
  crash     checkpoints every EVERY steps and loses a server at step CRASH_AT (it SIGKILLs
            itself on the first push of that step); the launcher must end the job, well
            within the workers' PS timeout, leaving no process and no /dev/shm file;
  resume    restores the checkpoint and trains on to STEPS.
The checkpoint files, read here without ringps, must hold what worker 0 had at the last
checkpoint; the restore must give exactly that (values and versions), so only the steps
after the checkpoint are lost; and, since every step is deterministic (BSP sums each round in
worker order; data and initial values are functions of step and worker), the resumed run
must end bit for bit where the straight run ends, at the same test accuracy."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mpirun import ROOT, mpiexec_path

sys.path.insert(0, str(ROOT / "tests" / "scenarios"))
import ps_crash_restore as drill  # noqa: E402

RANKS = 4                   # 2 workers + 2 server shards
PS_TIMEOUT = 20             # the workers' bound on waiting for a dead server
MARGIN = 15                 # start-up and tear-down on a loaded machine
JOB_DEADLINE = 120          # hard limit on any one job
SCENARIO = "tests/scenarios/ps_crash_restore.py"
LAST_CHECKPOINT = (drill.CRASH_AT - 1) // drill.EVERY * drill.EVERY


def _shm_files() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _job(mode: str, out) -> dict:
    """Run one job under a hard deadline; its output lines with the time each arrived."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RINGPS_UNDER_MPIEXEC": "1",
           "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([mpiexec_path(), "-n", str(RANKS), sys.executable, SCENARIO, mode,
                             str(out), str(PS_TIMEOUT)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line)
                                                          for line in proc.stdout), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=JOB_DEADLINE)
        ended_by_itself = True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        ended_by_itself = False
    ended = time.monotonic()
    reader.join(timeout=10)
    return {"rc": proc.returncode, "lines": lines, "output": "".join(t for _, t in lines),
            "ended_by_itself": ended_by_itself, "ended": ended, "seconds": ended - start}


@pytest.fixture(scope="module")
def drill_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("drill")
    before = _shm_files()
    jobs = {mode: _job(mode, out) for mode in ("straight", "crash", "resume")}
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", SCENARIO], capture_output=True,
                              text=True).stdout.split()
    new_shm = {n for n in _shm_files() - before if not n.startswith("mpich")}
    return {"out": out, "jobs": jobs, "leftover": leftover, "new_shm": new_shm}


def _load(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def test_the_uninterrupted_and_the_resumed_jobs_run_clean(drill_run):
    for mode in ("straight", "resume"):
        job = drill_run["jobs"][mode]
        assert job["ended_by_itself"] and job["rc"] == 0, f"{mode}:\n{job['output'][-3000:]}"


def test_a_killed_server_ends_the_job_in_time_and_leaves_nothing_behind(drill_run):
    job = drill_run["jobs"]["crash"]
    assert job["ended_by_itself"], f"the job hung after its server was killed:\n{job['output']}"
    killed = [t for t, line in job["lines"] if f"SIGKILL at step {drill.CRASH_AT}" in line]
    assert len(killed) == 1, job["output"][-3000:]
    took = job["ended"] - killed[0]
    assert took < PS_TIMEOUT + MARGIN, f"the job took {took:.1f} s to end after the kill"
    assert job["rc"] != 0
    done = [int(line.split()[3]) for _, line in job["lines"] if line.startswith("worker 0: step ")]
    # the server dies on step CRASH_AT's first push, after it answered step CRASH_AT - 1's
    # pulls; worker 0 may or may not have received its answer before the kill, but it got
    # past the last checkpoint and never reached the crash step
    last_checkpoint = drill.CRASH_AT - 1 - (drill.CRASH_AT - 1) % drill.EVERY
    assert done and last_checkpoint <= done[-1] < drill.CRASH_AT, done[-3:]
    assert "Segmentation fault" not in job["output"]
    assert not drill_run["leftover"], f"processes left running: {drill_run['leftover']}"
    assert not drill_run["new_shm"], f"left in /dev/shm: {drill_run['new_shm']}"
    print(f"crash job: ended {took:.2f} s after the SIGKILL ({job['seconds']:.1f} s in all)")


def _checkpoint_as_files_say(folder) -> dict:
    """Each key's value, versions, clocks and Adam step counts, read straight from the
    manifest and the shard files (numpy and json only)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    parts: dict = {}
    for shard in manifest["shards"]:
        arrays = _load(folder / shard["file"])
        for i, block in enumerate(json.loads(arrays["index"].tobytes())):
            parts.setdefault(block["key"], []).append(
                (block["block"], arrays[f"b{i}.value"], block["version"],
                 arrays[f"b{i}.clocks"], arrays.get(f"b{i}.state.step")))
    found = {}
    for key, blocks in parts.items():
        blocks.sort(key=lambda b: b[0])
        assert [b[0] for b in blocks] == list(range(len(blocks))), key
        found[key] = {"value": np.concatenate([b[1] for b in blocks]),
                      "versions": {b[2] for b in blocks},
                      "clocks": np.concatenate([b[3] for b in blocks]),
                      "adam steps": [b[4] for b in blocks if b[4] is not None]}
    return manifest, found


def test_the_checkpoint_files_hold_what_worker_0_had_at_the_last_checkpoint(drill_run):
    out = drill_run["out"]
    seen = _load(out / "at-checkpoint.npz")
    assert int(seen["step"]) == LAST_CHECKPOINT
    manifest, found = _checkpoint_as_files_say(out / "ckpt")
    assert len(manifest["shards"]) == 2 and all(s["blocks"] for s in manifest["shards"]), \
        "both shards must hold blocks, or the kill would not matter"
    for key in drill.KEYS:
        np.testing.assert_array_equal(found[key]["value"].reshape(seen[key].shape), seen[key],
                                      err_msg=key)
        assert found[key]["versions"] == {LAST_CHECKPOINT}        # one BSP round per step
        assert (found[key]["clocks"] == LAST_CHECKPOINT).all()    # every worker's pushes
    assert found["out"]["adam steps"] and \
        all((s == LAST_CHECKPOINT).all() for s in found["out"]["adam steps"])


def test_the_restore_gives_the_last_checkpoint_and_loses_only_the_steps_after_it(drill_run):
    out = drill_run["out"]
    seen, restored = _load(out / "at-checkpoint.npz"), _load(out / "restored.npz")
    lost = _load(out / "crash-last-step.npz")
    assert int(restored["step"]) == LAST_CHECKPOINT
    assert restored["versions"].tolist() == [LAST_CHECKPOINT] * len(drill.KEYS)
    for key in drill.KEYS:
        np.testing.assert_array_equal(restored[key], seen[key], err_msg=key)
    # what the crash lost: the steps after the checkpoint, which had moved the values on
    assert int(lost["step"]) == drill.CRASH_AT - 1 > LAST_CHECKPOINT
    assert lost["versions"].tolist() == [drill.CRASH_AT - 1] * len(drill.KEYS)
    assert all(not np.array_equal(lost[key], restored[key]) for key in drill.KEYS)


def test_the_resumed_run_ends_where_the_uninterrupted_run_ends(drill_run):
    out = drill_run["out"]
    straight, resumed = _load(out / "straight-final.npz"), _load(out / "resume-final.npz")
    for key in drill.KEYS:
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
    assert resumed["versions"].tolist() == straight["versions"].tolist() == \
        [drill.STEPS] * len(drill.KEYS)
    assert float(resumed["accuracy"]) == float(straight["accuracy"])
    # it learned: labels come from a linear teacher with noise of 0.3 against a signal of
    # standard deviation |teacher| ~ 3, so about 97% are separable (a random net: ~50%)
    assert float(straight["accuracy"]) >= 0.9 > float(straight["initial_accuracy"]) + 0.2
