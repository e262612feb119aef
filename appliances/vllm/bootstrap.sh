#!/bin/sh
# The vLLM appliance's guest side, run once at every boot of an appliance VM (a systemd unit
# in the appliance image, see docs/appliances.md). POSIX sh; needs mount, ip, wget (busybox
# has them all).
#   1. reads the context (CONTEXT CD-ROM): served name, tensor-parallel sizes the model's
#      heads allow, vLLM settings, the per-VM backend secret, the guest API's URL and token;
#   2. mounts the MODEL volume read-only (the disk holding config.json);
#   3. picks the largest legal tensor-parallel size not above the VM's GPUs;
#   4. starts `vllm serve` on the local path with --served-model-name and --api-key;
#   5. waits for /health 200 and for /v1/models to list the name, then reports READY with its
#      URL through the guest API, which makes the VM a backend of the tenant's endpoint;
#   6. on failure reports the error and the tail of vLLM's log, and NOT READY if vLLM dies.
set -u

CONTEXT_FILE=${FABRICA_CONTEXT_FILE:-/run/fabrica/context/context.sh}
if [ -z "${FABRICA_GUEST_TOKEN:-}" ]; then
  if [ ! -f "$CONTEXT_FILE" ]; then
    mkdir -p /run/fabrica/context
    mount -t iso9660 -o ro /dev/disk/by-label/CONTEXT /run/fabrica/context 2>/dev/null ||
      mount -t iso9660 -o ro /dev/sr0 /run/fabrica/context
  fi
  . "$CONTEXT_FILE"
fi
LOG=${VLLM_LOG:-/var/log/vllm.log}
MODEL_DIR=${VLLM_MODEL_DIR:-/models}
PORT=${VLLM_PORT:-8000}
NAME=${VLLM_SERVED_MODEL_NAME:?the context names no served model}
TIMEOUT=${VLLM_START_TIMEOUT:-3600}
mkdir -p "$(dirname "$LOG")" "$MODEL_DIR"

say() { echo "fabrica-vllm: $*"; }

# A JSON string's inside: backslashes, quotes and tabs escaped, other control characters
# dropped, lines joined with \n.
json_text() {
  tr -d '\000-\010\013-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' |
    awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }'
}

# POSTs a report to the guest API, retrying while it cannot be reached.
report() {
  tries=0
  while [ "$tries" -lt 30 ]; do
    if wget -q -O /dev/null --header "Authorization: Bearer $FABRICA_GUEST_TOKEN" \
      --header "Content-Type: application/json" --post-data "$1" \
      "$FABRICA_GUEST_URL/api/v1/guest/self"; then
      return 0
    fi
    tries=$((tries + 1))
    sleep 2
  done
  say "could not reach the guest API at $FABRICA_GUEST_URL"
  return 1
}

fail() {
  say "failed: $1"
  message=$(printf '%s' "$1" | json_text)
  tail=$(tail -c 8000 "$LOG" 2>/dev/null | json_text)
  report "{\"ready\":false,\"error\":\"$message\",\"log_tail\":\"$tail\"}"
  exit 1
}

ip link set lo up 2>/dev/null  # vLLM's own checks below go to 127.0.0.1.
# The guest API's link-local address is on-link: no route to the control plane is needed.
case "$FABRICA_GUEST_URL" in
  http://169.254.169.254*) ip route add 169.254.169.254/32 dev "${ETH0_IFACE:-eth0}" 2>/dev/null ;;
esac

# The MODEL volume: the read-only disk whose root holds config.json.
found=""
for disk in /dev/vd[a-z] /dev/sd[b-z]; do
  [ -b "$disk" ] || continue
  if mount -t ext4 -o ro "$disk" "$MODEL_DIR" 2>/dev/null; then
    if [ -f "$MODEL_DIR/config.json" ]; then
      found=$disk
      break
    fi
    umount "$MODEL_DIR"
  fi
done
[ -n "$found" ] || fail "no MODEL volume (a disk with config.json) is attached"
say "model volume $found at $MODEL_DIR"

# GPUs: the devices the VM has, else what it asked for; tensor parallelism over at most that
# many, and only a size that divides the attention heads (the list comes from the model).
gpus=$(ls /dev/nvidia[0-9]* 2>/dev/null | wc -l)
[ "$gpus" -gt 0 ] || gpus=${FABRICA_GPUS:-1}
[ "$gpus" -gt 0 ] || gpus=1
tp=1
for size in ${VLLM_TP_SIZES:-1}; do
  if [ "$size" -le "$gpus" ] && [ "$size" -gt "$tp" ]; then tp=$size; fi
done
say "tensor-parallel size $tp of $gpus GPUs (legal: ${VLLM_TP_SIZES:-1})"

set -- serve "$MODEL_DIR" --served-model-name "$NAME" --api-key "${FABRICA_BACKEND_KEY:?no backend secret}" \
  --tensor-parallel-size "$tp" --host 0.0.0.0 --port "$PORT"
[ -n "${VLLM_MAX_MODEL_LEN:-}" ] && set -- "$@" --max-model-len "$VLLM_MAX_MODEL_LEN"
[ -n "${VLLM_GPU_MEMORY_UTILIZATION:-}" ] && set -- "$@" --gpu-memory-utilization "$VLLM_GPU_MEMORY_UTILIZATION"
[ -n "${VLLM_DTYPE:-}" ] && set -- "$@" --dtype "$VLLM_DTYPE"
[ -n "${VLLM_QUANTIZATION:-}" ] && set -- "$@" --quantization "$VLLM_QUANTIZATION"
# Extra arguments are split on spaces, as a person would type them.
# shellcheck disable=SC2086
vllm "$@" ${VLLM_EXTRA_ARGS:-} >>"$LOG" 2>&1 &
pid=$!

# Ready means serving: /health answers 200 and /v1/models lists the served name.
waited=0
while :; do
  kill -0 "$pid" 2>/dev/null || fail "vllm exited while starting"
  if wget -q -O /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null &&
    wget -q -O - --header "Authorization: Bearer $FABRICA_BACKEND_KEY" \
      "http://127.0.0.1:$PORT/v1/models" 2>/dev/null | grep -q "\"id\": *\"$NAME\""; then
    break
  fi
  [ "$waited" -lt "$TIMEOUT" ] || fail "vllm did not serve $NAME within $TIMEOUT s"
  sleep 2
  waited=$((waited + 2))
done

address=${ETH0_IP:?the VM has no address on eth0}
report "{\"ready\":true,\"attributes\":{\"url\":\"http://$address:$PORT\",\"model\":\"$NAME\",\"tensor_parallel_size\":\"$tp\"}}" ||
  exit 1
say "READY: http://$address:$PORT serves $NAME"

while kill -0 "$pid" 2>/dev/null; do sleep 5; done
fail "vllm exited"
