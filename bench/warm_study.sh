#!/usr/bin/env bash
# The warm-start study of RESULTS.md on the 100-species CUB subset (64 px, GoogLeNet, no ImageNet
# weights offline). Per seed: stage 1 trains one warm start without EE (Proxy-Anchor) on the 40
# training classes (10 of the 50 held out for validation, the same split in every run); stage 2
# starts every arm from that warm start (--init_from) and chooses its epoch on the 10 held-out classes.
#   bash bench/warm_study.sh [OUT_DIR]        then  python3 bench/warm_study_report.py OUT_DIR
# Seeds run one after another (seed-major), so an interrupted study still holds whole seeds; a run whose
# model_final.params exists is skipped, so running the script again finishes an interrupted study.
# Sizes come from the environment (defaults: 40 runs, 63 minutes of a shared core in RESULTS.md):
#   SEEDS="0 1 2 3 4" S1_EPOCHS=30 S1_LR=1e-3 S2_EPOCHS=6 S2_EVAL=3 S2_LR=3e-4 CUB_SUBSET=../shared/data/CUB_100_subset
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/warm_study}
data=${CUB_SUBSET:-../shared/data/CUB_100_subset}
seeds=${SEEDS:-0 1 2 3 4}
s1_epochs=${S1_EPOCHS:-30}
s2_epochs=${S2_EPOCHS:-6}
# the arms of stage 2: NAME and its loss flags
arms=(
  "hphn_n0         --loss hphn_triplet --margin 1e-5 --n_inner_pts 0"
  "hphn_n2_release --loss hphn_triplet --margin 1e-5 --n_inner_pts 2 --ee_negative_grad release"
  "hphn_n2_exact   --loss hphn_triplet --margin 1e-5 --n_inner_pts 2 --ee_negative_grad exact"
  "triplet_n0      --loss triplet --margin 0.2 --n_inner_pts 0"
  "triplet_n2      --loss triplet --margin 0.2 --n_inner_pts 2"
  "ms_n0           --loss ms --n_inner_pts 0"
  "ms_n2           --loss ms --n_inner_pts 2"
)
common=(--data_name cub200 --data_dir "$data" --image_size 64 --pretrained false --batch_size 64
        --num_instances 8 --val_class_ratio 0.2 --eval_metrics recall,map_at_r,nmi --num_workers 0
        --checkpoint_epochs 0)
mkdir -p "$out"
run() {   # run SAVE_DIR FLAGS...: main.py unless SAVE_DIR already holds a finished run; logs its time
  local dir=$1; shift
  if [ -f "$dir/model_final.params" ]; then echo "skip $dir (finished)"; return; fi
  local start=$SECONDS
  python3 main.py "${common[@]}" --save_dir "$dir" "$@" > "$dir.log" 2>&1 || { tail -3 "$dir.log"; exit 1; }
  echo "$(basename "$dir") $((SECONDS - start)) s" | tee -a "$out/times.txt"
}
for seed in $seeds; do
  # the lr never decays within these short schedules (a decay epoch past the end)
  run "$out/warm_seed$seed" --loss proxy_anchor --lr "${S1_LR:-1e-3}" --epochs "$s1_epochs" \
    --eval_epoch_term "$s1_epochs" --lr_decay_epochs $((s1_epochs + 1)) --seed "$seed"
  for arm in "${arms[@]}"; do
    read -r name flags <<< "$arm"
    # shellcheck disable=SC2086  # the arm's flags split into words on purpose
    run "$out/${name}_seed$seed" $flags --init_from "$out/warm_seed$seed" --lr "${S2_LR:-3e-4}" \
      --epochs "$s2_epochs" --eval_epoch_term "${S2_EVAL:-3}" --lr_decay_epochs $((s2_epochs + 1)) --seed "$seed"
  done
done
