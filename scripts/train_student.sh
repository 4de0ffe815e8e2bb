#!/usr/bin/env bash
# Distil the bundled v16 into a 5-level ngf-16 student (issue 38), on a shared 2-core CPU:
# one process, one thread, nice 10, a checkpoint every epoch (68 updates). Run it again with
# RESUME=1 to continue (the learning-rate schedule follows from the epoch and EPOCHS*).
#   OUT=runs/student16b INIT=runs/student16b/init-epoch8.safetensors \
#     nohup nice -n 10 scripts/train_student.sh > runs/student16b/log 2>&1 &
# A first run (runs/student16: --road-weight 8 --lambda-logit 20, 8 epochs) painted a quarter of
# the val pixels road-white (v16: 11%, the real maps 8%); this recipe halves both and starts from
# its epoch 8 (INIT). Phase 2 (the last epochs) may add the shift term: LAMBDA_SHIFT=200 RESUME=1.
# student16c: INIT=runs/student16b/model.safetensors HIGHWAY_WEIGHT=30 LR=2e-4 EPOCHS=8
# EPOCHS_DECAY=12. student16d: INIT=runs/student16c/model.safetensors HIGHWAY_WEIGHT=30 LR=1e-4
# EPOCHS=4 EPOCHS_DECAY=4 LAMBDA_GAN=1 D_WARMUP=68 THREADS=2 (the discriminator back).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/student16b}
EXTRA=()
if [[ "${RESUME:-0}" == 1 ]]; then EXTRA+=(--resume); fi
if [[ -n "${INIT:-}" ]]; then EXTRA+=(--init-from "$INIT"); fi
exec .venv/bin/geomap-gan -v train ../shared/data/maps286 --val-dir ../shared/data/maps256 \
  --ngf 16 --num-downs 5 --antialias \
  --teacher geomap_gan/models/default.safetensors \
  --lambda-gan "${LAMBDA_GAN:-0}" --d-warmup "${D_WARMUP:-0}" --lambda-l1 25 --lambda-teacher 100 --lambda-logit "${LAMBDA_LOGIT:-10}" \
  --road-weight "${ROAD_WEIGHT:-4}" --highway-weight "${HIGHWAY_WEIGHT:-0}" \
  --lambda-iou 10 --lambda-iou-teacher 10 --lambda-shift "${LAMBDA_SHIFT:-0}" \
  --aug-dihedral --aug-scale 0.2 --aug-photometric --aug-blur --aug-noise --aug-jpeg \
  --aug-clean 0.5 --batch-size 16 --lr "${LR:-5e-4}" --beta1 0.9 \
  --epochs "${EPOCHS:-24}" --epochs-decay "${EPOCHS_DECAY:-24}" \
  --save-every 1 --val-every 2 --val-subset 256 --seed 38 --threads "${THREADS:-1}" \
  --name geomap-gan-student16 --out "$OUT" "${EXTRA[@]}"
