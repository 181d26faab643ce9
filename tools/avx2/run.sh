#!/usr/bin/env bash
# Run a command with ONNX Runtime's AVX2 kernels on this AVX-512 / VNNI x86 CPU, natively:
# CPUID answers with AVX-512, VNNI and AMX cleared (tools/avx2/cpuid_mask.c), so every library
# that picks kernels by CPUID takes its AVX2 ones. The numbers are an AVX2 CPU's (the same
# instructions in the same order: bench/results/avx2-mask-vs-zen3.md against a real Zen 3,
# avx2-mask-parity.json against qemu's EPYC-Rome); the speed is this CPU's running AVX2 code.
#
#   bash tools/avx2/run.sh .venv/bin/python -m bench.studies.int8_chance ...
#   bash tools/avx2/run.sh --check      # exit 0 where the mask works, 2 with the reason elsewhere
#
# Needs gcc and CPUID faulting (`cpuid_fault` in /proc/cpuinfo: Intel CPUs since Ivy Bridge, and
# KVM guests of them; not AMD). Stops with a message where either is missing. crossrank's own
# class name (detect_isa, from /proc/cpuinfo) still names the real CPU: pass --isa avx2 where it
# matters. Not under pytest (its faulthandler takes SIGSEGV).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ "$(uname -m)" = x86_64 ] || { echo "tools/avx2/run.sh: x86-64 only" >&2; exit 2; }
grep -qw cpuid_fault /proc/cpuinfo || {
  echo "tools/avx2/run.sh: this CPU or kernel has no CPUID faulting (cpuid_fault): use qemu-x86_64 -cpu EPYC-Rome (make avx2-check)" >&2
  exit 2; }
lib=$root/.cache/avx2/cpuid_mask.so
if [ ! -f "$lib" ] || [ "$here/cpuid_mask.c" -nt "$lib" ]; then
  command -v gcc >/dev/null || { echo "tools/avx2/run.sh: gcc is needed to build $lib" >&2; exit 2; }
  mkdir -p "$(dirname "$lib")"
  gcc -O2 -shared -fPIC -Wall -Wextra -o "$lib" "$here/cpuid_mask.c"
fi
# The library proves the mask live before the command starts (it prints and we stop otherwise).
probe=$(LD_PRELOAD=$lib CPUID_MASK_VERBOSE=1 /bin/true 2>&1)
case $probe in *hidden*) ;; *) echo "tools/avx2/run.sh: $probe" >&2; exit 2;; esac
[ "${1:-}" != --check ] || exit 0  # the mask works here (make avx2-check asks)
[ $# -gt 0 ] || { echo "usage: bash tools/avx2/run.sh COMMAND [ARGS...] | --check" >&2; exit 2; }
export LD_PRELOAD=$lib${LD_PRELOAD:+:$LD_PRELOAD}
exec "$@"
