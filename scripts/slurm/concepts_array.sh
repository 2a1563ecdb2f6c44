#!/bin/bash
# The concepts stage on img2dataset shards as a SLURM array: task I of N writes the concept shards of the I-th of N
# contiguous ranges of input shards (README: "Training on img2dataset shards"). Submit from the project's working
# copy, on a filesystem every node sees, with params.yaml set to concepts.source: img2dataset, concepts.shards
# naming the shards and prepare.workers = --cpus-per-task (the processes each task runs):
#
#     ARRAY=$(sbatch --parsable --array=0-99 scripts/slurm/concepts_array.sh)
#     sbatch --dependency=afterok:$ARRAY --wrap 'dvc repro -s concepts'   # merge: writes the manifest, the metrics
#
# A task skips the shards that are already current, so a pre-empted task resumes where it stopped when SLURM
# requeues it, and resubmitting the array redoes only missing or changed shards. Adapt the resources below.
#SBATCH --job-name=concepts
#SBATCH --cpus-per-task=32
#SBATCH --mem=64G
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%A_%a.out
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch --array=0-<N-1> (SLURM_ARRAY_TASK_ID is not set)}"
cd "${SLURM_SUBMIT_DIR:-.}"
export PATH="$PWD/.venv/bin:$PATH"                    # the environment of `make install`
echo "$(date '+%F %T') task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT on $(uname -n)"
python -m pipeline.stages.concepts --task "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"
