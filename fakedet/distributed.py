"""Joining a multi-host job, and leaving it cleanly when another process goes away.

``jax.distributed.initialize`` connects the processes through a coordination service hosted by
process 0. By default, when a process dies the others learn of it only when its heartbeats time
out (100 s), and then abort inside XLA's C++ agent with a stack dump (exit 134) — on a pod, one
preempted host turns into 255 core dumps and no word of which host it was.

``initialize`` therefore runs the service in its recoverable mode (a task's failure is not fatal
to the others by itself) and starts a watchdog thread on every process: each bumps its own
heartbeat counter in the service's key-value store every ``interval`` seconds and reads
everyone's; a counter that has not moved for ``timeout`` seconds ends this process with exit
status 1 and one line naming the process that went away. A collective that fails in the main
thread meanwhile (the dead peer's connection closes) is held by ``wait_for_verdict`` until the
watchdog has spoken, so the user sees that line, not a Gloo/NCCL traceback.

Limit: when process 0 itself dies, the service is gone and XLA's agent still aborts the others
(within a second, with its own stack dump): jaxlib 0.10 offers no Python hook for that.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Dict, Optional

import jax

HEARTBEAT_DIR = "fakedet/heartbeat/"
DONE_DIR = "fakedet/done/"  # A process that finished cleanly: its silence is not a death.
SHUTDOWN_TIMEOUT_MS = 600_000  # The slowest process's last step, evaluation and checkpoint.
_watchdog: Optional["Watchdog"] = None


def _client():
  from jax._src import distributed  # The KV client has no public accessor (jax 0.10).
  return distributed.global_state.client


def _exit(message: str) -> None:
  """Leaves now: one line on stderr, status 1, no Python cleanup (other threads may be stuck in
  a collective that will never complete)."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access


class Watchdog:
  """Heartbeats through the coordination service's key-value store; see the module docstring."""

  def __init__(self, interval: float = 2.0, timeout: float = 20.0, client=None):
    self.interval, self.timeout = interval, timeout
    self.client = client or _client()
    self.me, self.count = jax.process_index(), jax.process_count()
    self.last_change: Dict[int, float] = {}
    self.last_value: Dict[int, Optional[str]] = {}
    self.beat = 0
    self.stopped = threading.Event()
    self.gone: Optional[int] = None  # The process whose heartbeat stopped.

  def check(self, now: float) -> Optional[str]:
    """One round: bump this process' counter, read everyone's; the message to exit with, or
    None."""
    try:
      self.beat += 1
      self.client.key_value_set(f"{HEARTBEAT_DIR}{self.me}", str(self.beat), True)
      values = dict(self.client.key_value_dir_get(HEARTBEAT_DIR))
      done = dict(self.client.key_value_dir_get(DONE_DIR))
    except Exception as e:  # pylint: disable=broad-except
      return (f"process {self.me}: lost the job's coordination service (hosted by process 0) "
              f"— process 0 went away or the network failed ({type(e).__name__})")
    for p in range(self.count):
      if f"{DONE_DIR}{p}" in done:
        continue
      value = values.get(f"{HEARTBEAT_DIR}{p}")
      if value != self.last_value.get(p) or p not in self.last_change:
        self.last_value[p], self.last_change[p] = value, now
      elif p != self.me and now - self.last_change[p] > self.timeout:
        self.gone = p
        return (f"process {self.me}: process {p} of {self.count} went away (no heartbeat for "
                f"{now - self.last_change[p]:.0f} s); stopping this process too")
    return None

  def run(self) -> None:
    while not self.stopped.is_set():
      message = self.check(time.monotonic())
      if message and not self.stopped.is_set():
        try:
          self.client.key_value_set(f"{EXIT_DIR}{self.me}", "1", True)
        except Exception:  # pylint: disable=broad-except  The service may be gone already.
          pass
        if self.me == 0:
          self.outlive_peers()
        _exit(message)
      self.stopped.wait(self.interval)

  def outlive_peers(self) -> None:
    """Process 0 hosts the coordination service: leaving at once would take it away from the
    other survivors, whose XLA agents then abort (a stack dump, no word of which process went
    away) before their own watchdogs speak. It waits — at most one timeout — until every other
    survivor has said it is leaving (a key in the store process 0 serves: a local read)."""
    deadline = time.monotonic() + self.timeout + 2 * self.interval
    expected = set(range(1, self.count)) - {self.gone}
    while time.monotonic() < deadline:
      try:
        left = {int(k.rsplit("/", 1)[1]) for k, _ in self.client.key_value_dir_get(EXIT_DIR)}
      except Exception:  # pylint: disable=broad-except
        return
      if expected <= left:
        time.sleep(1.0)  # Their os._exit follows the key within microseconds; on a loaded
        return  # machine, let it happen before the service closes under them.
      time.sleep(0.1)

  def finish(self) -> None:
    """This process is done: peers stop expecting its heartbeat, and it stops checking theirs
    (a peer still finishing its last step is not a peer that went away)."""
    self.stopped.set()
    self.client.key_value_set(f"{DONE_DIR}{self.me}", "1", True)

  def start(self) -> threading.Thread:
    thread = threading.Thread(target=self.run, name="fakedet-watchdog", daemon=True)
    thread.start()
    return thread


COORDINATOR_PORT = 8476  # On process 0's host; any free port that the job's hosts can reach.


def environment_kwargs(env: Optional[Dict[str, str]] = None) -> Dict[str, object]:
  """``jax.distributed.initialize`` arguments read from the environment, for the clusters JAX
  does not detect by itself (it does TPU VMs, SLURM, Open MPI):

  - ``FAKEDET_COORDINATOR_ADDRESS`` (host:port of process 0), ``FAKEDET_NUM_PROCESSES``,
    ``FAKEDET_PROCESS_ID``: any launcher;
  - GCP Batch with ``require_hosts_file``: ``BATCH_HOSTS_FILE`` (one host per line, task 0's
    first), ``BATCH_TASK_COUNT``, ``BATCH_TASK_INDEX``; the port is ``FAKEDET_COORDINATOR_PORT``
    or 8476.

  Empty when neither is set (JAX's own detection then runs)."""
  env = os.environ if env is None else env
  if "FAKEDET_COORDINATOR_ADDRESS" in env:
    return dict(coordinator_address=env["FAKEDET_COORDINATOR_ADDRESS"],
                num_processes=int(env["FAKEDET_NUM_PROCESSES"]),
                process_id=int(env["FAKEDET_PROCESS_ID"]))
  hosts_file = env.get("BATCH_HOSTS_FILE")
  if hosts_file and int(env.get("BATCH_TASK_COUNT", "1")) > 1:
    with open(hosts_file) as f:
      hosts = [line.strip() for line in f if line.strip()]
    if not hosts:
      raise ValueError(f"BATCH_HOSTS_FILE {hosts_file} lists no hosts")
    port = env.get("FAKEDET_COORDINATOR_PORT", str(COORDINATOR_PORT))
    return dict(coordinator_address=f"{hosts[0]}:{port}",
                num_processes=int(env["BATCH_TASK_COUNT"]),
                process_id=int(env["BATCH_TASK_INDEX"]))
  return {}


def initialize(watchdog_timeout: float = 20.0, **kwargs) -> None:
  """``jax.distributed.initialize`` with ``kwargs``, else ``environment_kwargs()`` (else JAX's
  own detection on TPU VMs and SLURM), then the watchdog when there is more than one process."""
  global _watchdog
  jax.config.update("jax_enable_recoverability", True)  # See the module docstring.
  jax.distributed.initialize(**(kwargs or environment_kwargs()))
  if jax.process_count() > 1:
    _watchdog = Watchdog(timeout=watchdog_timeout)
    _watchdog.start()
    logging.info("process %d of %d joined; watchdog on (%g s)", jax.process_index(),
                 jax.process_count(), watchdog_timeout)


def shutdown() -> None:
  """Leaves a multi-process job cleanly: marks this process done for the watchdogs, meets the
  others at a barrier, and process 0 (the coordination service) calls
  ``jax.distributed.shutdown()`` only once the others have left — leaving first, it made the
  others' agents abort when its service disappeared under their own shutdown."""
  global _watchdog
  if _watchdog is not None:
    _watchdog.finish()
    _watchdog = None
  count = jax.process_count()
  if count > 1:  # Process 0 hosts the service: it leaves last, once the others have left.
    client = _client()
    client.wait_at_barrier("fakedet_shutdown", SHUTDOWN_TIMEOUT_MS)
    if jax.process_index() == 0:
      deadline = time.monotonic() + 60
      while (len(client.get_live_nodes(list(range(count)))) > 1
             and time.monotonic() < deadline):
        time.sleep(0.2)
  jax.distributed.shutdown()


def wait_for_verdict() -> None:
  """Called with an exception in flight on a multi-process job: gives the watchdog the time it
  needs to tell whether a peer went away (it then ends the process with its one line); returns
  if none did, so the caller re-raises the real error."""
  if _watchdog is None:
    return
  dog = _watchdog
  time.sleep(dog.timeout + 3 * dog.interval)
  if dog.gone is not None:  # It has spoken and is outliving the peers (process 0): let it end.
    time.sleep(dog.timeout + 3 * dog.interval)
