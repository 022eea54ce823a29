"""Request traces: each request and its reply or stream, one JSON file each (`--trace-dir`)."""
