"""A semantic cache keyed on the conversation, not on the last message.

"Tell me more" means something else after a Valkey conversation than after a Python one, so
a cache that embeds only the last message answers one with the other's reply.
``ConversationCache`` embeds the end of the conversation instead::

    cache = ConversationCache(r, embed)          # embed(text) -> vector (any callable)
    conv.add("chat:42", "user", "Tell me more")
    answer = cache.lookup("chat:42", user_id="u7")
    if answer is None:
        answer = llm(...)
        cache.store("chat:42", "u7", answer)
    conv.add("chat:42", "assistant", answer)

The cache key is the last ``turns`` (3) turns of the session, each cut to ``chars`` (200)
characters, as ``role: content`` lines (``context_text``). One bucket holds every user's
entries, each tagged ``user_id`` and looked up with ``FILTER user_id <u>``, so no user is
answered from another's entry. ``lookup``: one ``CONV.CTX``, one call of ``embed``, one
``SEMCACHE.GET``; ``store``: one ``CONV.CTX`` and one ``SEMCACHE.SET`` (the vector that
``lookup`` computed for the same context is reused, so ``embed`` runs once per turn).
"""
from __future__ import annotations

import inspect
import json
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Tuple

import redis

from ._common import Vector, translate_error, vector_bytes

__all__ = ["ConversationCache", "AsyncConversationCache", "context_text"]

DEFAULT_MIN_SIM = 0.90
DEFAULT_TURNS = 3
DEFAULT_CHARS = 200
DEFAULT_MAX_ITEMS = 100_000
_REMEMBERED = 1024  # (session, user) contexts whose vector lookup() keeps for store()


def context_text(messages: List[dict], chars: int = DEFAULT_CHARS) -> str:
    """The cache key of a conversation's last turns: ``role: content`` lines, each content cut
    to ``chars`` characters."""
    return "\n".join(f"{m['role']}: {m['content'][:chars]}" for m in messages)


def _user_arg(user_id: Any) -> Any:
    if isinstance(user_id, bool) or not isinstance(user_id, (str, bytes, int)):
        raise TypeError(f"user_id must be a str, bytes or int, not {type(user_id).__name__}")
    if user_id in ("", b""):
        raise ValueError("user_id must not be empty")
    return user_id


class _Base:
    def __init__(self, client: Any, embed: Callable[[str], Any], *,
                 cache_key: str = "convcache:answers", min_sim: float = DEFAULT_MIN_SIM,
                 turns: int = DEFAULT_TURNS, chars: int = DEFAULT_CHARS,
                 ttl: Optional[int] = None, max_items: int = DEFAULT_MAX_ITEMS,
                 decode: bool = True):
        if client is None or not callable(embed):
            raise TypeError("ConversationCache(client, embed): a redis-py client and a callable")
        if turns < 1 or chars < 1:
            raise ValueError("turns and chars must be at least 1")
        self.client = client
        self.embed = embed
        self.cache_key = cache_key
        self.min_sim = float(min_sim)
        self.turns = int(turns)
        self.chars = int(chars)
        self.ttl = ttl
        self.max_items = int(max_items)
        self.decode = decode
        self._vectors: "OrderedDict[Tuple[Any, Any], Tuple[str, bytes]]" = OrderedDict()

    def _ctx_args(self, session_key: Any) -> List[Any]:
        return ["CONV.CTX", session_key, "COUNT", self.turns, "FORMAT", "messages"]

    def _text(self, reply: Any) -> str:
        return context_text(json.loads(reply), self.chars)

    def _prompt(self, user_id: Any, text: str) -> bytes:
        # The exact-prompt path (PROMPT) is per bucket: the user id keeps it per user.
        u = user_id if isinstance(user_id, bytes) else str(user_id).encode()
        return u + b"\x00" + text.encode("utf-8")

    def _get_args(self, user_id: Any, text: str, vec: bytes) -> List[Any]:
        return ["SEMCACHE.GET", self.cache_key, vec, "MINSIM", repr(self.min_sim),
                "FILTER", "user_id", user_id, "PROMPT", self._prompt(user_id, text)]

    def _set_args(self, user_id: Any, text: str, vec: bytes, response: Any) -> List[Any]:
        return ["SEMCACHE.SET", self.cache_key, vec, response, "EX", int(self.ttl or 0),
                "MAXITEMS", self.max_items, "TAG", "user_id", user_id,
                "PROMPT", self._prompt(user_id, text)]

    def _remember(self, session_key: Any, user_id: Any, text: str, vec: bytes) -> None:
        self._vectors[(session_key, user_id)] = (text, vec)
        self._vectors.move_to_end((session_key, user_id))
        while len(self._vectors) > _REMEMBERED:
            self._vectors.popitem(last=False)

    def _remembered(self, session_key: Any, user_id: Any, text: str) -> Optional[bytes]:
        got = self._vectors.pop((session_key, user_id), None)
        return got[1] if got is not None and got[0] == text else None

    def _out(self, reply: Any) -> Any:
        if reply is None or not self.decode:
            return reply
        return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


class ConversationCache(_Base):
    """Semantic cache keyed on a session's last turns, per user (see the module doc).

    ``client``: a ``redis.Redis``/``RedisCluster``; ``embed(text)``: the embedding function
    (a LangChain ``Embeddings`` works as ``emb.embed_query``); ``min_sim``: cosine similarity
    a hit needs (0.90); ``turns``/``chars``: how much of the conversation is the key (3 turns,
    200 characters each); ``ttl``: seconds an entry lives (None: forever); ``max_items``: entries
    the bucket keeps, oldest dropped first (100,000); ``cache_key``: the bucket's key;
    ``decode``: responses as str (True) or bytes."""

    def _call(self, *args: Any) -> Any:
        try:
            return self.client.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    def _vector(self, text: str) -> bytes:
        return vector_bytes(self.embed(text), "embedding")

    def lookup(self, session_key: Any, user_id: Any) -> Any:
        """The response cached for this user after a conversation like this one, or None.
        A session without turns misses without calling ``embed``."""
        user_id = _user_arg(user_id)
        text = self._text(self._call(*self._ctx_args(session_key)))
        if not text:
            return None
        vec = self._vector(text)
        self._remember(session_key, user_id, text, vec)
        return self._out(self._call(*self._get_args(user_id, text, vec)))

    def store(self, session_key: Any, user_id: Any, response: Any) -> Optional[int]:
        """Caches ``response`` for this user under the session's current last turns (store
        before adding the answer to the session). Returns the entry's id (None for a session
        without turns: nothing to key on)."""
        user_id = _user_arg(user_id)
        text = self._text(self._call(*self._ctx_args(session_key)))
        if not text:
            return None
        vec = self._remembered(session_key, user_id, text) or self._vector(text)
        return int(self._call(*self._set_args(user_id, text, vec, response)))

    def forget_user(self, user_id: Any) -> int:
        """Deletes every entry of this user (SEMCACHE.DEL ... FILTER user_id u)."""
        return int(self._call("SEMCACHE.DEL", self.cache_key, "FILTER", "user_id",
                              _user_arg(user_id)))


class AsyncConversationCache(_Base):
    """``ConversationCache`` for ``redis.asyncio`` clients; ``embed`` may be a plain function
    or a coroutine function (e.g. a LangChain ``Embeddings.aembed_query``)."""

    async def _call(self, *args: Any) -> Any:
        try:
            return await self.client.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    async def _vector(self, text: str) -> bytes:
        v: Vector = self.embed(text)
        if inspect.isawaitable(v):
            v = await v
        return vector_bytes(v, "embedding")

    async def lookup(self, session_key: Any, user_id: Any) -> Any:
        user_id = _user_arg(user_id)
        text = self._text(await self._call(*self._ctx_args(session_key)))
        if not text:
            return None
        vec = await self._vector(text)
        self._remember(session_key, user_id, text, vec)
        return self._out(await self._call(*self._get_args(user_id, text, vec)))

    async def store(self, session_key: Any, user_id: Any, response: Any) -> Optional[int]:
        user_id = _user_arg(user_id)
        text = self._text(await self._call(*self._ctx_args(session_key)))
        if not text:
            return None
        vec = self._remembered(session_key, user_id, text) or await self._vector(text)
        return int(await self._call(*self._set_args(user_id, text, vec, response)))

    async def forget_user(self, user_id: Any) -> int:
        return int(await self._call("SEMCACHE.DEL", self.cache_key, "FILTER", "user_id",
                                    _user_arg(user_id)))
