"""convcache: typed Python client for the convcache Valkey/Redis module.

    import redis
    from convcache import Conversations, SemanticCache, EmbeddingCache

    r = redis.Redis()
    Conversations(r).add("chat:42", "user", "hello")

``convcache.lix`` is a drop-in for lix-open-cache 2.1.6; ``convcache.langchain`` has
LangChain's chat history and LLM cache classes; ``convcache.langgraph`` LangGraph's
checkpointers and store. ``ConversationCache`` is a semantic cache keyed on a session's last
turns.
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
from .conversation_cache import AsyncConversationCache, ConversationCache

__version__ = "0.1.0"

__all__ = [
    "AsyncConversationCache",
    "AsyncConversations",
    "AsyncEmbeddingCache",
    "AsyncSemanticCache",
    "BucketInfo",
    "ConversationCache",
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
