"""`ServeConfig`: the web app's settings, from the `serve` flags (derived from its fields) or the environment.

Apart from `demo.web.serve` so that building the command line imports no Gradio.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from demo.bundle_layout import DEFAULT_BUNDLE
from demo.config_flags import option
from demo.encoder_batching import DEFAULT_MAX_BATCH_SIZE
from demo.errors import BadInput
from demo.request_queue import DEFAULT_MAX_QUEUE
from demo.sessions import PROVIDERS

API_KEYS_ENV = "CAPTIONER_API_KEYS"  # comma-separated; a Space secret, or a container's environment


@dataclass
class ServeConfig:
    model: Path = option(DEFAULT_BUNDLE, "bundle folder made by `python -m export`")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: all interfaces)")
    port: int = option(7860, "port")
    share: bool = option(False, "also ask Gradio for a public share link")
    provider: str = option("auto", "execution provider: auto takes CUDA when it works, else CPU", choices=PROVIDERS)
    max_batch_size: int = option(DEFAULT_MAX_BATCH_SIZE, "requests in flight that share encoder passes of up to "
                                 "this many images (each answer equals the request's alone); 1: no batching, 2 "
                                 "requests at once")
    max_queue: int = option(DEFAULT_MAX_QUEUE, "requests that may wait beyond those running, page and HTTP API "
                            "together; one more is refused at once (the API answers 503 with Retry-After)")
    api_key: str = option("", f"require this key (several: comma-separated) on the HTTP API (Authorization: Bearer "
                          f"KEY) and as the page's password; keys in ${API_KEYS_ENV} count too and stay out of "
                          "the process list (default: no key)")

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise BadInput(f"max batch size must be at least 1, not {self.max_batch_size}")
        if self.max_queue < 0:
            raise BadInput(f"max queue must be 0 or more, not {self.max_queue}")

    def api_keys(self) -> tuple[str, ...]:
        """The keys that open the API and the page: `api_key`'s and those in $CAPTIONER_API_KEYS."""
        given = f"{self.api_key},{os.environ.get(API_KEYS_ENV, '')}"
        return tuple(dict.fromkeys(key.strip() for key in given.split(",") if key.strip()))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        """The same settings from environment variables (Spaces and containers have no command line)."""
        default = cls()
        port = os.environ.get("CAPTIONER_PORT", os.environ.get("PORT", str(default.port)))
        if not port.isdigit():
            raise BadInput(f"CAPTIONER_PORT (or PORT) must be a port number, not {port!r}")
        batch = os.environ.get("CAPTIONER_MAX_BATCH_SIZE", str(default.max_batch_size))
        if not batch.isdigit():
            raise BadInput(f"CAPTIONER_MAX_BATCH_SIZE must be a whole number (1: no batching), not {batch!r}")
        queue = os.environ.get("CAPTIONER_MAX_QUEUE", str(default.max_queue))
        if not queue.isdigit():
            raise BadInput(f"CAPTIONER_MAX_QUEUE must be a whole number, not {queue!r}")
        return cls(model=Path(os.environ.get("CAPTIONER_MODEL", default.model)),
                   host=os.environ.get("CAPTIONER_HOST", "0.0.0.0"),
                   port=int(port),
                   share=os.environ.get("CAPTIONER_SHARE", "").lower() in ("1", "true", "yes"),
                   provider=os.environ.get("CAPTIONER_PROVIDER", default.provider),
                   max_batch_size=int(batch),
                   max_queue=int(queue))  # the keys: api_keys() reads $CAPTIONER_API_KEYS
