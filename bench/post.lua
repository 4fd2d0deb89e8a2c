-- wrk script: POST NinjaOne-shaped activities, each with a distinct id.
-- The runner sets BENCH_BODY_FILE (a body where __ID__ stands for the activity id and
-- __SERIES__ for the last 12 digits of its seriesUid), BENCH_PATH, BENCH_TOKEN
-- and BENCH_ID_BASE. Every wrk thread gets its own range of ids.
local template = nil
local path = os.getenv("BENCH_PATH")
local token = os.getenv("BENCH_TOKEN")
local base = tonumber(os.getenv("BENCH_ID_BASE") or "1")
local thread_count = 0
local counter = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  local fh = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
  template = fh:read("*a")
  fh:close()
  -- 100 million ids per thread: no two requests of one run share an id.
  counter = base + thread_index * 100000000
end

local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")
local answered = 0

-- BENCH_MAX_REQUESTS (per thread, 0: no limit): stop after that many answers.
function response(status, headers, body)
  answered = answered + 1
  if max_requests > 0 and answered >= max_requests then
    wrk.thread:stop()
  end
end

function request()
  counter = counter + 1
  -- %.0f: ids are doubles in LuaJIT, and tostring() would print large ones as 1e+15.
  local body = string.gsub(template, "__ID__", string.format("%.0f", counter))
  body = string.gsub(body, "__SERIES__", string.format("%012.0f", counter % 1000000000000))
  -- The one-alert load: a random activityTime, TRIGGERED or RESET.
  body = string.gsub(body, "__TIME__", string.format("%.3f", 1764300000 + math.random() * 4294967))
  body = string.gsub(body, "__STATUS__", math.random() < 0.5 and "TRIGGERED" or "RESET")
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
