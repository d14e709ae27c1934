#!/usr/bin/env bash
# Run one experiment on every host of a Cloud TPU VM pod slice.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/data_preview.py gs://BUCKET/workdir [--config.x=y ...]
#
# Each host installs the repo (copied with `gcloud ... scp` beforehand, or cloned) with the TPU
# extra and starts the same command; `--distributed` makes fakedet.main call
# jax.distributed.initialize(), which discovers the pod topology on TPU VMs. Datasets are read
# from gs:// (TFRecord streaming) or a gcsfuse mount (ArrayRecord random access).
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
cmd="cd ~/fakedet && python3 -m pip install -q -e '.[tpu]' && python3 -m fakedet.main --config=${config} --workdir=${workdir} --distributed $*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$cmd"
