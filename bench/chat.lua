-- One OpenAI chat completion per request: POST BENCH_BODY with the key in BENCH_KEY (empty for
-- the upstream directly). Non-200 answers are reported on stderr.
function init(args)
  key = os.getenv("BENCH_KEY") or ""
  body = os.getenv("BENCH_BODY")
end

function request()
  local headers = {["Content-Type"] = "application/json"}
  if key ~= "" then headers["Authorization"] = "Bearer " .. key end
  return wrk.format("POST", "/v1/chat/completions", headers, body)
end

function response(status, headers, body)
  if status ~= 200 then io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n") end
end
