"""Cluster launchers, offline: the GCP Batch job request built with the client's own types, the
TPU pod commands, and the environment a multi-VM Batch task joins its job from."""
import importlib.util
import json
import os

import pytest
from google.cloud import batch_v1

from fakedet import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "launch", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


gcp_batch, tpu_pod = _load("gcp_batch"), _load("tpu_pod")
BASE = ["--project=proj", "--region=us-central1", "--image=us-docker.pkg.dev/proj/r/fakedet:1",
        "--config=configs/stage1.py:demo", "--workdir=gs://bucket/runs/s1"]


def test_spot_job_retries_preempted_tasks_on_the_same_workdir():
  args = gcp_batch.parse_args(BASE + ["--", "--config.total_steps=500"])
  request = gcp_batch.build_request(args)
  assert request.parent == "projects/proj/locations/us-central1"
  assert request.job_id == "fakedet-stage1"
  job = request.job
  group, = job.task_groups
  assert group.task_count == 1 and not group.require_hosts_file
  task = group.task_spec
  container = task.runnables[0].container
  assert container.image_uri.endswith("fakedet:1")
  assert list(container.commands) == [
      "python", "-m", "fakedet.main", "--config=configs/stage1.py:demo",
      "--workdir=gs://bucket/runs/s1", "--preempted_exit_code=143", "--config.total_steps=500"]
  policy, = task.lifecycle_policies
  assert policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK
  assert set(policy.action_condition.exit_codes) == {143, 50001}
  assert task.max_retry_count == 5
  instance = job.allocation_policy.instances[0]
  assert instance.install_gpu_drivers
  assert instance.policy.provisioning_model == batch_v1.AllocationPolicy.ProvisioningModel.SPOT
  accel, = instance.policy.accelerators
  assert (accel.type_, accel.count) == ("nvidia-l4", 1)
  # The printed request is the API's JSON form and reads back as the same message.
  text = gcp_batch.to_json(request)
  spec = json.loads(text)["job"]["taskGroups"][0]["taskSpec"]
  assert spec["maxRetryCount"] == 5 and spec["lifecyclePolicies"][0]["action"] == "RETRY_TASK"
  assert batch_v1.CreateJobRequest.from_json(text) == request


def test_multi_vm_job_shares_a_hosts_file_and_runs_distributed():
  args = gcp_batch.parse_args(BASE + ["--nodes=4", "--gpu=nvidia-h100-80gb:8", "--standard",
                                      "--machine_type=a3-highgpu-8g", "--job_id=s1-big"])
  job = gcp_batch.build_job(args)
  group = job.task_groups[0]
  assert (group.task_count, group.task_count_per_node, group.parallelism) == (4, 1, 4)
  assert group.require_hosts_file and group.permissive_ssh
  assert "--distributed" in group.task_spec.runnables[0].container.commands
  policy = job.allocation_policy.instances[0].policy
  assert policy.provisioning_model == batch_v1.AllocationPolicy.ProvisioningModel.STANDARD
  assert policy.machine_type == "a3-highgpu-8g" and policy.accelerators[0].count == 8


def test_a_misnamed_field_fails_offline():
  """What the client's types buy: a typo is an error here, not a rejected request later."""
  with pytest.raises((ValueError, KeyError, AttributeError)):
    batch_v1.TaskSpec(max_retries=3)


@pytest.mark.parametrize("flag, message", [
    ("--workdir=/tmp/run", "expected a gs:// path"),
    ("--gpu=nvidia-l4", "ACCELERATOR_TYPE:COUNT"),
    ("--max_retries=11", "0 to 10"),
    ("--job_id=Stage_1", "lowercase"),
])
def test_bad_launch_flags_are_one_line_errors(flag, message, capsys):
  with pytest.raises(SystemExit) as e:
    gcp_batch.parse_args(BASE + [flag])
  assert e.value.code == 2 and message in capsys.readouterr().err


def test_tpu_pod_runs_the_same_distributed_command_on_every_worker(capsys):
  common = ["--name=fd", "--zone=us-central2-b"]
  assert tpu_pod.main(["run", *common, "--config=configs/stage1.py",
                       "--workdir=gs://b/s1", "--dry_run", "--", "--config.seed=3"]) == 0
  line = capsys.readouterr().out.strip()
  assert line.startswith("+ gcloud compute tpus tpu-vm ssh fd --zone=us-central2-b --worker=all")
  for part in ("fakedet.main", "--config=configs/stage1.py", "--workdir=gs://b/s1",
               "--distributed", "--config.seed=3", "nohup", "~/fakedet.log"):
    assert part in line
  args = tpu_pod.parse_args(["create", *common, "--type=v5p-64", "--spot"])
  create, = tpu_pod.create(args)
  assert "--accelerator-type=v5p-64" in create and create[-1] == "--spot"
  assert tpu_pod.delete(args)[0][-1] == "--quiet"
  assert [c[0] for c in tpu_pod.copy(args)] == ["git", "gcloud", "gcloud"]
  with pytest.raises(SystemExit, match="gs://"):
    tpu_pod.run(tpu_pod.parse_args(["run", *common, "--config=c.py", "--workdir=/tmp/x"]))


def test_batch_tasks_join_through_the_hosts_file(tmp_path):
  hosts = tmp_path / "hosts"
  hosts.write_text("10.0.0.7\n10.0.0.8\n")
  env = {"BATCH_HOSTS_FILE": str(hosts), "BATCH_TASK_COUNT": "2", "BATCH_TASK_INDEX": "1"}
  assert distributed.environment_kwargs(env) == dict(
      coordinator_address="10.0.0.7:8476", num_processes=2, process_id=1)
  assert distributed.environment_kwargs(dict(env, BATCH_TASK_COUNT="1")) == {}
  explicit = {"FAKEDET_COORDINATOR_ADDRESS": "h0:9999", "FAKEDET_NUM_PROCESSES": "4",
              "FAKEDET_PROCESS_ID": "3"}
  assert distributed.environment_kwargs(explicit) == dict(
      coordinator_address="h0:9999", num_processes=4, process_id=3)
  assert distributed.environment_kwargs({}) == {}
  hosts.write_text("\n")
  with pytest.raises(ValueError, match="lists no hosts"):
    distributed.environment_kwargs(env)
