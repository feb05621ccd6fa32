-- Scenario "patch": PATCH /api/v1/tasks/{id} {"priority": n} on a random own task of a random user.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
  local user = pick_user()
  local body = string.format('{"priority": %d}', math.random(0, 5))
  return wrk.format("PATCH", "/api/v1/tasks/" .. pick_task(user), user.json_headers, body)
end
