-- Scenario "list": the filtered, sorted list of a random user's visible tasks.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local path = "/api/v1/tasks?status=todo&priority[gte]=2&sort=-priority&limit=20"

function request()
  return wrk.format("GET", path, pick_user().get_headers)
end
