#!/usr/bin/env bash
# A GPU check to run on a machine with a real GPU: correctness of every op on its adapter
# against the CPU backend, GEMM and conv GFLOP/s for every kernel variant (autotuned afresh),
# and AlexNet and ResNet-50 training steps at 224 px (batch 64) with their peak device memory.
#
#   scripts/device_check.sh prepare   # on a build machine (Debian, x86-64): build, and gather
#                                     # the binary, the libraries it links and the Vulkan/EGL
#                                     # loaders into .device/
#   copy the repository with .device/ to the GPU machine, then there:
#   scripts/device_check.sh run       # writes $OUT/device_check.txt and check.json
#
# For a GPU machine that starts bare (no OpenBLAS, no Vulkan loader) and cannot reach a
# package registry: everything the check needs is in .device/ (ignored by git, ~55 MB).
# Each step has its own time limit, so one slow step cannot stall the run.
#
# Environment: OUT, the folder for the results (default: ./device_check); APT_LISTS, the
# scratch folder for the amd64 package lists `prepare` downloads (default: $TMPDIR or /tmp,
# plus /tessera-apt-amd64).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    cargo build --release -p tessera-cli
    rm -rf .device && mkdir -p .device/lib .device/debs
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
    cp target/release/tessera .device/
    # The shared libraries the binary links that a bare machine may lack (OpenBLAS and the
    # Fortran runtime it pulls in); glibc and libgcc are everywhere.
    ldd target/release/tessera | awk '/=> \// {print $3}' | grep -E 'openblas|gfortran|quadmath' | while read -r lib; do
        cp -L "$lib" .device/lib/
    done
    # The Vulkan and EGL loaders (the NVIDIA driver brings the ICDs), downloaded for amd64
    # whatever this machine's architecture.
    local lists="${APT_LISTS:-${TMPDIR:-/tmp}/tessera-apt-amd64}"
    local o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
    mkdir -p "$lists/partial"
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .device/debs && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    du -sh .device
}

run() {
    local out="${OUT:-$PWD/device_check}" log
    mkdir -p "$out"
    log="$out/device_check.txt"
    for f in .device/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export LD_LIBRARY_PATH="$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # The NVIDIA driver's own ICD files, where the loaders would not find them.
    if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    local t=.device/tessera
    step() {
        local limit=$1; shift
        echo "== $* (limit ${limit}s)" | tee -a "$log"
        timeout "$limit" "$@" 2>&1 | tee -a "$log" || echo "-- exit status $? (124: past its limit)" | tee -a "$log"
    }
    step 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    step 30 "$t" devices
    # gpu:0 is the first adapter `tessera devices` lists (the NVIDIA Vulkan one on a bare machine).
    step 120 "$t" check --adapters all --json-out "$out/check.json"
    step 120 "$t" bench gemm --device gpu:0 --sizes 1024,2048,4096 --trans nn,nt,tn --kernel all --retune
    step 120 "$t" bench kernels --device gpu:0 --retune
    # Training steps at 224 px, batch 64, in f32 and mixed precision, with peak device memory
    # (the table's device_peak_MiB column): AlexNet (fc6's 151 MB weight beyond a 128 MiB
    # binding where the adapter binds less) and ResNet-50 (target: mixed ≤ 0.65× f32's peak).
    step 200 "$t" bench train --model alexnet --num-classes 1000 --input 224 --batch 64 --device gpu:0 --precision f32,mixed --warmup 2 --steps 5 --no-torch
    step 300 "$t" bench train --model resnet50 --num-classes 1000 --input 224 --batch 64 --device gpu:0 --precision f32,mixed --warmup 2 --steps 5 --no-torch
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
