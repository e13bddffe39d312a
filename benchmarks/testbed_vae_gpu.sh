#!/usr/bin/env bash
# Testbed v2's VAE variants on a GPU: for each VARIANT (tag:channels:latent_channels:vae_steps,
# channels comma-separated, e.g. w8:32,64,128:8:1200), train_testbed --design scenes with
# that VAE and the committed UNet recipe (A, then B) into /tmp/vae-<tag>, each from a copy
# of the committed pool, all beside each other on one GPU. Why: at 64 px the committed
# VAE (16,32,64 channels, 4 latent channels) reconstructs the pool at SSCD ~0.49 to the
# original (median), so no model decoding through it can copy above the scan's 0.5; SSCD
# of the variants' reconstructions and of A's generations is measured where the SSCD
# weights are installed (benchmarks/testbed_vae_ceiling.py). Each model comes back as a
# tar under $OUT (B without the VAE, text encoder and tokenizer it shares with A).
# Trainings stop after TRAIN_LIMIT_S (470 s) so the call fits 10 minutes.
# Usage (repository root, diffusers importable): bash benchmarks/testbed_vae_gpu.sh OUT VARIANT...
set -u
out=${1:?OUT folder}; shift
py=${PYTHON:-python3}
mkdir -p "$out" /tmp/logs
start=$(date +%s)
for variant in "$@"; do
  IFS=: read -r tag channels latent steps <<< "$variant"
  dir=/tmp/vae-$tag
  mkdir -p "$dir" && cp -r testbed/v2/data "$dir/"
  timeout "${TRAIN_LIMIT_S:-470}" "$py" -m diffrep.cli train_testbed --design scenes --out_dir "$dir" \
    --vae_channels "[$channels]" --latent_channels "$latent" --vae_steps "$steps" \
    --device cuda --threads 2 > "/tmp/logs/train-$tag.log" 2>&1 &
done
wait
echo "trained in $(( $(date +%s) - start )) s"
for variant in "$@"; do
  tag=${variant%%:*}
  dir=/tmp/vae-$tag
  [ -d "$dir/memorizing/testbed" ] && tar -cf "$out/$tag-a.tar" -C "$dir" memorizing
  [ -d "$dir/large-data/testbed" ] && tar -cf "$out/$tag-b.tar" -C "$dir" \
    --exclude=large-data/vae --exclude=large-data/text_encoder --exclude=large-data/tokenizer large-data
  [ -f "$dir/build.json" ] && cp "$dir/build.json" "$out/$tag-build.json" 2>/dev/null || true
done
for f in /tmp/logs/*.log; do echo "== $f"; cat "$f"; done > "$out/logs.txt"
grep -h -E "vae: reconstruction|unet step [0-9]*000/|Error|error" /tmp/logs/train-*.log | tail -40
ls -la "$out"
