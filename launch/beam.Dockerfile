# Worker image for the Beam preprocessing pipeline on Dataflow (docs/preprocessing.md).
# Beam's SDK image for this Python and Beam version, plus this package with MTCNN and the GCP IO.
#
#   IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/fakedet-beam:TAG
#   docker build -f launch/beam.Dockerfile -t $IMAGE . && docker push $IMAGE
#
# The launching machine must run the same apache-beam version (2.77.0) and Python (3.11).
FROM apache/beam_python3.11_sdk:2.77.0
WORKDIR /opt/fakedet
COPY pyproject.toml README.md ./
COPY fakedet fakedet
COPY input_pipeline input_pipeline
RUN pip install --no-cache-dir ".[faces,beam]" "apache-beam[gcp]==2.77.0"
