"""convcache: typed Python client for the convcache Valkey/Redis module.

    import redis
    from convcache import Conversations, SemanticCache, EmbeddingCache

    r = redis.Redis()
    Conversations(r).add("chat:42", "user", "hello")

``convcache.lix`` is a drop-in for lix-open-cache 2.1.6; ``convcache.langchain`` has
LangChain's chat history and LLM cache classes.
"""
from ._common import ConvcacheError, ModuleNotLoadedError, WrongTypeError
from .client import (
    AsyncConversations,
    AsyncEmbeddingCache,
    AsyncSemanticCache,
    BucketInfo,
    Conversations,
    EmbeddingCache,
    Hit,
    Message,
    SearchResult,
    SemanticCache,
    SessionInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncConversations",
    "AsyncEmbeddingCache",
    "AsyncSemanticCache",
    "BucketInfo",
    "ConvcacheError",
    "Conversations",
    "EmbeddingCache",
    "Hit",
    "Message",
    "ModuleNotLoadedError",
    "SearchResult",
    "SemanticCache",
    "SessionInfo",
    "WrongTypeError",
]
