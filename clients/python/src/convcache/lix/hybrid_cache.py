"""HybridConversationCache on CONV.*: one convcache key per session; the server keeps the
window in memory and archives older and idle turns itself (no client thread, no local files).

Messages are lix's dicts: ``{"role", "content", "timestamp" (unix seconds, float),
"metadata" (dict)}``, oldest first."""
import json
import logging
from typing import Any, Dict, List, Optional

import numpy as np
import redis

from .._common import ConvcacheError, translate_error, vector_bytes
from .config import CacheConfig
from .redis_pool import create_redis_client

logger = logging.getLogger("convcache.lix")


def session_key(config: CacheConfig, session_id: str) -> str:
    """The convcache key of a session (lix used `{prefix}:session_context:{id}:{turn}` string
    keys plus a `{prefix}:session_order:{id}` list; these do not collide with it)."""
    return f"{config.redis_key_prefix}:session:{session_id}"


def _lix_message(m: Dict[str, Any]) -> Dict[str, Any]:
    """A CONV `FORMAT full` message as lix's message dict."""
    return {"role": m["role"], "content": m["content"], "timestamp": m["ts"] / 1000.0,
            "metadata": m.get("meta") or {}}


def _call(client, *args):
    try:
        return client.execute_command(*args)
    except redis.exceptions.ResponseError as e:
        raise translate_error(e) from None


class HybridConversationCache:
    """lix's HybridConversationCache: ``add_message``, ``get_context``, ``get_full``,
    ``smart_context``, ``get_formatted_context``, ``flush_to_disk``, ``clear``,
    ``delete_session``, ``get_stats``. kwargs as lix: ``hot_window_size``, ``redis_ttl``,
    ``redis_host``, ``redis_port``, ``redis_db``, ``evict_after_minutes`` (server-side here),
    plus ``max_tokens`` and ``redis_client`` (any redis-py client, e.g. RedisCluster)."""

    def __init__(self, session_id: str, config: Optional[CacheConfig] = None, **kwargs):
        self._config = config or CacheConfig()
        c = self._config
        self.session_id = session_id
        self.hot_window_size = kwargs.get("hot_window_size", c.hot_window_size)
        self.redis_ttl = kwargs.get("redis_ttl", c.session_ttl_seconds)
        self.max_tokens = kwargs.get("max_tokens", c.session_max_tokens)
        self.evict_after_minutes = kwargs.get("evict_after_minutes", c.evict_after_minutes)
        self._key_prefix = c.redis_key_prefix
        self._redis = kwargs.get("redis_client") or create_redis_client(
            host=kwargs.get("redis_host", c.redis_host),
            port=kwargs.get("redis_port", c.redis_port),
            db=kwargs.get("redis_db", c.session_redis_db),
            config=c,
        )
        self._key = session_key(c, session_id)

    @property
    def redis_client(self):
        return self._redis

    def add_message(self, role: str, content: str, metadata: Optional[Dict] = None,
                    embedding=None) -> int:
        """CONV.ADD (+ CONV.LEN in the same round trip). Returns the number of messages in
        the hot window, as lix (at most ``hot_window_size``). Turns get server sequence
        numbers: two adds in the same millisecond are two turns."""
        args: List[Any] = ["CONV.ADD", self._key, role, content, "WINDOW", self.hot_window_size]
        if metadata:
            args += ["META", json.dumps(metadata)]
        if embedding is not None:
            args += ["EMB", vector_bytes(np.asarray(embedding, dtype=np.float32).ravel(),
                                         "embedding")]
        p = self._redis.pipeline(transaction=False)
        p.execute_command(*args)
        p.execute_command("CONV.LEN", self._key)
        try:
            _, n = p.execute()
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None
        return min(int(n), self.hot_window_size)

    def _read(self, *args) -> List[Dict]:
        return [_lix_message(m) for m in json.loads(_call(self._redis, *args, "FORMAT", "full"))]

    def get_context(self) -> List[Dict]:
        """CONV.CTX: the last ``hot_window_size`` messages (newest that fit ``max_tokens`` if
        set), oldest first. One round trip; a cold session is read back by the server."""
        args: List[Any] = ["CONV.CTX", self._key, "COUNT", self.hot_window_size]
        if self.max_tokens is not None:
            args += ["TOKENS", self.max_tokens]
        return self._read(*args)

    def get_full(self) -> List[Dict]:
        """CONV.HISTORY: every message, oldest first (archived ones read by the server)."""
        return self._read("CONV.HISTORY", self._key)

    def smart_context(self, query: str, query_embedding=None, recent_k: int = 10,
                      disk_k: int = 5) -> Dict[str, List[Dict]]:
        """CONV.SEARCH: ``{"recent": last recent_k messages, "relevant": up to disk_k older
        messages}``, ranked by cosine similarity to ``query_embedding`` when given (messages
        added with an embedding), else by the words they share with ``query``. Scoring of
        archived turns runs on the server's I/O thread."""
        recent = max(0, min(int(recent_k), int(self.hot_window_size)))
        base = ["CONV.SEARCH", self._key]
        tail = ["K", max(0, int(disk_k)), "RECENT", recent]
        reply = None
        if query_embedding is not None:
            try:
                q = vector_bytes(np.asarray(query_embedding, dtype=np.float32).ravel())
                reply = _call(self._redis, *base, "EMB", q, *tail)
            except (ConvcacheError, ValueError) as e:
                logger.warning("smart_context: embedding search failed (%s), using text", e)
        if reply is None:
            reply = _call(self._redis, *base, "TEXT", query or "", *tail)
        d = json.loads(reply)
        return {"recent": [_lix_message(m) for m in d["recent"]],
                "relevant": [_lix_message(m) for m in d["relevant"]]}

    def get_formatted_context(self, max_lines: int = 50) -> str:
        """``"Role: content"`` lines (content cut at 200 characters) of ``get_context()``."""
        lines = []
        for msg in self.get_context():
            role = msg.get("role", "unknown").capitalize()
            content = msg.get("content", "")
            if content:
                lines.append(f"{role}: {content[:200]}")
        if len(lines) > max_lines:
            lines = lines[-max_lines:]
        return "\n".join(lines)

    def flush_to_disk(self) -> bool:
        """CONV.FLUSH: archives every in-memory turn; True once durable on the server."""
        _call(self._redis, "CONV.FLUSH", self._key)
        return True

    def clear(self) -> bool:
        """CONV.CLEAR: drops the session's messages, archived ones included."""
        _call(self._redis, "CONV.CLEAR", self._key)
        return True

    def delete_session(self) -> bool:
        """CONV.DEL: deletes the session and its archive; True if it existed."""
        return bool(_call(self._redis, "CONV.DEL", self._key))

    def get_stats(self) -> Dict:
        """lix's stats from CONV.INFO. ``disk_size_bytes`` is not reported by the server
        (always 0)."""
        info = _call(self._redis, "CONV.INFO", self._key)
        if isinstance(info, list):
            info = dict(zip(info[::2], info[1::2]))
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (info or {}).items()}
        return {
            "session_id": self.session_id,
            "hot_messages": min(int(info.get("hot", 0)), int(self.hot_window_size)),
            "hot_window_size": self.hot_window_size,
            "disk_turns": int(info.get("archived", 0)),
            "disk_size_bytes": 0,
        }


def import_lix_session(session_id: str, config: Optional[CacheConfig] = None,
                       name: Optional[str] = None, redis_client=None) -> int:
    """CONV.IMPORT: makes `<import-dir>/<name or session_id>.huff` (a lix archive file on the
    server's disk) the session that ``HybridConversationCache(session_id, config)`` reads.
    Returns the number of turns imported; refused if the session already exists."""
    c = config or CacheConfig()
    client = redis_client or create_redis_client(db=c.session_redis_db, config=c)
    return int(_call(client, "CONV.IMPORT", session_key(c, session_id), name or session_id))
