"""`make bench`: runs every benches/bench_*.py in sorted order, each in its own process with
this process's environment, output streamed as it comes. Exits non-zero if any of them failed
(after running the rest, so one broken benchmark does not hide the others' figures)."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def scripts():
    return sorted(
        os.path.join(HERE, f)
        for f in os.listdir(HERE)
        if f.startswith("bench_") and f.endswith(".py")
    )


def main():
    found = scripts()
    if not found:
        print("no benches/bench_*.py to run", file=sys.stderr)
        return 1
    failed = []
    for path in found:
        name = os.path.basename(path)
        print(f"\n=== {name} ===", flush=True)
        start = time.monotonic()
        # Inherited stdout/stderr: the child's output reaches the terminal as it is written.
        rc = subprocess.call([sys.executable, "-u", path], env=os.environ.copy(), cwd=HERE)
        took = time.monotonic() - start
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"=== {name}: {status} in {took:.0f} s ===", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
