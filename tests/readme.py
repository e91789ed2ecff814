"""Reads README.md, the user's manual, so tests can hold the server to what it says: command
syntax rows, reply field lists, ACL recipes, INFO field names."""
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")
TEXT = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def flat(text=None):
    """The text with every run of whitespace as one space (claims span line breaks)."""
    return " ".join((TEXT if text is None else text).split())


def section(title):
    """The text of `## title` up to the next `## ` heading."""
    start = TEXT.index(f"\n## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start:end if end >= 0 else len(TEXT)]


def command_rows():
    """{name: (syntax, reply cell)} for every table row whose first cell is a command."""
    rows = {}
    for line in TEXT.splitlines():
        m = re.match(r"^\| `([A-Z]+\.[A-Z_]+)((?: [^`]*)?)` \| (.*) \|$", line)
        if m:
            name, syntax, reply = m.groups()
            rows[name] = (syntax.strip().replace("\\|", "|"), reply.replace("\\|", "|"))
    return rows


def reply_fields(command):
    """The field names a map reply row lists in backticks: `a b c`."""
    reply = command_rows()[command][1]
    m = re.search(r"flat array \(RESP2\): `([a-z_ ]+)`|flat array: `([a-z_ ]+)`", reply)
    assert m, f"README row of {command} lists no fields: {reply}"
    return (m.group(1) or m.group(2)).split()


def code_blocks(title):
    """The fenced code blocks of a section, as lists of lines."""
    return [b.strip("\n").splitlines()
            for b in re.findall(r"```[a-z]*\n(.*?)```", section(title), flags=re.S)]


def acl_recipes(for_redis_70):
    """The `ACL SETUSER` lines of the README's recipe block for Valkey or for Redis 7.0."""
    for block in code_blocks("ACL and command docs"):
        if block and ("Redis 7.0" in block[0]) == for_redis_70 and any(
                line.startswith("ACL SETUSER") for line in block):
            return [line.split() for line in block if line.startswith("ACL SETUSER")]
    raise AssertionError("README has no ACL recipe block for " +
                         ("Redis 7.0" if for_redis_70 else "Valkey"))
