#!/bin/sh
# MinIO set-up, run with the mc image by the Job minio-setup (k8s/base/minio.yaml) and the compose service
# minio-init: the bucket, then one user per patchcore service with the policy that lets it write only the prefixes
# it writes (minio-policies/<role>.json, IAM policy documents). Safe to run again: users get their current secret
# key, policies their current text. POSIX sh and mc only (the mc image has nothing else worth relying on).
# Needs: MC_HOST_store (http://<root user>:<root password>@minio:9000), S3_BUCKET, POLICY_DIR, and for each role
# below <ROLE>_S3_ACCESS_KEY_ID and <ROLE>_S3_SECRET_ACCESS_KEY; DEMO_S3_* (compose's demo, which runs every role
# in one container) is optional and gets every policy.
set -eu

ROLES="feature-worker:FEATURE_WORKER index-worker:INDEX_WORKER scorer:SCORER producer:PRODUCER"

fail() {
  echo "minio-setup: $*" >&2
  exit 1
}

# mc keeps its config under $HOME; the root filesystem may be read-only.
mcs() {
  mc --config-dir "${MC_CONFIG_DIR:-/tmp/mc}" "$@"
}

# A secret still holding the Secret template's placeholder must not become a real password.
secret() {
  eval "value=\${$1:-}"
  [ -n "$value" ] || fail "$1 is not set"
  case "$value" in
    *CHANGE_ME* | *change_me*) fail "$1 still holds the placeholder CHANGE_ME of k8s/secret.template.yaml: set a real secret" ;;
  esac
  printf '%s' "$value"
}

: "${S3_BUCKET:?S3_BUCKET is not set}"
: "${POLICY_DIR:?POLICY_DIR is not set}"
secret MC_HOST_store >/dev/null
for entry in $ROLES; do
  var=${entry#*:}
  secret "${var}_S3_ACCESS_KEY_ID" >/dev/null
  secret "${var}_S3_SECRET_ACCESS_KEY" >/dev/null
done

# The policies name the bucket: one edited in S3_BUCKET but not in the policies would lock every service out.
for entry in $ROLES; do
  file="$POLICY_DIR/${entry%%:*}.json"
  [ -r "$file" ] || fail "policy $file is missing"
  text=""
  while IFS= read -r line || [ -n "$line" ]; do text="$text$line"; done <"$file"
  case "$text" in
    *"arn:aws:s3:::$S3_BUCKET/"*) ;;
    *) fail "$file does not name the bucket $S3_BUCKET (S3_BUCKET): edit its Resource entries" ;;
  esac
done

mcs mb --ignore-existing "store/$S3_BUCKET"

# MinIO answers an attach of a policy the user already has with an error: that one is fine.
attach() {
  if ! out=$(mcs admin policy attach store "$1" --user "$2" 2>&1); then
    case "$out" in
      *"already in effect"* | *"already attached"*) ;;
      *) fail "cannot attach policy $1 to user $2: $out" ;;
    esac
  fi
}

for entry in $ROLES; do
  role=${entry%%:*}
  var=${entry#*:}
  mcs admin policy create store "patchcore-$role" "$POLICY_DIR/$role.json"
  mcs admin user add store "$(secret "${var}_S3_ACCESS_KEY_ID")" "$(secret "${var}_S3_SECRET_ACCESS_KEY")"
  attach "patchcore-$role" "$(secret "${var}_S3_ACCESS_KEY_ID")"
done

if [ -n "${DEMO_S3_ACCESS_KEY_ID:-}" ]; then
  mcs admin user add store "$DEMO_S3_ACCESS_KEY_ID" "$(secret DEMO_S3_SECRET_ACCESS_KEY)"
  for entry in $ROLES; do attach "patchcore-${entry%%:*}" "$DEMO_S3_ACCESS_KEY_ID"; done
fi

echo "minio-setup: bucket $S3_BUCKET, users and policies of $ROLES ready"
