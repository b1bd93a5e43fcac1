"""Prometheus metrics at GET /metrics: HTTP traffic of every gunicorn worker (prometheus-client's
multiprocess mode, files in <data>/run/metrics) and the evaluation side read from the database at
scrape time. `folder` must not import prometheus_client: the folder is chosen before it is."""
