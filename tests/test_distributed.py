"""A multi-process job whose peer is killed: the survivors end within a bounded time, and when
the lost peer is not the coordinator, with one line naming it (not a Gloo traceback or an XLA
abort 77 s later)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from fakedet import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "multihost_watchdog.py")


class _FakeClient:
  """The coordination service's key-value store, as the watchdog uses it."""

  def __init__(self):
    self.kv = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    self.kv[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in self.kv.items() if k.startswith(prefix)]


def test_watchdog_names_the_process_whose_heartbeat_stopped(monkeypatch):
  monkeypatch.setattr(distributed.jax, "process_index", lambda: 0)
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 3)
  client = _FakeClient()
  dog = distributed.Watchdog(interval=1.0, timeout=5.0, client=client)
  for t in range(4):  # Everyone beats.
    client.kv[f"{distributed.HEARTBEAT_DIR}1"] = str(t)
    client.kv[f"{distributed.HEARTBEAT_DIR}2"] = str(t)
    assert dog.check(float(t)) is None
  for t in range(4, 12):  # Process 2 stops at t = 3.
    client.kv[f"{distributed.HEARTBEAT_DIR}1"] = str(t)
    message = dog.check(float(t))
    if t <= 8:
      assert message is None, t
  assert message == ("process 0: process 2 of 3 went away (no heartbeat for 8 s); stopping "
                     "this process too")


def test_a_process_that_finished_is_not_reported_as_gone(monkeypatch):
  """A finished process marks itself done (``Watchdog.finish``): peers still on their last step
  keep going instead of ending the job over its silence."""
  monkeypatch.setattr(distributed.jax, "process_index", lambda: 0)
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
  client = _FakeClient()
  peer = distributed.Watchdog(timeout=5.0, client=client)
  monkeypatch.setattr(distributed.jax, "process_index", lambda: 1)
  finished = distributed.Watchdog(timeout=5.0, client=client)
  finished.check(0.0)
  finished.finish()
  assert finished.stopped.is_set()
  assert all(peer.check(float(t)) is None for t in range(0, 30, 3))


def test_watchdog_reports_a_lost_coordinator(monkeypatch):
  monkeypatch.setattr(distributed.jax, "process_index", lambda: 1)
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)

  class Gone(_FakeClient):
    def key_value_set(self, key, value, allow_overwrite=False):
      raise RuntimeError("UNAVAILABLE: connection refused")

  message = distributed.Watchdog(client=Gone()).check(0.0)
  assert message.startswith("process 1: lost the job's coordination service (hosted by "
                            "process 0)")


def _pair(port, timeout=6, count=2):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, SCRIPT, f"--process_id={i}", f"--port={port}",
                             f"--timeout={timeout}", f"--num_processes={count}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(count)]
  for p in procs:
    assert p.stdout.readline().strip() == "joined", p.stderr.read()[-2000:]
  return procs


@pytest.mark.integration
@pytest.mark.parametrize("count", [2, 4])
def test_killing_a_worker_ends_the_others_with_one_line(count):
  import portpicker
  procs = _pair(portpicker.pick_unused_port(), count=count)
  time.sleep(2)
  t0 = time.time()
  gone = count - 1
  procs[gone].send_signal(signal.SIGKILL)
  for i, proc in enumerate(procs[:gone]):
    proc.wait(timeout=120)
    elapsed = time.time() - t0
    err = proc.stderr.read()
    lines = [l for l in err.splitlines() if l.strip()]
    assert proc.returncode != 0 and elapsed < 60, (i, proc.returncode, elapsed)  # No hang.
    if i > 0 and proc.returncode == -signal.SIGABRT:
      # Limit (seen in about 1 of 10 runs on 4 processes): XLA's agent on a non-coordinator
      # survivor can abort it (SIGABRT, its own stack dump) seconds after the peer died,
      # before its watchdog speaks. It still ends; process 0 always names the lost process.
      continue
    assert "Traceback" not in err
    assert proc.returncode == 1, (i, proc.returncode)
    if i > 0 and "lost the job's coordination service" in lines[-1]:
      continue  # Its watchdog spoke after process 0 had left: one line, still no traceback.
    assert lines[-1] == (f"error: process {i}: process {gone} of {count} went away (no "
                         f"heartbeat for {lines[-1].split('for ')[1].split(' s)')[0]} s); "
                         "stopping this process too"), err[-2000:]
    assert "Traceback" not in err


@pytest.mark.integration
def test_killing_the_coordinator_ends_the_others_quickly():
  """The service dies with process 0; XLA's agent then aborts the others itself (jaxlib offers
  no hook to do it more quietly), but promptly: no process is left waiting."""
  import portpicker
  procs = _pair(portpicker.pick_unused_port())
  time.sleep(2)
  t0 = time.time()
  procs[0].send_signal(signal.SIGKILL)
  procs[1].wait(timeout=120)
  assert procs[1].returncode != 0 and time.time() - t0 < 60
