#!/usr/bin/env bash
# Regenerates the committed leaderboards (tasks/<task>/LEADERBOARD.md, leaderboard.csv and .png) from the repository
# root: the paper's two smaller widths (α 0.5 and 0.25) for each built-in task on its built-in data, at the quick
# start's ρ 0.571 and, for classification, at ρ 0.429 too, and Table 14's face-embedding students; short runs, then
# one leaderboard command over them.
# Fine-grained recognition is transfer learning: its models start from the classification checkpoint of their
# width (the task card's recipe), as a start from scratch stays at chance on the synthetic breeds.
#   bash tasks/regenerate_leaderboards.sh        (about 55 minutes on 2 idle CPU cores, 35 of them Table 14's)
set -euo pipefail
runs=outputs/leaderboards

sweep() {  # sweep <folder> <overrides...>: one multirun into $runs/<folder>
    local folder=$1
    shift
    python -m mnet_tasks -m hydra.sweep.dir="$runs/$folder" "$@"
}

rm -rf "$runs"
# jobs alpha-major: 0 and 1 are α=0.5 (ρ 0.571, 0.429), 2 and 3 are α=0.25
sweep classification task=classification backbone.alpha=0.5,0.25 backbone.rho=0.571,0.429 trainer.max_epochs=5
sweep attributes task=attributes backbone.alpha=0.5,0.25 trainer.max_epochs=4
sweep geolocalization task=geolocalization backbone.alpha=0.5,0.25 trainer.max_epochs=4
sweep detection task=detection backbone.alpha=0.5,0.25 trainer.max_epochs=5
sweep finegrained task=finegrained backbone.alpha=0.5 trainer.max_epochs=6 \
    backbone.pretrained="$runs/classification/0/checkpoints/last.ckpt"
sweep finegrained_025 task=finegrained backbone.alpha=0.25 trainer.max_epochs=6 \
    backbone.pretrained="$runs/classification/2/checkpoints/last.ckpt"
# Face embeddings: Table 14's recipe, a 1.0 MobileNet-128 teacher on the identities, then its four students
python -m mnet_tasks.distill experiment=face_embedding_distill distill.output_dir="$runs/face_embedding"
python -m mnet_tasks.leaderboard "$runs" --replace
