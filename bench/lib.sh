# Sourced by the bench scripts: a Release build and a private fabricad to drive.

# Builds Release without tests; sets BIN.
bench_build() {
  scripts/deps
  FABRICA_BUILD_TYPE=Release scripts/build build-release -DFABRICA_BUILD_TESTS=OFF >/dev/null
  BIN=build-release/bin
}

# bench_start_fabricad DATA_DIR [FLAG...]: starts fabricad on a free loopback port with SQLite
# under DATA_DIR (access log off unless a FLAG sets one) and logs in as admin. Plain HTTP unless
# a FLAG is --tls-cert (then https, and CURL_CA must name the CA). Sets FABRICAD (pid), URL and
# exports FABRICA_TOKEN.
bench_start_fabricad() {
  local dir=$1 log=(--access-log off) plain=(--insecure-http) scheme=http arg
  shift
  for arg in "$@"; do
    [ "$arg" = --access-log ] && log=()
    [ "$arg" = --tls-cert ] && plain=() && scheme=https
  done
  rm -rf "$dir"
  FABRICA_ADMIN_PASSWORD=bench-admin-password "$BIN/fabricad" --data-dir "$dir" \
    --listen 127.0.0.1:0 "${plain[@]}" "${log[@]}" "$@" >"$dir.log" 2>&1 &
  FABRICAD=$!
  for _ in $(seq 1 100); do [ -s "$dir/fabricad.addr" ] && break; sleep 0.1; done
  URL="$scheme://$(cat "$dir/fabricad.addr")"
  export FABRICA_TOKEN
  FABRICA_TOKEN=$(curl -fsS ${CURL_CA:+--cacert "$CURL_CA"} -u admin:bench-admin-password \
    -X POST "$URL/api/v1/auth/tokens" | sed -E 's/.*"token":"([^"]+)".*/\1/')
}

# bench_join HOSTS PROFILE PREFIX [FLAG...]: HOSTS simulated hosts join through one fleet token.
# Prints the simulator's summary.
bench_join() {
  local hosts=$1 profile=$2 prefix=$3
  shift 3
  local join
  join=$(curl -fsS -H "Authorization: Bearer $FABRICA_TOKEN" -d "{\"count\": $hosts}" \
    "$URL/api/v1/hosts/join-tokens" | sed -E 's/.*"join_token":"([^"]+)".*/\1/')
  "$BIN/fabrica-agent" --server "$URL" --join-token "$join" --simulate "$hosts" \
    --profile "$profile" --sim-prefix "$prefix" "$@"
}

# bench_wrk_row NAME WRK-OUTPUT: one table row of requests/s, p50, p99, non-2xx.
bench_wrk_row() {
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$2")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$2")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$2")
  errors=$(awk '/Non-2xx/ {print $4}' <<<"$2")
  printf '%-34s %12s %10s %10s %8s' "$1" "$rps" "$p50" "$p99" "${errors:-0}"
}

bench_machine() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); fabricad $("$BIN/fabricad" --version)"
}
