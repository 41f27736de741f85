#!/usr/bin/env bash
# Build the imagebuilder container image with buildah, without any registry:
# the debian:bookworm base image is made locally with mmdebstrap (once, then reused).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${IMAGEBUILDER_IMAGE:-localhost/imagebuilder:latest}
B=(buildah --storage-driver vfs)

if ! "${B[@]}" inspect --type image docker.io/library/debian:bookworm >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "== making the debian:bookworm base image with mmdebstrap"
  mmdebstrap --variant=minbase --quiet bookworm "$tmp/base.tar"
  ctr=$("${B[@]}" from scratch)
  "${B[@]}" add "$ctr" "$tmp/base.tar" /
  "${B[@]}" config --cmd /bin/bash "$ctr"
  "${B[@]}" commit --quiet "$ctr" docker.io/library/debian:bookworm
  "${B[@]}" rm "$ctr" >/dev/null
fi

# Reuse the host's CA bundle for pip inside the build (needed where egress TLS is intercepted).
ca_args=()
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  ca_args=(--volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
fi

echo "== building $TAG"
"${B[@]}" bud --pull-never --layers --isolation chroot "${ca_args[@]}" -f Containerfile -t "$TAG" .
