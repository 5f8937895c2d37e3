#!/usr/bin/env bash
# Runs a study of real data on a Slurm cluster as a job array: task I of N runs
# `harness compare --data STUDY --shard I/N --out OUT/shard-I`, and a job that starts when every task has
# succeeded merges the shards with `harness report OUT/shard-* --out OUT/merged`.
#
#   scripts/cluster/slurm-study.sh STUDY.toml OUT SHARDS [SBATCH OPTIONS...]
#
#   SHARDS          how many array tasks; at most the number of jobs `harness compare --data STUDY --plan`
#                   lists (one per model and per model x method x seed)
#   SBATCH OPTIONS  passed to both sbatch calls, e.g. --partition=gpu --gres=gpu:1 --time=2-00:00:00
#   HARNESS         the harness binary (default: target/release/harness of this checkout)
#   COMPARE_ARGS    more arguments of `harness compare`, e.g. "--baselines gradmask,rrr --seeds 3 --device cuda"
#
# The batch scripts are written to OUT/slurm/ (edit and resubmit them as you like). A task that fails or is
# preempted is resumed by submitting it again (`sbatch --array=I OUT/slurm/shard.sbatch`): finished
# finetuning runs and evaluations are skipped, a killed run continues from its last epoch. Then run
# OUT/slurm/report.sbatch (or `harness report OUT/shard-* --out OUT/merged` anywhere). Other schedulers: run
# the same two commands, one `--shard I/N` per task (README, "A study on a cluster").
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
study=$(realpath "$1")
out=$(realpath -m "$2")
shards=$3
shift 3
case $shards in
  '' | *[!0-9]* | 0) echo "slurm-study: SHARDS must be a positive number, got '$shards'" >&2; exit 2 ;;
esac
harness=$(realpath "${HARNESS:-$(dirname "$0")/../../target/release/harness}")
[ -x "$harness" ] || { echo "slurm-study: no harness binary at $harness (cargo build --release, or set HARNESS)" >&2; exit 2; }
mkdir -p "$out/slurm" "$out/logs"

cat > "$out/slurm/shard.sbatch" <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=robustvit-study
#SBATCH --output=$out/logs/shard-%a.log
set -euo pipefail
exec "$harness" compare --data "$study" ${COMPARE_ARGS:-} --quiet \\
  --shard "\${SLURM_ARRAY_TASK_ID}/$shards" --out "$out/shard-\${SLURM_ARRAY_TASK_ID}"
SBATCH

cat > "$out/slurm/report.sbatch" <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=robustvit-report
#SBATCH --output=$out/logs/report.log
set -euo pipefail
exec "$harness" report "$out"/shard-* --out "$out/merged"
SBATCH

array=$(sbatch --parsable --array="1-$shards" "$@" "$out/slurm/shard.sbatch")
array=${array%%;*}
report=$(sbatch --parsable --dependency="afterok:$array" "$@" "$out/slurm/report.sbatch")
echo "submitted: shards job $array (tasks 1-$shards), report job ${report%%;*}; tables will be in $out/merged"
