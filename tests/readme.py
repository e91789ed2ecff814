"""Reads the user's manual, README.md and every docs/*.md, so tests can hold the server to what
it says: command syntax rows, reply field lists, ACL recipes, INFO field names."""
import glob
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = os.path.join(ROOT, "README.md")
# README first, then the docs pages in name order; each page starts with its `# ` title.
FILES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
TEXT = "\n".join(open(path, encoding="utf-8").read() for path in FILES)


def flat(text=None):
    """The text with every run of whitespace as one space (claims span line breaks)."""
    return " ".join((TEXT if text is None else text).split())


def headings(text=None):
    """[(level, title, offset)] of the Markdown headings outside fenced code blocks (a `# `
    line in a code block is a comment, not a heading)."""
    text = TEXT if text is None else text
    found, offset, fenced = [], 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            m = re.match(r"(#{1,6}) (.+?)\s*$", line)
            if m:
                found.append((len(m.group(1)), m.group(2), offset))
        offset += len(line)
    return found


def section(title):
    """The text of the heading `# title` (a docs page: the whole page) or `## title`, up to the
    next heading of the same or a higher level."""
    all_headings = headings()
    matches = [i for i, (level, t, _) in enumerate(all_headings) if t == title and level <= 2]
    assert len(matches) == 1, f"the manual has {len(matches)} headings '# {title}' / '## {title}'"
    level, _, start = all_headings[matches[0]]
    end = next((off for lv, _, off in all_headings[matches[0] + 1:] if lv <= level), len(TEXT))
    return TEXT[start:end]


def command_rows():
    """{name: (syntax, reply cell)} for every table row whose first cell is a command. A
    command whose rows on two pages differ is an error (one of them drifted)."""
    rows = {}
    for line in TEXT.splitlines():
        m = re.match(r"^\| `([A-Z]+\.[A-Z_]+)((?: [^`]*)?)` \| (.*) \|$", line)
        if m:
            name, syntax, reply = m.groups()
            row = (syntax.strip().replace("\\|", "|"), reply.replace("\\|", "|"))
            assert rows.get(name, row) == row, f"two rows of {name} differ: {rows[name]} / {row}"
            rows[name] = row
    return rows


def summary_rows():
    """{name: link} of the README's command summary, whose rows link each command to its page:
    | [`NAME`](docs/page.md#anchor) | what it does |."""
    text = open(README, encoding="utf-8").read()
    return dict(re.findall(r"^\| \[`([A-Z]+\.[A-Z_]+)`\]\(([^)\s]+)\) \| .* \|$", text, flags=re.M))


def reply_fields(command):
    """The field names a map reply row lists in backticks: `a b c`."""
    reply = command_rows()[command][1]
    m = re.search(r"flat array \(RESP2\): `([a-z_ ]+)`|flat array: `([a-z_ ]+)`", reply)
    assert m, f"the manual's row of {command} lists no fields: {reply}"
    return (m.group(1) or m.group(2)).split()


def code_blocks(title):
    """The fenced code blocks of a section, as lists of lines."""
    return [b.strip("\n").splitlines()
            for b in re.findall(r"```[a-z]*\n(.*?)```", section(title), flags=re.S)]


def acl_recipes(for_redis_70):
    """The `ACL SETUSER` lines of the manual's recipe block for Valkey or for Redis 7.0."""
    for block in code_blocks("ACL and command docs"):
        if block and ("Redis 7.0" in block[0]) == for_redis_70 and any(
                line.startswith("ACL SETUSER") for line in block):
            return [line.split() for line in block if line.startswith("ACL SETUSER")]
    raise AssertionError("the manual has no ACL recipe block for " +
                         ("Redis 7.0" if for_redis_70 else "Valkey"))
