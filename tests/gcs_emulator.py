"""A real local GCS server (gcp-storage-emulator) for the gs:// tests, and the environment that
points every GCS client fakedet uses at it.

Three clients read and write fakedet's files: gcsfs (etils.epath, so fakedet itself, orbax's
metadata, grain), google-cloud-cpp inside array_record (shard reads) and TensorStore (orbax's
arrays). Each has its own emulator variable; docs/gcs.md lists the real-GCS equivalents.
"""
import contextlib
import logging
import os
import socket
import time

BUCKET = "fakedet-test"
ENV_VARS = ("STORAGE_EMULATOR_HOST", "CLOUD_STORAGE_EMULATOR_ENDPOINT", "TENSORSTORE_GCS_HTTP_URL")


def _send_generations() -> None:
  """Makes the emulator's media downloads carry ``x-goog-generation`` / ``-metageneration``, as
  real GCS's do: TensorStore (orbax's OCDBT checkpoints) reads them and rejects a response
  without them. The emulator's routes hold the handler in mutable dicts, so the wrapper goes
  there and on the module (the JSON API's ``alt=media`` path calls it by name)."""
  from gcp_storage_emulator import server  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  original = objects.download
  if getattr(original, "sends_generations", False):
    return

  def download(request, response, storage, *args, **kwargs):
    original(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # pylint: disable=broad-except
      return  # Not found: the original already answered 404.
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])

  download.sends_generations = True
  objects.download = download
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is original:
        handlers[method] = download


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def emulator(bucket: str = BUCKET):
  """Starts the server (in memory, one bucket), sets the clients' variables in this process
  (subprocesses inherit them) and yields ``gs://<bucket>``; restores everything on exit."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=import-outside-toplevel
  _send_generations()
  # Without Google credentials gcsfs warns at every new file system that it cannot tell the
  # bucket type (it falls back to the standard one, which is right here).
  logging.getLogger("gcsfs").setLevel(logging.ERROR)
  port = _free_port()
  server = create_server("localhost", port, in_memory=True, default_bucket=bucket)
  server.start()
  saved = {k: os.environ.get(k) for k in ENV_VARS}
  os.environ.update({k: f"http://localhost:{port}" for k in ENV_VARS})
  deadline = time.time() + 10
  while time.time() < deadline:  # Wait until it accepts connections.
    try:
      socket.create_connection(("localhost", port), timeout=0.5).close()
      break
    except OSError:
      time.sleep(0.1)
  try:
    yield f"gs://{bucket}"
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    server.stop()
