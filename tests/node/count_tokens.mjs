// Reference token counts for tests/test_tokens.py: reads a JSON array of strings on stdin,
// prints {"cl100k_base": [...], "o200k_base": [...]}. Special-token text such as
// <|endoftext|> is encoded as plain text (nothing allowed, nothing disallowed), as
// tiktoken's encode_ordinary does.
import { getEncoding } from "js-tiktoken";

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const texts = JSON.parse(input);
const out = {};
for (const name of ["cl100k_base", "o200k_base"]) {
  const enc = getEncoding(name);
  out[name] = texts.map((t) => enc.encode(t, [], []).length);
}
process.stdout.write(JSON.stringify(out));
