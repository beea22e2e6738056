#!/bin/sh
# Builds the Pion client (itg_pion.go) to $1 against the Pion that Debian 12 packages
# (golang-go and golang-github-pion-webrtc.v3-dev, from .ci/install-deps): no module download.
# Debian installs Pion's webrtc without the /v3 path its imports name, so a GOPATH of our own
# links it there.
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
gopath=$(dirname "$out")/pion-gopath
mkdir -p "$gopath/src/github.com/pion/webrtc" "$gopath/src/itg_pion"
ln -sfn /usr/share/gocode/src/github.com/pion/webrtc "$gopath/src/github.com/pion/webrtc/v3"
cp "$here/itg_pion.go" "$gopath/src/itg_pion/main.go"
cd "$gopath/src/itg_pion"
GOCACHE=${GOCACHE:-$(dirname "$out")/go-cache} GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= \
    go build -o "$out" .
