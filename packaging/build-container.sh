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
# --layers caches the package layer between builds. vfs keeps a full copy of the tree per
# layer, so drop the previous image under this tag and the intermediate layers of this source
# (everything newer than the cached package layer) once the new image is committed.
old=$("${B[@]}" images -q --no-trunc "$TAG" 2>/dev/null || true)
"${B[@]}" bud --pull-never --layers --isolation chroot "${ca_args[@]}" -f Containerfile -t "$TAG" .
"${B[@]}" rm --all >/dev/null 2>&1 || true
new=$("${B[@]}" images -q --no-trunc "$TAG")
if [ -n "$old" ] && [ "$old" != "$new" ]; then "${B[@]}" rmi "$old" >/dev/null 2>&1 || true; fi
# intermediate images left by the COPY . /src step of earlier builds (not ancestors of $TAG)
for id in $("${B[@]}" images -a -q --no-trunc --filter dangling=true 2>/dev/null); do
  "${B[@]}" rmi "$id" >/dev/null 2>&1 || true
done
