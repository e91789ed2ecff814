"""convcache from valkey-glide (Python, asyncio). glide takes every argument as str or bytes
(no ints: write "20", not 20) and returns bytes, so vectors stay binary-safe.

    pip install valkey-glide numpy
    PORT=6379 python glide_example.py
"""
import asyncio
import json
import os

import numpy as np
from glide import GlideClient, GlideClientConfiguration, NodeAddress


async def main(port: int) -> None:
    client = await GlideClient.create(GlideClientConfiguration([NodeAddress("127.0.0.1", port)]))
    try:
        seq = await client.custom_command(["CONV.ADD", "glide:chat", "user", "hello from glide",
                                           "META", json.dumps({"client": "glide"}), "WINDOW", "20"])
        ctx = json.loads(await client.custom_command(["CONV.CTX", "glide:chat", "COUNT", "10"]))
        assert ctx == [{"role": "user", "content": "hello from glide"}], ctx

        vec = np.array([1.0, 0.0, 0.0], dtype=np.float32)  # float32 little-endian bytes
        await client.custom_command(["SEMCACHE.SET", "glide:sc", vec.tobytes(), "Paris", "EX", "300"])
        near = np.array([0.99, 0.05, 0.0], dtype=np.float32)
        hit = await client.custom_command(["SEMCACHE.GET", "glide:sc", near.tobytes(), "MINSIM", "0.9"])
        assert hit == b"Paris", hit

        emb = np.array([0.25, -1.5, 3.0], dtype=np.float32)
        await client.custom_command(["URLEMB.SET", "glide:emb", emb.tobytes(), "EX", "3600"])
        back = np.frombuffer(await client.custom_command(["URLEMB.GET", "glide:emb"]), dtype="<f4")
        assert back.tolist() == [0.25, -1.5, 3.0], back
        print(f"ok seq={seq}")
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(int(os.environ.get("PORT", "6379"))))
