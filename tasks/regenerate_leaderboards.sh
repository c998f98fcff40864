#!/usr/bin/env bash
# Regenerates the committed leaderboards (tasks/<task>/LEADERBOARD.md, leaderboard.csv and .png) from the repository
# root: each built-in task's grid of the paper's two smaller widths and input sizes (α 0.5 and 0.25, ρ 0.571 and
# 0.429) on its built-in data, short runs, then one leaderboard command over them. Fine-grained recognition is
# transfer learning: its models start from the classification grid's checkpoint of their width (the task card's
# recipe), as a start from scratch stays at chance on the synthetic breeds.
#   bash tasks/regenerate_leaderboards.sh        (about 30 minutes on 2 CPU cores)
set -euo pipefail
runs=outputs/leaderboards

sweep() {  # sweep <folder> <overrides...>: one multirun into $runs/<folder>
    local folder=$1
    shift
    python -m mnet_tasks -m hydra.sweep.dir="$runs/$folder" "$@"
}

rm -rf "$runs"
grid=(backbone.alpha=0.5,0.25 backbone.rho=0.571,0.429)  # jobs alpha-major: 0 and 1 are α=0.5, 2 and 3 α=0.25
sweep classification task=classification "${grid[@]}" trainer.max_epochs=5
sweep attributes task=attributes "${grid[@]}" trainer.max_epochs=4
sweep geolocalization task=geolocalization "${grid[@]}" trainer.max_epochs=4
sweep detection task=detection "${grid[@]}" trainer.max_epochs=5
for alpha_job in 0.5:0 0.25:2; do
    alpha=${alpha_job%%:*}
    sweep "finegrained_$alpha" task=finegrained backbone.alpha="$alpha" backbone.rho=0.571,0.429 trainer.max_epochs=6 \
        backbone.pretrained="$runs/classification/${alpha_job##*:}/checkpoints/last.ckpt"
done
python -m mnet_tasks.leaderboard "$runs" --replace
