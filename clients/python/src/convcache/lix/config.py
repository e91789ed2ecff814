"""CacheConfig: the same fields, defaults and environment variables as lix-open-cache 2.1.6.

Fields that drove lix's client-side archiver are server settings here (the module archives
on the server); ``server_settings(config)`` gives the matching module configuration."""
import os
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass
class CacheConfig:
    # Connection (lix reads REDIS_HOST/REDIS_PORT/REDIS_PASSWORD when the class is defined)
    redis_host: str = os.getenv("REDIS_HOST", "localhost")
    redis_port: int = int(os.getenv("REDIS_PORT", "9530"))
    redis_key_prefix: str = "elixpo"
    redis_socket_connect_timeout: int = 5
    redis_socket_keepalive: bool = True
    redis_pool_size: int = 50
    redis_password: Optional[str] = os.getenv("REDIS_PASSWORD") or None

    # Session context window: a convcache session key in this database
    session_redis_db: int = 2
    # lix: the TTL of the hot messages in Redis. Here sessions never expire while hot; idle
    # ones move to disk after `evict_after_minutes` and are kept `disk_ttl_days` (server).
    session_ttl_seconds: int = 86400
    hot_window_size: int = 20          # CONV.ADD ... WINDOW n on every add
    session_max_tokens: Optional[int] = None  # CONV.CTX ... TOKENS n (lix ignored it)

    # Semantic query cache: one SEMCACHE bucket per (session, url) in this database
    semantic_redis_db: int = 0
    semantic_ttl_seconds: int = 300    # per entry (EX), not per bucket as in lix
    semantic_similarity_threshold: float = 0.90  # MINSIM
    semantic_max_items_per_url: int = 50         # MAXITEMS

    # URL embedding cache: URLEMB keys in this database
    url_cache_redis_db: int = 1
    url_cache_ttl_seconds: int = 86400
    url_cache_batch_size: int = 100

    # Server-side settings (see server_settings): the module's archive-dir, archive-ttl,
    # idle-archive. The client library never changes the server's configuration itself.
    archive_dir: str = "./data/conversations"
    disk_ttl_days: int = 14
    evict_after_minutes: int = 120

    @classmethod
    def from_env(cls, prefix: str = "") -> "CacheConfig":
        """The same variables as lix: {PREFIX}_REDIS_HOST, {PREFIX}_REDIS_PORT, ..."""
        p = prefix.upper() + "_" if prefix else ""

        def env(name, default):
            return os.getenv(f"{p}{name}", default)
        return cls(
            redis_host=env("REDIS_HOST", "localhost"),
            redis_port=int(env("REDIS_PORT", "9530")),
            redis_password=env("REDIS_PASSWORD", None) or None,
            redis_key_prefix=env("REDIS_KEY_PREFIX", "elixpo"),
            redis_pool_size=int(env("REDIS_POOL_SIZE", "50")),
            session_redis_db=int(env("SESSION_REDIS_DB", "2")),
            session_ttl_seconds=int(env("SESSION_TTL_SECONDS", "86400")),
            hot_window_size=int(env("HOT_WINDOW_SIZE", "20")),
            semantic_redis_db=int(env("SEMANTIC_REDIS_DB", "0")),
            semantic_ttl_seconds=int(env("SEMANTIC_TTL_SECONDS", "300")),
            semantic_similarity_threshold=float(env("SEMANTIC_SIMILARITY_THRESHOLD", "0.90")),
            url_cache_redis_db=int(env("URL_CACHE_REDIS_DB", "1")),
            url_cache_ttl_seconds=int(env("URL_CACHE_TTL_SECONDS", "86400")),
            archive_dir=env("ARCHIVE_DIR", "./data/conversations"),
            disk_ttl_days=int(env("DISK_TTL_DAYS", "14")),
            evict_after_minutes=int(env("EVICT_AFTER_MINUTES", "120")),
        )


def server_settings(config: CacheConfig) -> Dict[str, str]:
    """The module configuration that does on the server what lix's client-side archiver did,
    as ``loadmodule`` argument pairs (``archive-dir`` is fixed when the server starts;
    ``idle-archive`` and ``archive-ttl`` can also be changed with
    ``CONFIG SET convcache.<name> <value>``). Defaults for new sessions/buckets are included
    for completeness; the drop-in passes window, TTLs, threshold and max items with every
    command anyway."""
    return {
        "archive-dir": config.archive_dir,
        "idle-archive": str(config.evict_after_minutes * 60),
        "archive-ttl": str(config.disk_ttl_days),
        "window": str(config.hot_window_size),
        "semcache-ttl": str(config.semantic_ttl_seconds),
        "semcache-min-sim": repr(float(config.semantic_similarity_threshold)),
        "max-items": str(config.semantic_max_items_per_url),
        "urlemb-ttl": str(config.url_cache_ttl_seconds),
    }
