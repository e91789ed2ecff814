"""Drop-in for lix-open-cache 2.1.6 on the convcache module.

Change ``from lix_open_cache import ...`` to ``from convcache.lix import ...``: the same
classes, methods, arguments and reply shapes, with sessions as convcache keys (CONV.*),
semantic entries in SEMCACHE buckets and URL embeddings as URLEMB values. Archiving happens
in the server; ``server_settings(config)`` maps lix's archiver settings to the module's
configuration, and ``import_lix_session`` imports a lix ``.huff`` archive (CONV.IMPORT).
Not provided: ``HuffmanCodec`` and ``ConversationArchive`` (client-side disk tools the
server replaces)."""
try:
    import numpy  # noqa: F401  (lix's API takes and returns numpy arrays)
except ImportError as e:  # pragma: no cover - exercised by the clean-venv install test
    raise ImportError("convcache.lix needs numpy: pip install 'convcache[lix]'") from e

from .config import CacheConfig, server_settings
from .context_window import SessionContextWindow
from .coordinator import BatchCacheProcessor, CacheCoordinator
from .hybrid_cache import HybridConversationCache, import_lix_session, session_key
from .redis_pool import create_redis_client
from .semantic_cache import SemanticCacheRedis, URLEmbeddingCache

__all__ = [
    "CacheConfig",
    "create_redis_client",
    "HybridConversationCache",
    "SemanticCacheRedis",
    "URLEmbeddingCache",
    "SessionContextWindow",
    "CacheCoordinator",
    "BatchCacheProcessor",
    "import_lix_session",
    "server_settings",
    "session_key",
]
