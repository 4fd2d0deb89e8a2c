-- wrk script: POST NinjaOne-shaped activities, each with a distinct id.
-- The runner sets BENCH_BODY_FILE (a body where __ID__ stands for the activity id and
-- __SERIES__ for the last 12 digits of its seriesUid), BENCH_PATH, BENCH_TOKEN
-- and BENCH_ID_BASE. Every wrk thread gets its own range of ids.
--
-- BENCH_MAX_REQUESTS (0: no limit) with BENCH_THREADS: send exactly that many
-- activities in all, shared among the threads, then stop. A thread that has sent its
-- share holds its connections back (delay) instead of sending more, and stops once
-- every answer is in, so no request beyond the count ever reaches the server; it
-- then prints "bench: thread done", and the runner interrupts wrk when all have.
local template = nil
local path = os.getenv("BENCH_PATH")
local token = os.getenv("BENCH_TOKEN")
local base = tonumber(os.getenv("BENCH_ID_BASE") or "1")
local total = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
local thread_count = 0
local counter = 0
local sent = 0
local answered = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  -- This thread's share of the count: the first (total % threads) threads take one more.
  local share = math.floor(total / threads)
  if thread_count < total % threads then
    share = share + 1
  end
  thread:set("share", share)
  thread_count = thread_count + 1
end

function init(args)
  local fh = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
  template = fh:read("*a")
  fh:close()
  -- 100 million ids per thread: no two requests of one run share an id.
  counter = base + thread_index * 100000000
  math.randomseed(thread_index + 1)
end

function response(status, headers, body)
  answered = answered + 1
  if total > 0 and answered == share then
    -- The runner interrupts wrk once every thread has said so (bench/load.py).
    io.stdout:write("bench: thread done\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

if total > 0 then
  -- wrk asks before each request: a connection of a thread that has sent its share
  -- waits (longer than any run) while the last answers come in and the thread stops.
  -- Counted here, not in request(): wrk calls request() once more on the first
  -- thread's state to check the script, and that request is never sent.
  function delay()
    if sent >= share then
      return 3600000
    end
    sent = sent + 1
    return 0
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
