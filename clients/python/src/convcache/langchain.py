"""LangChain classes on the convcache module, named and called like langchain-redis's:

- ``ConvcacheChatMessageHistory`` (for ``RedisChatMessageHistory``): a
  ``BaseChatMessageHistory`` whose session is one convcache key (CONV.*). Upstream deprecated
  ``BaseChatMessageHistory`` (langchain-core 1.6.4, removal in 2.0) and
  ``RunnableWithMessageHistory`` in favour of LangGraph persistence: this class is kept for
  existing code; new code can use ``convcache.langgraph.ConvcacheSaver``.
- ``ConvcacheSemanticCache`` (for ``RedisSemanticCache``): a ``BaseCache`` whose entries
  live in one SEMCACHE bucket per LLM configuration (``llm_string``), so one model never
  answers for another.

Needs ``langchain-core`` (``pip install 'convcache[langchain]'``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Optional, Sequence

import redis

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by the clean-venv install test
    raise ImportError("convcache.langchain needs langchain-core: "
                      "pip install 'convcache[langchain]'") from e
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.embeddings import Embeddings
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, Generation

from ._common import translate_error, vector_bytes

# LangChain message type -> the role chat APIs (and CONV.CTX FORMAT messages) use.
_ROLE_OF_TYPE = {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant",
                 "HumanMessageChunk": "user", "system": "system", "tool": "tool",
                 "function": "function"}
_CLASS_OF_ROLE = {"user": HumanMessage, "human": HumanMessage, "assistant": AIMessage,
                  "ai": AIMessage, "system": SystemMessage}


def _call(client, *args):
    try:
        return client.execute_command(*args)
    except redis.exceptions.ResponseError as e:
        raise translate_error(e) from None


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def _compact(d: Dict[str, Any]) -> Dict[str, Any]:
    # Fields at their defaults are left out: messages_from_dict restores them.
    return {k: v for k, v in d.items() if v not in (None, {}, [], False, "")}


def _to_turn(message: BaseMessage):
    """(role, content, meta) of a message: role as chat APIs name it, the content as text,
    and in meta everything else LangChain needs to rebuild the same message."""
    d = message_to_dict(message)
    data = dict(d["data"])
    content = data.pop("content")
    data.pop("type", None)
    lc: Dict[str, Any] = {"type": d["type"], "data": _compact(data)}
    if not isinstance(content, str):  # a list of content blocks (multimodal)
        content = json.dumps(content, ensure_ascii=False)
        lc["content_json"] = True
    role = data.get("role") if d["type"] == "chat" else _ROLE_OF_TYPE.get(d["type"], d["type"])
    return role, content, json.dumps({"lc": lc}, ensure_ascii=False, default=str)


def _from_turn(role: str, content: str, meta: Dict[str, Any]) -> BaseMessage:
    lc = meta.get("lc")
    if isinstance(lc, dict) and "type" in lc:
        if lc.get("content_json"):
            content = json.loads(content)
        return messages_from_dict([{"type": lc["type"],
                                    "data": {**lc.get("data", {}), "content": content}}])[0]
    # A turn written by another client (CONV.ADD): its role decides the class.
    if role == "tool":
        return ToolMessage(content=content, tool_call_id=str(meta.get("tool_call_id", "")))
    cls = _CLASS_OF_ROLE.get(role)
    if cls is not None:
        return cls(content=content)
    return ChatMessage(role=role, content=content)


class ConvcacheChatMessageHistory(BaseChatMessageHistory):
    """Chat history of one session, stored as the convcache key ``key_prefix + session_id``.

    The same arguments as langchain-redis's ``RedisChatMessageHistory`` (``redis_url``,
    ``key_prefix="chat:"``, ``ttl`` seconds, ``redis_client``; other kwargs go to
    ``Redis.from_url``), plus:

    - ``window``: ``messages`` returns only the last ``window`` messages (CONV.CTX COUNT);
    - ``max_token_limit``: ``messages`` returns the newest messages whose estimated tokens
      (ceil(bytes/4) + 4 each) fit (CONV.CTX TOKENS).

    Without either, ``messages`` is the whole history (CONV.HISTORY). Turns are stored with
    the chat-API role (user/assistant/system/tool) and content, so other clients can read
    them with ``CONV.CTX``; the message type, ``tool_call_id``, AI ``tool_calls``,
    ``additional_kwargs`` and the other fields ride in the turn's metadata. The server moves
    old and idle turns to disk on its own; ``ttl`` deletes the whole session after ``ttl``
    seconds without writes (EXPIRE after every add)."""

    def __init__(self, session_id: str, redis_url: str = "redis://localhost:6379",
                 key_prefix: str = "chat:", ttl: Optional[int] = None,
                 redis_client: Optional[Any] = None, *, window: Optional[int] = None,
                 max_token_limit: Optional[int] = None, **kwargs: Any):
        if not session_id or not isinstance(session_id, str):
            raise ValueError("session_id must be a non-empty, valid string")
        self.redis_client = redis_client if redis_client is not None else \
            redis.Redis.from_url(redis_url, **kwargs)
        self.session_id = session_id
        self.key_prefix = key_prefix
        self.ttl = ttl
        self.window = window
        self.max_token_limit = max_token_limit

    @property
    def id(self) -> str:
        return self.session_id

    @property
    def key(self) -> str:
        return self.key_prefix + self.session_id

    def _parse(self, reply) -> List[BaseMessage]:
        out = []
        for seq, ts, role, content, meta in (item[:5] for item in reply):
            role = role.decode() if isinstance(role, bytes) else role
            content = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
            out.append(_from_turn(role, content, json.loads(meta) if meta is not None else {}))
        return out

    @property
    def messages(self) -> List[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first: one round trip (CONV.HISTORY, or CONV.CTX
        with ``window``/``max_token_limit``; archived turns are read by the server)."""
        if self.window is None and self.max_token_limit is None:
            return self._parse(_call(self.redis_client, "CONV.HISTORY", self.key, "FORMAT", "resp"))
        args: List[Any] = ["CONV.CTX", self.key, "COUNT",
                           self.window if self.window is not None else 2**62]
        if self.max_token_limit is not None:
            args += ["TOKENS", self.max_token_limit]
        return self._parse(_call(self.redis_client, *args, "FORMAT", "resp"))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Every message (and the EXPIRE of ``ttl``) in one pipelined round trip."""
        if not messages:
            return
        if any(m is None for m in messages):
            raise ValueError("Message cannot be None")
        p = self.redis_client.pipeline(transaction=False)
        for m in messages:
            role, content, meta = _to_turn(m)
            p.execute_command("CONV.ADD", self.key, role, content, "META", meta)
        if self.ttl is not None:
            p.expire(self.key, int(self.ttl))
        try:
            p.execute()
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    def clear(self) -> None:
        """CONV.DEL: the session and its archive."""
        _call(self.redis_client, "CONV.DEL", self.key)

    def delete(self) -> None:
        """Deletes every session under ``key_prefix`` (as langchain-redis's ``delete`` drops
        its index with all sessions): SCAN ... TYPE convcache, then UNLINK."""
        pattern = _glob_escape(self.key_prefix) + "*"
        keys = list(self.redis_client.scan_iter(match=pattern, count=1000, _type="convcache"))
        for i in range(0, len(keys), 500):
            self.redis_client.unlink(*keys[i:i + 500])

    def search_messages(self, query: str, limit: int = 10) -> List[Dict[str, Any]]:
        """Messages sharing the most words with ``query``, best first (CONV.SEARCH TEXT over
        the whole session), as dicts with ``content``, ``type``, ``additional_kwargs``."""
        if not query or not isinstance(query, str):
            return []
        reply = json.loads(_call(self.redis_client, "CONV.SEARCH", self.key, "TEXT", query,
                                 "K", int(limit), "RECENT", 0))
        out = []
        for m in reply["relevant"]:
            msg = _from_turn(m["role"], m["content"], m.get("meta") or {})
            out.append({"content": msg.content, "type": msg.type,
                        "additional_kwargs": msg.additional_kwargs})
        return out

    def __len__(self) -> int:
        return int(_call(self.redis_client, "CONV.LEN", self.key))


def _dump_generations(gens: RETURN_VAL_TYPE) -> str:
    out = []
    for g in gens:
        if isinstance(g, ChatGeneration):
            out.append({"chat": message_to_dict(g.message), "info": g.generation_info})
        else:
            out.append({"text": g.text, "info": g.generation_info})
    return json.dumps(out, ensure_ascii=False, default=str)


def _load_generations(raw: Any) -> RETURN_VAL_TYPE:
    out: List[Generation] = []
    for g in json.loads(raw):
        if "chat" in g:
            msg = messages_from_dict([g["chat"]])[0]
            out.append(ChatGeneration(message=msg, generation_info=g.get("info")))
        else:
            out.append(Generation(text=g["text"], generation_info=g.get("info")))
    return out


DEFAULT_MAX_ITEMS = 100_000
"""Entries a ``ConvcacheSemanticCache`` keeps per LLM configuration unless ``max_items`` says
otherwise (the oldest entry is dropped past it)."""


class ConvcacheSemanticCache(BaseCache):
    """LLM cache that answers a prompt with the response cached for a semantically similar
    prompt of the same LLM configuration.

    The same arguments as langchain-redis's ``RedisSemanticCache``: ``embeddings`` (any
    LangChain ``Embeddings``), ``redis_url``, ``distance_threshold`` (cosine distance, a hit
    needs ``1 - cosine similarity <= distance_threshold``), ``ttl`` seconds (None: never
    expire), ``name``/``prefix`` (keys are ``<prefix or name>:<hash of llm_string>``),
    ``redis_client``; plus ``max_items``: entries kept per LLM configuration (the oldest is
    dropped; default ``DEFAULT_MAX_ITEMS``, 100,000, sent as ``MAXITEMS`` with every
    ``SEMCACHE.SET`` so the server's ``max-items`` default of 50, meant for small per-session
    buckets, never applies; the server accepts up to 1,000,000). langchain-redis keeps every
    entry; 100,000 entries of 1536-dim vectors are ~620 MB of vectors (384 dims: ~155 MB),
    and from 4,096 entries the bucket keeps an index, so lookups stay ~0.2-0.5 ms.

    ``lookup``: one embedding call plus one SEMCACHE.GET (a scan of that model's entries in
    the server). ``update``: one embedding call plus one SEMCACHE.SET."""

    def __init__(self, embeddings: Embeddings, redis_url: str = "redis://localhost:6379",
                 distance_threshold: float = 0.1, ttl: Optional[int] = None,
                 name: Optional[str] = "llmcache", prefix: Optional[str] = None,
                 redis_client: Optional[Any] = None, *, max_items: Optional[int] = None):
        self.redis = redis_client if redis_client is not None else redis.Redis.from_url(redis_url)
        self.embeddings = embeddings
        self.distance_threshold = float(distance_threshold)
        self.ttl = ttl
        self._name = name or "llmcache"
        self.prefix = prefix or self._name
        self.max_items = DEFAULT_MAX_ITEMS if max_items is None else int(max_items)

    def name(self) -> str:
        return self._name

    def _key(self, llm_string: str) -> str:
        return f"{self.prefix}:{hashlib.sha256(llm_string.encode()).hexdigest()[:32]}"

    def _vector(self, prompt: str) -> bytes:
        return vector_bytes(self.embeddings.embed_query(prompt), "embedding")

    def lookup(self, prompt: str, llm_string: str) -> Optional[RETURN_VAL_TYPE]:
        raw = _call(self.redis, "SEMCACHE.GET", self._key(llm_string), self._vector(prompt),
                    "MAXDIST", repr(self.distance_threshold))
        return _load_generations(raw) if raw is not None else None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        args: List[Any] = ["SEMCACHE.SET", self._key(llm_string), self._vector(prompt),
                           _dump_generations(return_val), "EX", int(self.ttl or 0),
                           "MAXITEMS", self.max_items]
        _call(self.redis, *args)

    def clear(self, **kwargs: Any) -> None:
        """Deletes every bucket under the prefix (SCAN ... TYPE semcachev, then UNLINK)."""
        pattern = _glob_escape(self.prefix) + ":*"
        keys = list(self.redis.scan_iter(match=pattern, count=1000, _type="semcachev"))
        for i in range(0, len(keys), 500):
            self.redis.unlink(*keys[i:i + 500])


__all__ = ["ConvcacheChatMessageHistory", "ConvcacheSemanticCache", "DEFAULT_MAX_ITEMS"]
