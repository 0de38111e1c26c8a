"""Serving the Gradio page and the HTTP API on one server: one pool of models, one request bound, optional keys,
the upload limit, and a `--share` that degrades to a one-line warning."""
from __future__ import annotations

import contextlib
import ctypes
import hmac
import io
import logging

from demo.captioner_pool import CaptionerPool
from demo.request_queue import RequestQueue
from demo.serve_config import ServeConfig
from demo.web import rest
from demo.web.page import build_app
from demo.web.upload import MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)
M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt parameters (malloc.h)
MALLOC_ARENAS, MMAP_THRESHOLD = 2, 4 << 20  # the server's: 2 heaps; blocks of 4 MiB and more mapped, given back
__all__ = ["ServeConfig", "launch"]
CONCURRENCY = 2  # unbatched (--max-batch-size 1): two requests at once on a 2-core machine; the rest wait
SPARE_THREADS = 8  # Gradio's threads beyond one per request held: uploads, files, its own routes
LOGIN_MESSAGE = "Any user name; the password is one of the server's API keys."


def tune_malloc() -> bool:
    """Make freed memory go back to the system (glibc): what a server's peak RSS is made of.

    Two settings. At most MALLOC_ARENAS heaps: glibc gives threads that allocate at once their own (up to 8 per
    core), and what a request frees stays in its thread's heap, which the queue's worker threads, the batcher and
    ONNX Runtime's pool multiply. And a fixed mmap threshold: glibc raises it each time a large block is freed,
    after which VGG16's activations come from the heap and stay there. `python -m bench --only serving` measures
    the server's peak.
    Returns False where the C library is not glibc (nothing to do there).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
        return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def launch(cfg: ServeConfig, block: bool = True):
    """Start the page and the API, listening before the bundle is loaded (`/healthz` says when it is); returns
    (app, local URL). With `block`, serves until interrupted."""
    tune_malloc()
    pool = CaptionerPool(cfg.model, cfg.provider, cfg.max_batch_size, load=False)
    pool.check_provider()
    workers = cfg.max_batch_size if cfg.max_batch_size > 1 else CONCURRENCY  # a pass's worth of requests at once
    requests = RequestQueue(workers, cfg.max_queue)
    keys = cfg.api_keys()
    app = build_app(pool, requests)
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=requests.capacity)
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # Gradio explains a failed tunnel in a dozen lines
        _, local_url, share_url = app.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share,
                                             max_file_size=MAX_UPLOAD_BYTES, prevent_thread_lock=True, quiet=True,
                                             footer_links=["api"], max_threads=requests.capacity + SPARE_THREADS,
                                             auth=_page_login(keys), auth_message=LOGIN_MESSAGE if keys else None,
                                             app_kwargs={"routes": rest.routes(pool, requests, keys)})
    pool.load(background=True)
    log.info("serving on %s (HTTP API: %sv1/captions, docs %sv1/docs; %s)", local_url, local_url, local_url,
             f"{len(keys)} API key(s) required" if keys else "no API key required")
    if cfg.share:
        if share_url:
            log.info("public link: %s", share_url)
        else:
            log.warning("share: no public link (Gradio's tunnel could not be set up: no internet, or its frpc "
                        "binary could not be downloaded); still serving on the local URL above")
    if block:
        try:
            app.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            app.close()
    return app, local_url


def _page_login(keys: tuple[str, ...]):
    """Gradio's login for the page and its `caption` API when keys are set: any user name, a key as password."""
    if not keys:
        return None
    return lambda username, password: any(hmac.compare_digest(password, key) for key in keys)
