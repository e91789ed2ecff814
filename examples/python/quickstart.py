import numpy as np
import redis
from convcache import Conversations, EmbeddingCache, SemanticCache

r = redis.Redis(host="localhost", port=6379)  # or redis.RedisCluster(...)
conv, sem, emb = Conversations(r), SemanticCache(r), EmbeddingCache(r)

# Conversation memory: one key per session.
conv.add("chat:42", "user", "What's the weather in Tokyo?", meta={"lang": "en"})
conv.add("chat:42", "assistant", "22°C and sunny.")
window = conv.ctx("chat:42", tokens=3000)            # [Message(role, content, seq, ts, meta)]
prompt = [m.to_chat() for m in window]               # [{"role": ..., "content": ...}]
print(conv.info("chat:42").len, prompt[-1]["content"])

# Semantic cache: vectors as numpy arrays, lists of floats or float32 bytes.
q = np.random.default_rng(0).standard_normal(384).astype(np.float32)
if sem.get("sc:weather", q, min_sim=0.9) is None:
    sem.set("sc:weather", q, "22°C and sunny.", ex=300, meta={"model": "gpt-4o"})
print(sem.lookup("sc:weather", q, count=3))          # [Hit(id, response, score, meta)]

# Embedding cache.
emb.set("url:https://example.com", q, ex=86400)
print(emb.mget(["url:https://example.com", "url:missing"])[1])  # None
