-- Prints wrk's totals as one machine-readable line for bench/rows/support.py.
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_SUMMARY {"requests": %d, "duration_us": %d, "bytes": %d, "errors": '
         .. '{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout))
end
