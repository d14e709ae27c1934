"""One fakedet training run as a GCP Batch job on GPU VMs (spot by default), resumable.

  python launch/gcp_batch.py --project=P --region=us-central1 \\
      --image=us-docker.pkg.dev/P/fakedet/fakedet:latest \\
      --config=configs/stage1.py --workdir=gs://BUCKET/runs/stage1 \\
      [--machine_type=a3-highgpu-8g --gpu=nvidia-h100-80gb:8] [--nodes=2] [--standard] \\
      [--submit] [-- --config.total_steps=1000 ...]

Without ``--submit`` it prints the job request (JSON) and contacts nothing. With it, the request
goes to the Batch API with the caller's application-default credentials.

Why the job looks as it does:
- Spot VMs are preempted at any moment. fakedet saves a checkpoint on SIGTERM (input position
  included) and, with ``--preempted_exit_code=143``, exits 143 instead of 0 so that Batch does not
  count a stopped run as finished. The lifecycle policy retries the task on 143 and on Batch's own
  code for a preempted VM (50001), up to ``--max_retries`` times; the retried task runs the same
  command on the same gs:// workdir and resumes from its last checkpoint.
- ``--nodes`` > 1: one task per VM, ``require_hosts_file`` so every task learns the hosts, and
  ``fakedet.main --distributed``, which reads ``BATCH_HOSTS_FILE`` / ``BATCH_TASK_INDEX`` /
  ``BATCH_TASK_COUNT`` (``fakedet.distributed.environment_kwargs``): task 0's host coordinates.
- The container runs ``python -m fakedet.main`` from the image (``launch/Dockerfile``); data and
  workdir are gs:// paths read with the VM's service account. Logs go to Cloud Logging.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from typing import List, Optional, Sequence

from google.cloud import batch_v1

PREEMPTED_EXIT_CODE = 143  # fakedet.main --preempted_exit_code: saved on SIGTERM, not finished.
BATCH_VM_PREEMPTED = 50001  # Batch's exit code for a task whose spot VM was preempted.
JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--project", required=True)
  p.add_argument("--region", required=True, help="e.g. us-central1")
  p.add_argument("--image", required=True, help="container image with fakedet installed")
  p.add_argument("--config", required=True, help="e.g. configs/stage1.py[:variant]")
  p.add_argument("--workdir", required=True, help="gs://BUCKET/PATH (shared by retries)")
  p.add_argument("--job_id", default="", help="default: fakedet-<config name>")
  p.add_argument("--machine_type", default="g2-standard-8")
  p.add_argument("--gpu", default="nvidia-l4:1", help="ACCELERATOR_TYPE:COUNT per VM")
  p.add_argument("--nodes", type=int, default=1, help="VMs (one process each)")
  p.add_argument("--standard", action="store_true", help="standard VMs instead of spot")
  p.add_argument("--max_retries", type=int, default=5, help="retries after preemption (≤ 10)")
  p.add_argument("--max_run_hours", type=float, default=0.0, help="0: Batch's default")
  p.add_argument("--boot_disk_gib", type=int, default=100)
  p.add_argument("--submit", action="store_true", help="create the job (needs credentials)")
  p.add_argument("overrides", nargs="*", help="after --: fakedet.main flags, e.g. "
                 "--config.total_steps=1000")
  args = p.parse_args(argv)
  _check(p, args)
  return args


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  if not args.workdir.startswith("gs://"):
    p.error(f"--workdir={args.workdir}: expected a gs:// path (a retried task runs on a new VM)")
  if args.nodes < 1:
    p.error(f"--nodes={args.nodes}: expected >= 1")
  if not 0 <= args.max_retries <= 10:
    p.error(f"--max_retries={args.max_retries}: Batch allows 0 to 10")
  accelerator, _, count = args.gpu.partition(":")
  if not accelerator or not count.isdigit() or int(count) < 1:
    p.error(f"--gpu={args.gpu}: expected ACCELERATOR_TYPE:COUNT, e.g. nvidia-l4:1")
  args.job_id = args.job_id or default_job_id(args.config)
  if not JOB_ID.match(args.job_id):
    p.error(f"--job_id={args.job_id}: expected lowercase letters, digits and '-', starting with "
            f"a letter, at most 63 characters")


def default_job_id(config: str) -> str:
  name = config.rsplit("/", 1)[-1].split(":")[0].removesuffix(".py")
  return ("fakedet-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())).strip("-")[:63]


def command(args: argparse.Namespace) -> List[str]:
  """The container's command: the trainer, resumable, distributed when there are several VMs."""
  cmd = ["python", "-m", "fakedet.main", f"--config={args.config}", f"--workdir={args.workdir}",
         f"--preempted_exit_code={PREEMPTED_EXIT_CODE}"]
  if args.nodes > 1:
    cmd.append("--distributed")
  return cmd + list(args.overrides)


def build_job(args: argparse.Namespace) -> batch_v1.Job:
  """The Batch job (typed with the client's own messages: a misnamed field raises here)."""
  accelerator, _, count = args.gpu.partition(":")
  container = batch_v1.Runnable.Container(
      image_uri=args.image, commands=command(args),
      options="--shm-size=16g --network=host")  # grain workers' shared memory; host ports.
  task = batch_v1.TaskSpec(
      runnables=[batch_v1.Runnable(container=container)],
      compute_resource=batch_v1.ComputeResource(boot_disk_mib=args.boot_disk_gib * 1024),
      max_retry_count=args.max_retries,
      lifecycle_policies=[batch_v1.LifecyclePolicy(
          action=batch_v1.LifecyclePolicy.Action.RETRY_TASK,
          action_condition=batch_v1.LifecyclePolicy.ActionCondition(
              exit_codes=[PREEMPTED_EXIT_CODE, BATCH_VM_PREEMPTED]))],
      environment=batch_v1.Environment(variables={"PYTHONUNBUFFERED": "1"}))
  if args.max_run_hours:
    task.max_run_duration = f"{int(args.max_run_hours * 3600)}s"
  group = batch_v1.TaskGroup(task_spec=task, task_count=args.nodes, parallelism=args.nodes,
                             task_count_per_node=1, require_hosts_file=args.nodes > 1,
                             permissive_ssh=args.nodes > 1)
  model = batch_v1.AllocationPolicy.ProvisioningModel
  policy = batch_v1.AllocationPolicy.InstancePolicy(
      machine_type=args.machine_type,
      provisioning_model=model.STANDARD if args.standard else model.SPOT,
      accelerators=[batch_v1.AllocationPolicy.Accelerator(type_=accelerator, count=int(count))])
  allocation = batch_v1.AllocationPolicy(instances=[
      batch_v1.AllocationPolicy.InstancePolicyOrTemplate(policy=policy,
                                                         install_gpu_drivers=True)])
  return batch_v1.Job(
      task_groups=[group], allocation_policy=allocation,
      labels={"app": "fakedet"},
      logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING))


def build_request(args: argparse.Namespace) -> batch_v1.CreateJobRequest:
  return batch_v1.CreateJobRequest(parent=f"projects/{args.project}/locations/{args.region}",
                                   job_id=args.job_id, job=build_job(args))


def to_json(request: batch_v1.CreateJobRequest) -> str:
  """The request as the API's JSON (what `gcloud batch jobs submit --config` also reads): enum
  names, fields left at their defaults omitted."""
  return batch_v1.CreateJobRequest.to_json(request, use_integers_for_enums=False,
                                           always_print_fields_with_no_presence=False)


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  request = build_request(args)
  if not args.submit:
    print(to_json(request))
    print(f"# dry run; the container runs: {shlex.join(command(args))}", file=sys.stderr)
    return
  job = batch_v1.BatchServiceClient().create_job(request=request)
  print(f"created {job.name}; follow it with: gcloud batch jobs describe {args.job_id} "
        f"--location={args.region}")


if __name__ == "__main__":
  main()
