import asyncio

import redis.asyncio
from convcache import AsyncConversations


async def main():
    r = redis.asyncio.Redis(host="localhost", port=6379)
    conv = AsyncConversations(r)
    await conv.add("chat:7", "user", "hello")
    print([m.content for m in await conv.ctx("chat:7")])
    await r.aclose()

asyncio.run(main())
