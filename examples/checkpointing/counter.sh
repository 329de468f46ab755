#!/usr/bin/env bash
# Count to COUNT_TO, slowly, checkpointing from bash with `stormproof checkpoint commit`.
#
# * Every CHECKPOINT_EVERY steps, and whenever stormproof asks (the workflow's
#   checkpoint_interval: SIGUSR1, or the file $STORMPROOF_CHECKPOINT_DIR/.checkpoint-request),
#   it writes counter.txt into $STORMPROOF_CHECKPOINT_DIR and commits it. The command
#   returns once the checkpoint is saved: exit 0 saved, 1 not saved, 2 misuse.
# * On SIGTERM (the interruption notice) it checkpoints at once and exits 143.
# * When STORMPROOF_RESTORED=1 it carries on from the saved step.
#
# The checkpoint signal goes to the task's whole process group, so a bash task must trap
# it (an untrapped SIGUSR1 kills bash), and ignores it while the commit command starts.
#
# Environment: COUNT_TO (default 20), CHECKPOINT_EVERY (5), STEP_SECONDS (0.2).
set -euo pipefail

total=${COUNT_TO:-20}
every=${CHECKPOINT_EVERY:-5}
pause=${STEP_SECONDS:-0.2}
dir=${STORMPROOF_CHECKPOINT_DIR:?"not a checkpointed attempt: set checkpoint_enabled: true"}
state="$dir/counter.txt"

requested=0
stop=0
trap 'requested=1' USR1
trap 'stop=1' TERM

save() {
    echo "$1" > "$state"
    requested=0
    trap '' USR1  # inherited by the command: a request cannot kill it while it starts
    if ! stormproof checkpoint commit --meta "{\"step\": $1}"; then
        echo "warning: checkpoint at step $1 not saved" >&2
    fi
    trap 'requested=1' USR1
}

step=0
if [ "${STORMPROOF_RESTORED:-0}" = 1 ] && [ -f "$state" ]; then
    step=$(cat "$state")
    echo "resumed from step $step (checkpoint ${STORMPROOF_CHECKPOINT_SEQ:-?})"
fi

while [ "$step" -lt "$total" ] && [ "$stop" = 0 ]; do
    # `wait` returns as soon as a trapped signal arrives; plain `sleep` would delay the trap
    sleep "$pause" & wait $! || true
    step=$((step + 1))
    echo "step $step"
    if [ "$step" -lt "$total" ]; then
        if [ $((step % every)) -eq 0 ] || [ "$requested" = 1 ] || [ -e "$dir/.checkpoint-request" ]; then
            save "$step"
        fi
    fi
done

if [ "$stop" = 1 ] && [ "$step" -lt "$total" ]; then
    save "$step"
    exit 143
fi
echo "done: counted to $total"
