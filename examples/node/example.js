// convcache from Node: the same calls with ioredis and with valkey-glide.
// Vectors are float32 little-endian bytes (a Float32Array's buffer on every common CPU),
// sent as Buffers; binary replies need ioredis's callBuffer / glide's Decoder.Bytes.
//   PORT=6379 node example.js
const assert = require("node:assert/strict");
const Redis = require("ioredis");
const { GlideClient, Decoder } = require("@valkey/valkey-glide");

const port = Number(process.env.PORT || 6379);
const f32 = (xs) => Buffer.from(new Float32Array(xs).buffer);
// A reply Buffer may start at any offset of a shared pool: copy it to read it as float32.
const fromF32 = (buf) => Array.from(new Float32Array(Uint8Array.from(buf).buffer));

async function withIoredis() {
  const r = new Redis({ host: "127.0.0.1", port });
  // Conversation memory: CONV.ADD returns the turn's sequence number.
  const seq = await r.call("CONV.ADD", "node:chat", "user", "hello from ioredis",
                           "META", JSON.stringify({ client: "ioredis" }));
  await r.call("CONV.ADD", "node:chat", "assistant", "hi!");
  const ctx = JSON.parse(await r.call("CONV.CTX", "node:chat"));
  assert.deepEqual(ctx, [{ role: "user", content: "hello from ioredis" },
                         { role: "assistant", content: "hi!" }]);
  // Semantic cache: vector as a Buffer; the response is binary-safe, so read it as a Buffer.
  await r.call("SEMCACHE.SET", "node:sc", f32([1, 0, 0]), "Paris", "EX", 300);
  const hit = await r.callBuffer("SEMCACHE.GET", "node:sc", f32([0.99, 0.05, 0]));
  assert.equal(hit.toString(), "Paris");
  assert.equal(await r.callBuffer("SEMCACHE.GET", "node:sc", f32([0, 0, 1])), null);
  // Embedding cache: callBuffer, or the bytes are decoded as (broken) UTF-8 text.
  await r.call("URLEMB.SET", "node:emb:ioredis", f32([0.25, -1.5, 3]));
  const vec = fromF32(await r.callBuffer("URLEMB.GET", "node:emb:ioredis"));
  assert.deepEqual(vec, [0.25, -1.5, 3]);
  r.disconnect();
  return seq;
}

async function withGlide() {
  const c = await GlideClient.createClient({ addresses: [{ host: "127.0.0.1", port }] });
  try {
    // glide takes every argument as a string or a Buffer (numbers as strings).
    const seq = await c.customCommand(["CONV.ADD", "node:glide", "user", "hello from glide",
                                       "WINDOW", "20"]);
    const ctx = JSON.parse(await c.customCommand(["CONV.CTX", "node:glide", "COUNT", "5"]));
    assert.deepEqual(ctx, [{ role: "user", content: "hello from glide" }]);
    await c.customCommand(["SEMCACHE.SET", "node:sc", f32([0, 1, 0]), "Rome"]);
    const hit = await c.customCommand(["SEMCACHE.GET", "node:sc", f32([0, 1, 0.01]), "MINSIM", "0.9"],
                                      { decoder: Decoder.Bytes });
    assert.ok(Buffer.isBuffer(hit));
    assert.equal(hit.toString(), "Rome");
    await c.customCommand(["URLEMB.SET", "node:emb:glide", f32([1, 2, 3.5]), "EX", "3600"]);
    const vec = await c.customCommand(["URLEMB.GET", "node:emb:glide"], { decoder: Decoder.Bytes });
    assert.deepEqual(fromF32(vec), [1, 2, 3.5]);
    return seq;
  } finally {
    c.close();
  }
}

(async () => {
  const a = await withIoredis();
  const b = await withGlide();
  console.log(`ok ioredis seq=${a} glide seq=${b}`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
