#!/usr/bin/env bash
# Testbed v2 on a GPU: the recipe of `make testbed-v2` (train_testbed --design scenes, A and
# B, --device cuda) into testbed/v2, and model A alone trained longer into /tmp/v2-a<steps>
# (each from a copy of the committed pool, so every variant sees the same images and
# captions). Then verify_testbed on each, without SSCD (pixel RMS to the own image and
# the MV/RV/TV labels; SSCD runs where the weights package is installed). Runs beside
# each other on one GPU. Each model folder comes back as a tar under $OUT. The longer
# variants stop after TRAIN_LIMIT_S (330 s) so that the whole run fits a 10-minute call
# (one H200, three trainings at once: the VAE of 16/32/64 channels took ~110 s, then ~30 ms
# per UNet step, so ~7,000 steps in 330 s; the wider default VAE since 2026-12-04 takes ~75 s
# on the GPU plus ~190 s of reconstruction RMS and latents on 2 CPU threads, so fewer).
# Usage (repository root, diffusers importable): bash benchmarks/testbed_gpu.sh OUT STEPS...
set -u
out=${1:?OUT folder}; shift
py=${PYTHON:-python3}
run() { "$py" -m diffrep.cli "$@"; }
mkdir -p "$out" /tmp/logs
start=$(date +%s)
run train_testbed --design scenes --out_dir testbed/v2 --device cuda --threads 2 > /tmp/logs/train-v2.log 2>&1 &
for steps in "$@"; do
  mkdir -p "/tmp/v2-a$steps" && cp -r testbed/v2/data "/tmp/v2-a$steps/"
  timeout "${TRAIN_LIMIT_S:-330}" "$py" -m diffrep.cli train_testbed --design scenes --out_dir "/tmp/v2-a$steps" \
    --models "[A]" --unet_steps "$steps" --device cuda --threads 2 > "/tmp/logs/train-a$steps.log" 2>&1 &
done
wait
echo "trained in $(( $(date +%s) - start )) s"
for dir in testbed/v2 $(for s in "$@"; do echo "/tmp/v2-a$s"; done); do
  tag=$(basename "$dir")
  run verify_testbed --testbed "$dir" --sscd false --seeds 2 --once 24 --threads 4 > "/tmp/logs/verify-$tag.log" 2>&1 &
done
wait
echo "verified in $(( $(date +%s) - start )) s"
tar -cf "$out/v2-a.tar" testbed/v2/memorizing testbed/v2/build.json testbed/v2/verify.json testbed/v2/verify.md
tar -cf "$out/v2-b.tar" testbed/v2/large-data
for s in "$@"; do
  [ -d "/tmp/v2-a$s/memorizing" ] && tar -cf "$out/a$s.tar" -C "/tmp/v2-a$s" memorizing build.json verify.md verify.json
done
for f in /tmp/logs/*.log; do echo "== $f"; cat "$f"; done > "$out/logs.txt"
grep -h -E "unet step|vae step 1199|written|Error|error" /tmp/logs/train-*.log | tail -40
cat testbed/v2/verify.md /tmp/v2-a*/verify.md 2>/dev/null
ls -la "$out"
