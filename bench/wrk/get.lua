-- Scenario "get": GET /api/v1/tasks/{id}, a random task of a random user, with that user's token.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
  local user = pick_user()
  return wrk.format("GET", "/api/v1/tasks/" .. pick_task(user), user.get_headers)
end
