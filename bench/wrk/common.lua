-- Shared by the scenario scripts (loaded with dofile). wrk runs one Lua state per thread plus
-- one for setup()/done(); each thread loads the data file in init().
--
-- Arguments after `--`: <data file> <run id>
--   data file: one line per seeded user: "<token> <project_id> <task_id> <task_id> ..."
-- done() prints one line "WRK_JSON {...}" that bench/wrk.py parses.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_no", thread_count)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  run_id = args[2] or "run"
  users = {}
  for line in io.lines(path) do
    local fields = {}
    for word in line:gmatch("%S+") do
      fields[#fields + 1] = word
    end
    if #fields >= 3 then
      local tasks = {}
      for i = 3, #fields do
        tasks[#tasks + 1] = fields[i]
      end
      users[#users + 1] = {
        get_headers = { ["Authorization"] = "Bearer " .. fields[1] },
        json_headers = { ["Authorization"] = "Bearer " .. fields[1], ["Content-Type"] = "application/json" },
        project = fields[2],
        tasks = tasks,
      }
    end
  end
  user_count = #users
  if user_count == 0 then
    error("no users in data file " .. tostring(path))
  end
  -- Same pseudo-random sequence on every run: both servers see the same request mix.
  math.randomseed(7919 * thread_no + 17)
  sequence = 0
  statuses = {}
end

-- A random user (rotating over all tokens), so no single session or row is hot.
function pick_user()
  return users[math.random(user_count)]
end

function pick_task(user)
  return user.tasks[math.random(#user.tasks)]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function json_number(n)
  if n ~= n or n == math.huge or n == -math.huge then
    return "null"
  end
  return string.format("%.3f", n)
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local per_thread = thread:get("statuses") or {}
    for status, n in pairs(per_thread) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local status_parts = {}
  for status, n in pairs(counts) do
    status_parts[#status_parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  local parts = {
    string.format('"duration_us": %d', summary.duration),
    string.format('"requests": %d', summary.requests),
    string.format('"bytes": %d', summary.bytes),
    string.format('"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"statuses": {%s}', table.concat(status_parts, ", ")),
    string.format('"latency_us": {"min": %s, "mean": %s, "stdev": %s, "max": %s, "p50": %s, "p90": %s, "p99": %s, "p999": %s}',
      json_number(latency.min), json_number(latency.mean), json_number(latency.stdev), json_number(latency.max),
      json_number(latency:percentile(50)), json_number(latency:percentile(90)),
      json_number(latency:percentile(99)), json_number(latency:percentile(99.9))),
  }
  io.write("WRK_JSON {" .. table.concat(parts, ", ") .. "}\n")
end
