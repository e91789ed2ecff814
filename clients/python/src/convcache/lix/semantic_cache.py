"""SemanticCacheRedis on SEMCACHE.* and URLEmbeddingCache on URLEMB.*.

As in lix, these are caches: a failed call logs a warning and answers a miss (None/False)
rather than raising."""
import json
import logging
import threading
from typing import Dict, Optional

import numpy as np

from .._common import vector_bytes
from .config import CacheConfig
from .redis_pool import create_redis_client

logger = logging.getLogger("convcache.lix")

# lix normalises with +1e-8 and only answers a positive similarity; MINSIM gets at least this.
_MIN_POSITIVE_SIM = 1e-5


def _vec(embedding) -> bytes:
    return vector_bytes(np.asarray(embedding, dtype=np.float32).ravel())


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


class URLEmbeddingCache:
    """lix's URLEmbeddingCache: ``get(url)`` -> float32 numpy array or None, ``set``,
    ``batch_set``, ``get_stats``. The key and value are lix's (`{prefix}:url_embedding:{url}`,
    raw float32 bytes), so entries written by lix are read as they are."""

    def __init__(self, session_id: str, config: Optional[CacheConfig] = None, **kwargs):
        self._config = config or CacheConfig()
        c = self._config
        self.session_id = session_id
        self.ttl_seconds = kwargs.get("ttl_seconds", c.url_cache_ttl_seconds)
        self.batch_size = kwargs.get("batch_size", c.url_cache_batch_size)
        self._key_prefix = c.redis_key_prefix
        self.lock = threading.RLock()
        self.redis_client = kwargs.get("redis_client") or create_redis_client(
            host=kwargs.get("redis_host", c.redis_host),
            port=kwargs.get("redis_port", c.redis_port),
            db=kwargs.get("redis_db", c.url_cache_redis_db),
            config=c,
        )

    def _get_key(self, url: str) -> str:
        return f"{self._key_prefix}:url_embedding:{url}"

    def get(self, url: str) -> Optional[np.ndarray]:
        """URLEMB.GET: one round trip."""
        try:
            cached = self.redis_client.execute_command("URLEMB.GET", self._get_key(url))
            return np.frombuffer(cached, dtype=np.float32) if cached else None
        except Exception as e:
            logger.warning("URLEmbeddingCache session=%s get error: %s", self.session_id, e)
            return None

    def set(self, url: str, embedding: np.ndarray) -> bool:
        """URLEMB.SET ... EX ttl_seconds. False (and a warning) if the server refused it,
        e.g. a zero or NaN vector, which lix stored."""
        try:
            self.redis_client.execute_command("URLEMB.SET", self._get_key(url), _vec(embedding),
                                              "EX", int(self.ttl_seconds))
            return True
        except Exception as e:
            logger.warning("URLEmbeddingCache session=%s set error: %s", self.session_id, e)
            return False

    def batch_set(self, url_embeddings: Dict[str, np.ndarray]) -> Dict[str, bool]:
        """Every URLEMB.SET in one pipelined round trip; per-url success as lix."""
        urls = list(url_embeddings)
        results: Dict[str, bool] = {}
        p = self.redis_client.pipeline(transaction=False)
        queued = []
        for url in urls:
            try:
                p.execute_command("URLEMB.SET", self._get_key(url), _vec(url_embeddings[url]),
                                  "EX", int(self.ttl_seconds))
                queued.append(url)
            except Exception as e:
                logger.warning("URLEmbeddingCache session=%s set error: %s", self.session_id, e)
                results[url] = False
        try:
            replies = p.execute(raise_on_error=False)
        except Exception as e:
            logger.warning("URLEmbeddingCache session=%s batch_set error: %s", self.session_id, e)
            replies = [e] * len(queued)
        for url, reply in zip(queued, replies):
            results[url] = not isinstance(reply, Exception)
        return {url: results[url] for url in urls}

    def get_stats(self) -> Dict:
        try:
            info = self.redis_client.info("memory")
            return {
                "backend": "redis",
                "session_id": self.session_id,
                "redis_memory_used": info.get("used_memory_human", "unknown"),
                "ttl_seconds": self.ttl_seconds,
            }
        except Exception:
            return {"backend": "redis", "status": "error"}


class SemanticCacheRedis:
    """lix's SemanticCacheRedis: ``get(url, query_embedding)`` -> the cached response or
    None, ``set(url, query_embedding, response)``, ``clear_session``, ``get_stats``.

    One SEMCACHE bucket per (session, url); the lookup runs in the server (one round trip,
    no JSON of embeddings); every entry expires ``ttl_seconds`` after its own write; writers
    in several processes never lose each other's entries. Responses go through JSON, as in
    lix."""

    def __init__(self, session_id: str, config: Optional[CacheConfig] = None, **kwargs):
        self._config = config or CacheConfig()
        c = self._config
        self.session_id = session_id
        self.ttl_seconds = kwargs.get("ttl_seconds", c.semantic_ttl_seconds)
        self.similarity_threshold = kwargs.get("similarity_threshold",
                                               c.semantic_similarity_threshold)
        self.max_items_per_url = kwargs.get("max_items_per_url", c.semantic_max_items_per_url)
        self._key_prefix = c.redis_key_prefix
        self.lock = threading.RLock()
        self.redis_client = kwargs.get("redis_client") or create_redis_client(
            host=kwargs.get("redis_host", c.redis_host),
            port=kwargs.get("redis_port", c.redis_port),
            db=kwargs.get("redis_db", c.semantic_redis_db),
            config=c,
        )

    def _get_redis_key(self, url: str) -> str:
        # Not lix's key (a JSON string there): a leftover lix blob must not make SETs fail.
        return f"{self._key_prefix}:semcache:{self.session_id}:{url}"

    def get(self, url: str, query_embedding: np.ndarray) -> Optional[Dict]:
        """SEMCACHE.GET ... MINSIM similarity_threshold: one round trip, the scan in the
        server (about 28 µs for 50 x 1536)."""
        try:
            min_sim = max(float(self.similarity_threshold), _MIN_POSITIVE_SIM)
            raw = self.redis_client.execute_command(
                "SEMCACHE.GET", self._get_redis_key(url), _vec(query_embedding),
                "MINSIM", repr(min_sim))
            return json.loads(raw) if raw is not None else None
        except Exception as e:
            logger.warning("SemanticCache session=%s get error: %s", self.session_id, e)
            return None

    def set(self, url: str, query_embedding: np.ndarray, response: Dict) -> None:
        """SEMCACHE.SET ... EX ttl_seconds MAXITEMS max_items_per_url: one round trip, the
        oldest entry dropped when the bucket is full."""
        try:
            self.redis_client.execute_command(
                "SEMCACHE.SET", self._get_redis_key(url), _vec(query_embedding),
                json.dumps(response), "EX", int(self.ttl_seconds),
                "MAXITEMS", int(self.max_items_per_url))
        except Exception as e:
            logger.warning("SemanticCache session=%s set error: %s", self.session_id, e)

    def _keys(self):
        pattern = f"{_glob_escape(self._key_prefix)}:semcache:{_glob_escape(self.session_id)}:*"
        return list(self.redis_client.scan_iter(match=pattern, count=1000, _type="semcachev"))

    def clear_session(self) -> bool:
        """Deletes this session's buckets (SCAN ... TYPE semcachev, then UNLINK)."""
        try:
            keys = self._keys()
            for i in range(0, len(keys), 500):
                self.redis_client.unlink(*keys[i:i + 500])
            return True
        except Exception as e:
            logger.warning("SemanticCache session=%s clear failed: %s", self.session_id, e)
            return False

    def get_stats(self) -> Dict:
        try:
            return {
                "backend": "redis",
                "session_id": self.session_id,
                "cached_urls": len(self._keys()),
                "ttl_seconds": self.ttl_seconds,
                "similarity_threshold": self.similarity_threshold,
            }
        except Exception:
            return {"session_id": self.session_id, "status": "error"}

    def load_for_request(self, request_id: str) -> None:
        pass

    def save_for_request(self, request_id: str) -> None:
        pass


