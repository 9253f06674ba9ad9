"""What ringps does when a peer goes quiet, so that no job hangs for ever (NCCL's watchdog,
Horovod's stall inspector, `python -m mpi4py`).

    stage          when                                      what happens                 where
    stall warning  a wait passes timeout / 2                 one line naming the ranks    Transport._overdue
                                                             not heard from, once per
                                                             collective
    PeerTimeout    a wait passes the timeout                 raised to the caller, naming  Transport._overdue
                                                             collective, sequence number
                                                             and the missing ranks
    teardown       an exception nobody handles (any thread;  one line per rank, then the  install(): excepthook
                   the torch backend's thread always)        whole job ends               torch_backend
    exit guard     the process exits after a timeout that    the job ends instead of      install(): atexit
                   was caught                                waiting in MPI_Finalize for
                                                             the frozen rank

`RINGPS_ON_TIMEOUT=abort` (the default) does all of this; `raise` keeps the raise-only
behaviour for callers that recover themselves (no teardown, no exit guard; warnings stay).
The job ends through MPI_Abort under an MPI launcher (it kills every rank, frozen ones too)
and through `os._exit` under torchrun, after leaving the reason in the group's store (a
waiting peer sees it when its wait fails and says so; the agent stops whoever is left) and
SIGKILLing any rank on this host that is stopped (SIGSTOP would make it sit out the
agent's 30 s SIGTERM grace). After a
timeout the ending rank first waits GRACE_SECONDS, so that the peers waiting for the same
rank print their own line before the job goes.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time

DEFAULT_TIMEOUT = 300.0    # seconds: RINGPS_TIMEOUT when unset, the one deadline of every wait
MODES = ("abort", "raise")
GRACE_SECONDS = 2.0     # after a timeout, before ending the job: the peers that waited for
                        # the same rank reach their own deadline and print their own line
log = logging.getLogger("ringps")

ABORT_KEY = "ringps/abort"         # the store-based abort (torchrun): who ended the job, why

_state = {"installed": False, "failures": [], "stores": [], "peer_pids": set()}


def default_timeout() -> float:
    """RINGPS_TIMEOUT, else DEFAULT_TIMEOUT (read here: no MPI needed, torchrun has none)."""
    return float(os.environ.get("RINGPS_TIMEOUT", DEFAULT_TIMEOUT))


def mode() -> str:
    """RINGPS_ON_TIMEOUT, checked (a typo must not silently turn teardown off)."""
    value = os.environ.get("RINGPS_ON_TIMEOUT", "abort").strip().lower() or "abort"
    if value not in MODES:
        raise ValueError(f"ringps: RINGPS_ON_TIMEOUT={value!r} is not one of {', '.join(MODES)}")
    return value


def ranks(missing) -> str:
    """'rank 3' / 'ranks 1, 3' / 'no rank in particular'."""
    missing = sorted(set(missing))
    if not missing:
        return "no rank in particular"
    return f"rank{'s' * (len(missing) > 1)} {', '.join(map(str, missing))}"


def stalled(message: str) -> None:
    """A stall warning: to the "ringps" logger (stderr unless the application configured
    logging), flushed at once so it shows before the deadline."""
    log.warning(message)
    for handler in log.handlers or [logging.lastResort]:
        if handler is not None:
            handler.flush()


def failed(error: BaseException) -> BaseException:
    """Remember a timeout (a peer that may never come) for the exit guard, even one the
    caller catches; returns it, to be raised."""
    _state["failures"].append(str(error))
    return error


def install() -> None:
    """Set up teardown and the exit guard once per process (Communicator does it)."""
    if _state["installed"]:
        return
    _state["installed"] = True
    previous_hook, previous_thread_hook = sys.excepthook, threading.excepthook

    def excepthook(kind, error, traceback):
        previous_hook(kind, error, traceback)
        if not ends_job():
            return
        captured = getattr(sys.stderr, "getvalue", None)   # torch's hook captures stderr to
        if captured is not None and sys.stderr is not sys.__stderr__:   # prefix it: show it
            sys.__stderr__.write(captured())               # now, the job ends before torch does
        end_job(error)

    def thread_excepthook(args):
        previous_thread_hook(args)
        if args.exc_value is not None:
            end_job(args.exc_value, where=f"thread {args.thread.name if args.thread else '?'}")

    sys.excepthook, threading.excepthook = excepthook, thread_excepthook
    atexit.register(_exit_guard)


def end_job(error: BaseException, *, where: str = "", always: bool = False) -> None:
    """One line naming this rank and what failed, then end every rank of the job. Does
    nothing in raise mode (unless `always`) or in a job of one process."""
    if not ends_job(always):
        return
    place = f" ({where})" if where else ""
    reason = f"{type(error).__name__}: {str(error).removeprefix('ringps: ')}"
    sys.stderr.flush()
    sys.__stderr__.write(f"ringps: rank {_world_rank()}{place}: {reason}; ending the job "
                     f"(RINGPS_ON_TIMEOUT=raise leaves it to the caller)\n")
    sys.__stderr__.flush()
    if isinstance(error, TimeoutError):
        time.sleep(GRACE_SECONDS)
    end_now(reason)


def ends_job(always: bool = False) -> bool:
    """Whether an unhandled failure here ends the job (abort mode, more than one process)."""
    return (always or mode() == "abort") and _world_size() > 1


def _exit_guard() -> None:
    if _state["failures"] and mode() == "abort" and _world_size() > 1:
        sys.stderr.write(f"ringps: rank {_world_rank()}: exiting after a timeout "
                         f"({_state['failures'][-1].removeprefix('ringps: ')}); ending the job "
                         f"rather than waiting in MPI_Finalize for the rank that never came\n")
        sys.stderr.flush()
        time.sleep(GRACE_SECONDS)
        end_now(_state["failures"][-1])


def _mpi():
    from .rendezvous import under_mpi
    if not under_mpi():
        return None
    from mpi4py import MPI
    return MPI if MPI.Is_initialized() and not MPI.Is_finalized() else None


def _world_size() -> int:
    mpi = _mpi()
    if mpi is not None:
        return mpi.COMM_WORLD.Get_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def _world_rank() -> int:
    mpi = _mpi()
    return mpi.COMM_WORLD.Get_rank() if mpi is not None else int(os.environ.get("RANK", "0"))


def use_store(store) -> None:
    """A torchrun group's store, where an ending rank leaves its reason for the others."""
    _state["stores"].append(store)


def abort_reason(store) -> str:
    """What the rank that ended the job left in `store` ('' if nobody has)."""
    try:
        if store.check([ABORT_KEY]):
            return store.get(ABORT_KEY).decode(errors="replace")
    except Exception:               # noqa: BLE001 - a store that is gone says nothing
        return ""
    return ""


def node_peers(pids) -> None:
    """Process ids of this job's ranks on this host (the shared-memory transport knows
    them), so that without MPI a frozen one can still be ended."""
    _state["peer_pids"].update(int(pid) for pid in pids if int(pid) != os.getpid())


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def _unlink_mapped_shm() -> None:
    """The MPI library's shared-memory files of this node (MPICH: /dev/shm/mpich_shm_*) are
    unlinked by MPI_Finalize, never by MPI_Abort, whose killed ranks would leave them behind
    for ever: unlink the ones this process maps (the job's; ringps's own segments are
    memfds, with no name to leave). The mappings stay valid until the processes go."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if " /dev/shm/" in line}
    except OSError:
        return
    for path in paths:
        if path.startswith("/dev/shm/") and not path.endswith("(deleted)"):
            try:
                os.unlink(path)
            except OSError:
                pass


def end_now(reason: str, code: int = 1) -> None:
    """End every rank of the job now (after `reason` has been printed)."""
    mpi = _mpi()
    if mpi is not None:
        _unlink_mapped_shm()
        mpi.COMM_WORLD.Abort(code)  # kills every rank, frozen ones too
    for store in _state["stores"]:  # torchrun: tell the others, then go; the agent
        try:                        # stops whoever is left
            store.set(ABORT_KEY, f"rank {_world_rank()} ended the job: {reason}")
        except Exception:           # noqa: BLE001 - best effort on the way out
            pass
    for pid in _state["peer_pids"]:  # a stopped peer would ignore the agent's SIGTERM for
        if _stopped(pid):            # its 30 s grace: end it now, as MPI_Abort would
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    os._exit(code)
