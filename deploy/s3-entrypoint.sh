#!/bin/sh
# Accepts MinIO's command line (`server DIR [--console-address ...]`) and environment,
# and serves S3 on port 9000 with SeaweedFS's `weed mini`.
set -e
dir=/data
if [ "$1" = server ] && [ -n "$2" ]; then dir=$2; fi
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER must be set}" "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD must be set}"
mkdir -p "$dir/weed" /tmp/webdav
# The identities file holds the one access key and secret, like MinIO's root user.
python3 -c 'import json, os; print(json.dumps({"identities": [{"name": "root",
  "credentials": [{"accessKey": os.environ["MINIO_ROOT_USER"], "secretKey": os.environ["MINIO_ROOT_PASSWORD"]}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))' > /tmp/identities.json
chmod 600 /tmp/identities.json
exec /opt/seaweedfs/bin/weed mini -dir="$dir/weed" -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=9000 \
  -s3.config=/tmp/identities.json -webdav.cacheDir=/tmp/webdav -master.telemetry=false
