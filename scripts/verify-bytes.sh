#!/usr/bin/env bash
# What each light-client predicate fetches from a node: bytes on the wire
# and seconds, each run as its own `govtune verify` process (nothing cached),
# against a demo left running:
#
#   cargo run -p govtune -- demo --dir govtune-demo --keep-running
#   scripts/verify-bytes.sh govtune-demo [GOVTUNE_BINARY]
#
# For each source it also prints the rights-holder's budget: twice its own
# records' canonical bytes plus 2 KiB per entry naming it.
set -euo pipefail
dir=${1:?usage: scripts/verify-bytes.sh DEMO_DIR [GOVTUNE_BINARY]}
bin=${2:-target/debug/govtune}
genesis=$dir/net/genesis.json
demo=$dir/demo.json
node=$(grep -o '"api": "[^"]*"' "$dir/net/testnet.json" | head -1 | cut -d'"' -f4)
field() { grep -o "\"$1\": \"[0-9a-f]*\"" "$demo" | head -1 | cut -d'"' -f4; }
campaign=$(field campaign)
base=$(field base_campaign)
policy=$(field policy)
revoked=$(field revoked)

run() {
    local name=$1
    shift
    local start end out
    start=$(date +%s.%N)
    out=$("$bin" "$@" 2>/dev/null || true)
    end=$(date +%s.%N)
    local bytes own naming extra=""
    bytes=$(grep -o '"bytes_fetched": [0-9]*' <<<"$out" | head -1 | awk '{print $2}' || true)
    naming=$(grep -o '[0-9]* entries name the source; its own records in them are [0-9]*' <<<"$out" | head -1 || true)
    if [ -n "$naming" ]; then
        own=$(awk '{print $NF}' <<<"$naming")
        local k
        k=$(awk '{print $1}' <<<"$naming")
        extra=$(awk -v b="$bytes" -v o="$own" -v k="$k" \
            'BEGIN { budget = 2 * o + 2048 * k; printf "  naming %d, own %d B, budget %d B, %.2f of it", k, o, budget, b / budget }')
    fi
    printf '%-28s %12s B %7.2f s%s\n' "$name" "${bytes:-?}" "$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')" "$extra"
}

run "policy (fine-tune)" verify --genesis "$genesis" --node "$node" --json policy --campaign "$campaign" --approved "$policy"
run "policy (base)" verify --genesis "$genesis" --node "$node" --json policy --campaign "$base" --approved "$policy"
run "audits (fine-tune)" verify --genesis "$genesis" --node "$node" --json audits --campaign "$campaign"
run "model" verify --genesis "$genesis" --node "$node" --json model --campaign "$campaign" --weights "$dir/model.safetensors"
first=""
for id in $(grep -o '"id": "[0-9a-f]*"' "$demo" | cut -d'"' -f4); do
    run "source ${id:0:8}" verify --genesis "$genesis" --node "$node" --json source --id "$id"
    first=${first:-$id}
done
run "source --scan ${first:0:8}" verify --genesis "$genesis" --node "$node" --json source --scan --id "$first"
run "audit revocation ${revoked:0:8}" audit revocation --genesis "$genesis" --node "$node" --json --source "$revoked"
