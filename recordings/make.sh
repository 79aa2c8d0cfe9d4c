#!/usr/bin/env bash
# Regenerate the committed recordings from real qrescue commands against the emulated modem.
#
#   recordings/make.sh flash PROFILE   -> recordings/emulated-flash-PROFILE.jsonl
#       `qrescue sim --pty` in the background, then
#       `qrescue --record … flash --port PTY` of the package `qrescue sim --emit-package` writes
#       (seed 1, 1 MiB of images: tests/recording.rs regenerates the same package to replay it).
#   recordings/make.sh crash PROFILE   -> recordings/crash-dump-PROFILE.jsonl
#       `qrescue --record … demo --scenario crash --fast` (an in-process RAM dump).
#   recordings/make.sh bootloop PROFILE -> recordings/bootloop-9008-PROFILE.jsonl
#       `qrescue sim --boot-loop 14:10 --pty` in the background, then
#       `qrescue --record … watch --no-usb --sim SOCKET --for 60` (five appearances, 14 s apart).
#   recordings/make.sh switch PROFILE  -> recordings/switch-normal-to-edl-PROFILE.jsonl
#       `qrescue sim --normal-for 5 --pty` in the background (normal mode for 5 s, then 9008
#       2 s later on the high-speed bus), then `qrescue --record … watch --no-usb --sim SOCKET
#       --for 12`.
#
# QRESCUE=path/to/qrescue overrides the binary (default: cargo run --release -q --).
# Existing recordings are never overwritten: delete one first to make it again.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# Run from the repository root so the recorded command line reads `--record recordings/…`.
cd "$here/.."
kind="${1:?usage: make.sh flash|crash|bootloop|switch PROFILE}"
profile="${2:-rm502q}"
if [[ -n "${QRESCUE:-}" ]]; then
    q=("$QRESCUE")
else
    q=(cargo run --release -q --)
fi

# Run `qrescue sim ARGS…` in the background (the caller's trap kills "$sim_pid") and set
# $socket to the announcement socket its first JSON line names.
start_sim() {
    "${q[@]}" sim --profile "$profile" --pty "$@" >"$work/sim.json" 2>"$work/sim.log" &
    sim_pid=$!
    socket=""
    for _ in $(seq 100); do
        socket="$(sed -n 's/.*"socket":"\([^"]*\)".*/\1/p' "$work/sim.json")"
        [[ -n "$socket" ]] && break
        sleep 0.1
    done
    [[ -n "$socket" ]] || { echo "the emulator did not start: $(cat "$work/sim.log")" >&2; exit 1; }
}

case "$kind" in
bootloop | switch)
    work="$(mktemp -d)"
    sim_pid=""
    cleanup() {
        if [[ -n "$sim_pid" ]]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
        rm -rf "$work"
    }
    trap cleanup EXIT
    if [[ "$kind" == bootloop ]]; then
        out="recordings/bootloop-9008-$profile.jsonl"
        start_sim --boot-loop 14:10
        secs=60
    else
        out="recordings/switch-normal-to-edl-$profile.jsonl"
        start_sim --normal-for 5
        secs=12
    fi
    "${q[@]}" --record "$out" watch --no-usb --sim "$socket" --for "$secs"
    ;;
flash)
    out="recordings/emulated-flash-$profile.jsonl"
    work="$(mktemp -d)"
    sim_pid=""
    cleanup() {
        if [[ -n "$sim_pid" ]]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
        rm -rf "$work"
    }
    trap cleanup EXIT
    "${q[@]}" sim --profile "$profile" --seed 1 --emit-package "$work/package" --package-mib 1 --json \
        >"$work/package.json"
    rawprogram="$(sed -n 's/.*"rawprogram":\["\([^"]*\)".*/\1/p' "$work/package.json")"
    patch="$(sed -n 's/.*"patch":\["\([^"]*\)".*/\1/p' "$work/package.json")"
    "${q[@]}" sim --profile "$profile" --seed 1 --pty >"$work/sim.json" 2>"$work/sim.log" &
    sim_pid=$!
    for _ in $(seq 100); do
        pty="$(sed -n 's/.*"pty":"\([^"]*\)".*/\1/p' "$work/sim.json")"
        [[ -n "$pty" ]] && break
        sleep 0.1
    done
    [[ -n "${pty:-}" ]] || { echo "the emulator did not start: $(cat "$work/sim.log")" >&2; exit 1; }
    "${q[@]}" --record "$out" flash --port "$pty" --rawprogram "$rawprogram" --patch "$patch"
    ;;
crash)
    out="recordings/crash-dump-$profile.jsonl"
    "${q[@]}" --record "$out" demo --scenario crash --fast --profile "$profile"
    ;;
*)
    echo "usage: make.sh flash|crash|bootloop|switch PROFILE" >&2
    exit 2
    ;;
esac
echo "wrote $out ($(wc -c <"$out") bytes)"
