# Training image for GPU VMs (launch/gcp_batch.py). JAX's CUDA wheels bring their own CUDA and
# cuDNN; the VM supplies only the driver (Batch installs it: install_gpu_drivers).
#
#   IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/fakedet:TAG
#   docker build -f launch/gpu.Dockerfile -t $IMAGE . && docker push $IMAGE
#
# Configs are read from the image (configs/ is copied), so rebuild after changing one, or pass
# overrides on the command line. Data and workdirs are gs:// paths.
FROM python:3.11-slim
WORKDIR /opt/fakedet
COPY pyproject.toml README.md constraints.txt ./
COPY fakedet fakedet
COPY input_pipeline input_pipeline
COPY configs configs
RUN pip install --no-cache-dir -c constraints.txt ".[gpu]"
ENTRYPOINT []
