-- Durable create: POST /api/v1/groups with a name unique across wrk threads and runs.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  prefix = os.getenv("BENCH_PREFIX") .. "-" .. tid
  token = os.getenv("FABRICA_TOKEN")
end

function request()
  counter = counter + 1
  local body = '{"name":"bench-' .. prefix .. '-' .. counter .. '"}'
  return wrk.format("POST", "/api/v1/groups",
                    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token},
                    body)
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
