-- Durable creates: POST to the wrk URL's path with BENCH_BODY (JSON), where every "{name}" becomes
-- a name unique across wrk threads and runs (BENCH_PREFIX). The token comes from FABRICA_TOKEN.
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  counter = 0
  prefix = os.getenv("BENCH_PREFIX") .. "-" .. tid
  token = os.getenv("FABRICA_TOKEN")
  template = os.getenv("BENCH_BODY")
end

function request()
  counter = counter + 1
  local body = template:gsub("{name}", "bench-" .. prefix .. "-" .. counter)
  return wrk.format("POST", nil,
                    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token},
                    body)
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
