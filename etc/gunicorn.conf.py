"""gunicorn settings for `zerospeech-api serve -c etc/gunicorn.conf.py`: a place for the gunicorn
options the ZR_ settings do not cover.

Everything the ZR_ settings cover is read from them here (zerospeech_api.settings: ZR_* in the
environment, then the .env given by `--env-file` or $ZR_ENV_FILE, else ./.env), exactly as
`serve` derives it without this file, so using it never overrides them: bind, workers, the
uvicorn worker class, timeouts, keep-alive, forwarded_allow_ips, logs. What you add below the
`globals().update(...)` line wins over the ZR_ settings; command-line options after `serve` win
over this file.
"""

from zerospeech_api.appliance.gunicorn_app import gunicorn_options
from zerospeech_api.settings import SettingsError, load_settings

# bind, workers, worker_class, timeout, graceful_timeout, keepalive, forwarded_allow_ips,
# accesslog, errorlog, loglevel and the worker hooks, from ZR_BIND, ZR_WORKERS, ZR_TIMEOUT, ...
# (etc/example.env): one .env stays the single place for them.
try:
    globals().update(gunicorn_options(load_settings()))
except SettingsError:
    # Only on `ctl reload` after a bad edit of the .env (serve checks the settings before it
    # starts): serve has logged it and keeps the previous settings, which this leaves alone.
    pass

# Examples of extra tuning (uncomment to use). Concurrency inside each worker (ZR_THREADS, the
# database pool, the in-flight limits answering 503 + Retry-After) is per worker: more workers
# means more PostgreSQL connections, workers x (ZR_DB_POOL_SIZE + ZR_DB_MAX_OVERFLOW), to keep
# under max_connections (README: "Concurrency and overload").
# max_requests = 20000          # recycle workers (graceful) to bound slow memory growth
# max_requests_jitter = 2000
