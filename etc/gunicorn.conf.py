"""gunicorn settings for `zerospeech-api serve -c etc/gunicorn.conf.py`.

`serve` already derives bind, workers, timeouts and forwarded_allow_ips from the ZR_ settings
(etc/example.env); this file is for what those do not cover, and whatever is set here wins over
them (command-line options after `serve` win over this file). The values below repeat the
defaults so the choices are written down in one place: change them here only if you mean to
override the ZR_ settings.
"""

# ASGI app under gunicorn's process management: gunicorn forks, watches and replaces workers,
# and on HUP (`zerospeech-api ctl reload`) starts new ones before stopping the old gracefully.
# The worker is uvicorn's, on httptools (h11 where it cannot be imported) and asyncio (not
# uvloop: it drops connections on graceful reloads); "uvicorn_worker.UvicornH11Worker" would
# force h11.
worker_class = "zerospeech_api.appliance.gunicorn_app.ZeroSpeechWorker"

# Large uploads: a 500 MB part over a slow link must not be killed as a stuck worker
# (ZR_TIMEOUT); in-flight requests get this long to finish on reload or stop
# (ZR_GRACEFUL_TIMEOUT; supervisord waits 15 s more before SIGKILL).
timeout = 900
graceful_timeout = 60

# Idle keep-alive connections from nginx (ZR_KEEPALIVE); nginx's upstream keepalive_timeout is
# shorter, so nginx never reuses a connection gunicorn is closing.
keepalive = 5

# X-Forwarded-For/Proto are believed only from nginx on this host (ZR_FORWARDED_ALLOW_IPS).
forwarded_allow_ips = "127.0.0.1"

# Logs to stdout/stderr: supervisord writes them to <data>/logs/api.log.
accesslog = "-"
errorlog = "-"

# Not set here on purpose: bind and workers (ZR_BIND, ZR_WORKERS), so one .env stays the
# single place for them. Concurrency inside each worker (ZR_THREADS, the database pool, the
# in-flight limits answering 503 + Retry-After) also comes from the ZR_ settings and is per
# worker: more workers means more PostgreSQL connections, workers x (ZR_DB_POOL_SIZE +
# ZR_DB_MAX_OVERFLOW), to keep under max_connections (README: "Concurrency and overload").
# Examples of extra tuning:
# max_requests = 20000          # recycle workers (graceful) to bound slow memory growth
# max_requests_jitter = 2000
