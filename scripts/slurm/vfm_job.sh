#!/bin/bash
# One experiment of the study as a SLURM job, safe to requeue (README: "Interruptions, several GPUs, many
# experiments"). Submit from a clone whose commit is pushed; the arguments go to `dvc exp run`:
#
#     sbatch scripts/slurm/vfm_job.sh -S 'models=[dinov2]'
#     REV=$(git rev-parse HEAD) sbatch scripts/slurm/vfm_job.sh -S decoder=mask2former
#
# First start: clones REPO at REV into WORK (a folder named after the job id), installs the environment, runs the
# experiment EXP_NAME and pushes it (git refs to origin, cached outputs to DVC's default remote).
# A requeued start (pre-emption, node failure, `scontrol requeue`: SLURM keeps the job id and the arguments) finds
# WORK and reuses it as it is, on the commit it started with: the stages dvc.lock records as done are skipped, the
# stage that was killed resumes from its checkpoint in CHECKPOINTS, and an experiment that had finished is only
# pushed. The log is appended to, not truncated. Remove WORK once the experiment is pushed.
#
# Adapt the resources below, load your modules before `make install`, and override any of the settings with
# environment variables at submission (sbatch exports them to the job, for every start).
#SBATCH --job-name=vfm-bench
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${SLURM_JOB_ID:?submit this script with sbatch (SLURM_JOB_ID is not set)}"
SCRATCH=${SCRATCH:-/scratch/$USER}
REPO=${REPO:-$(git -C "${SLURM_SUBMIT_DIR:-.}" remote get-url origin 2>/dev/null || true)}
: "${REPO:?set REPO to the git URL of the project (the submission folder has no origin remote)}"
REV=${REV:-main}                                      # a branch, tag or commit of REPO
WORK=${WORK:-$SCRATCH/vfm-$SLURM_JOB_ID}              # the job's working copy, kept across requeues
CHECKPOINTS=${CHECKPOINTS:-$SCRATCH/checkpoints}      # checkpoint.dir: training checkpoints, outside the working copy
DVC_CACHE=${DVC_CACHE:-/shared/dvc-cache}             # one DVC cache for every job
EXP_NAME=${EXP_NAME:-slurm-$SLURM_JOB_ID}             # the experiment's name (dvc exp show, dvc exp pull origin NAME)

echo "$(date '+%F %T') job $SLURM_JOB_ID start $((${SLURM_RESTART_COUNT:-0} + 1)) on $(uname -n): dvc exp run $*"
if [ -d "$WORK/.git" ]; then
    echo "reusing $WORK at $(git -C "$WORK" rev-parse --short HEAD)"
else
    rm -rf "$WORK.clone"                              # what a start killed during the clone left
    git clone -q "$REPO" "$WORK.clone"
    git -C "$WORK.clone" checkout -q "$REV"
    mv "$WORK.clone" "$WORK"                          # so WORK exists only complete, at REV
    echo "cloned $REPO at $(git -C "$WORK" rev-parse --short HEAD) into $WORK"
fi
cd "$WORK"

make install                                          # creates .venv; nothing to do once it is installed
export PATH="$WORK/.venv/bin:$PATH"                   # stage commands call `python`: it must be the environment's
# In .dvc/config.local (not in git), so the experiment's commit holds the study and nothing of this cluster.
# Links to a shared cache save its size on disk per job: never edit an output in place there.
dvc cache dir --local "$DVC_CACHE"
dvc config --local cache.shared group
dvc config --local cache.type hardlink,symlink,copy
export LAUNCH="torchrun --standalone --nproc_per_node=${SLURM_GPUS_ON_NODE:-1} --no-python"

if dvc exp list --name-only | grep -qxF "$EXP_NAME"; then
    echo "experiment $EXP_NAME finished before this start: pushing it"
else
    dvc exp run --pull --allow-missing -n "$EXP_NAME" -S "checkpoint.dir=$CHECKPOINTS" "$@"
fi
dvc exp push origin "$EXP_NAME"
echo "$(date '+%F %T') done: dvc exp pull origin $EXP_NAME, then dvc exp show / dvc metrics diff"
