#!/bin/sh
# The lightest fake agent (Claude stream-json) for benchmarks: starts in ~1 ms, so what is measured
# is bridge, not Python start-up. Understands only `sleep=SECONDS` in the prompt (the arg after -p).
prompt=""
[ "$1" = "-p" ] && prompt="$2"
session="fake-sh-$$"
printf '{"type":"system","subtype":"init","session_id":"%s"}\n' "$session"
case "$prompt" in
  *sleep=*) s=${prompt#*sleep=}; s=${s%%;*}; sleep "$s" ;;
esac
printf '{"type":"assistant","session_id":"%s","message":{"content":[{"type":"text","text":"done"}]}}\n' "$session"
printf '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"%s","usage":{"input_tokens":10,"output_tokens":5},"total_cost_usd":0,"num_turns":1}\n' "$session"
