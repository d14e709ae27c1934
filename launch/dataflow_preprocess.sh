#!/usr/bin/env bash
# Preprocess a video list on Dataflow with the Beam pipeline (docs/preprocessing.md).
#
#   launch/dataflow_preprocess.sh IMAGE PROJECT REGION gs://B/lists/vox2.jsonl gs://B/records/vox2 \
#       vox2 4096 [preprocess flags, e.g. --detect_every=5 --mouth]
#
# IMAGE: the worker container built from launch/beam.Dockerfile. This machine needs
# `pip install -e ".[beam]" "apache-beam[gcp]==2.77.0"` and gcloud credentials
# (`gcloud auth application-default login`). The job's temp files go to gs://<list bucket>/tmp.
set -euo pipefail
if [[ $# -lt 7 ]]; then
  echo "usage: $0 IMAGE PROJECT REGION LIST.jsonl OUT_DIR NAME NUM_SHARDS [flags...]" >&2
  exit 2
fi
image=$1 project=$2 region=$3 list=$4 out=$5 name=$6 shards=$7
shift 7
bucket=$(echo "$list" | cut -d/ -f1-3)
python3 -m input_pipeline.preprocess --beam --videos="$list" --out_dir="$out" --name="$name" \
  --num_shards="$shards" "$@" -- \
  --runner=DataflowRunner --project="$project" --region="$region" \
  --temp_location="$bucket/tmp" --sdk_container_image="$image" \
  --job_name="fakedet-preprocess-$(echo "$name" | tr "A-Z_." "a-z--")-$(date +%Y%m%d-%H%M%S)" \
  --experiments=use_runner_v2 --sdk_location=container
