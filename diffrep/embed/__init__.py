"""The embed job's logic: config, shard worker, output layout, planning, progress."""
