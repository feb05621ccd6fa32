-- Scenario "create": POST /api/v1/tasks into a random user's own project.
-- Titles start with "wrk-create <run id> " so the harness can delete these rows afterwards;
-- status "done" keeps them out of the "list" scenario's filter.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
  local user = pick_user()
  sequence = sequence + 1
  local body = string.format(
    '{"project_id": "%s", "title": "wrk-create %s %d-%d", "status": "done", "priority": %d}',
    user.project, run_id, thread_no, sequence, math.random(0, 5))
  return wrk.format("POST", "/api/v1/tasks", user.json_headers, body)
end
