#!/usr/bin/env bash
# Make Fashion-MNIST available offline: install Debian's dataset-fashion-mnist, which puts the four archives in
# /usr/share/datasets/fashion-mnist/, where the study finds them without configuration. Silent when the data is
# already there (or already in resources/); never fails: without the data the study's data rule stops later with
# the full explanation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGE=dataset-fashion-mnist
SYSTEM_DIR=/usr/share/datasets/fashion-mnist
RAW_DIR=resources/fashion/FashionMNIST/raw
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

all_present() {  # all_present DIR SUFFIX
    local f
    for f in "${FILES[@]}"; do
        [[ -f "$1/$f$2" ]] || return 1
    done
}

if all_present "$SYSTEM_DIR" .gz || all_present "$RAW_DIR" ""; then
    exit 0
fi

WAYS="put the four files (uncompressed, or the .gz from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/) \
in $RAW_DIR/, or run 'apt-get install $PACKAGE' as root (it puts them in $SYSTEM_DIR/), or set 'download: true' \
on a machine with internet"

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Fashion-MNIST is not available offline; to get it, $WAYS."
    exit 0
fi

echo "Installing Debian's $PACKAGE for the offline Fashion-MNIST (into $SYSTEM_DIR/)."
install_package() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PACKAGE" >/dev/null; }
if ! install_package 2>/dev/null && ! { apt-get update -qq && install_package; }; then
    echo "warning: could not install $PACKAGE; to get Fashion-MNIST, $WAYS." >&2
elif ! all_present "$SYSTEM_DIR" .gz; then
    echo "warning: $PACKAGE is installed but $SYSTEM_DIR/ lacks its four .gz; to get Fashion-MNIST, $WAYS." >&2
fi
exit 0
