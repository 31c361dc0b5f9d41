#!/usr/bin/env bash
# The CPU study of RESULTS.md: HPHN triplet without EE (n_inner_pts 0) and with EE (2) on the
# 100-species CUB subset in ../shared/data (real photos; 50 classes train, 50 test, class-disjoint),
# 64 px, random initialisation (no ImageNet weights offline), 3 seeds each, the epoch chosen on
# 10 validation classes held out of the 50 training classes.
#   bash bench/cub_study.sh [OUT_DIR] [LOSS [FLAGS...]]   (about 30-60 minutes on 2 cores)
# LOSS defaults to hphn_triplet (margin 1e-5, the release's); e.g. `triplet --margin 0.2`. FLAGS come
# last, so they override the study's own (e.g. `npair --num_instances 2 --epochs 300 ...`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cub_study}
loss=${2:-hphn_triplet}
shift $(( $# > 2 ? 2 : $# ))
extra=("$@")
[ "$loss" = hphn_triplet ] && [ ${#extra[@]} -eq 0 ] && extra=(--margin 1e-5)
data=${CUB_SUBSET:-../shared/data/CUB_100_subset}
for seed in 0 1 2; do
  for n in 0 2; do
    python3 main.py --data_name cub200 --data_dir "$data" --image_size 64 --pretrained false \
      --batch_size 64 --num_instances 8 --loss "$loss" --n_inner_pts $n \
      --lr 1e-3 --lr_decay_epochs 40 --epochs 60 --eval_epoch_term 10 --val_class_ratio 0.2 \
      --eval_metrics recall,map_at_r,nmi --num_workers 0 --seed $seed --save_dir "$out/n${n}_seed${seed}" \
      "${extra[@]}"
  done
done
