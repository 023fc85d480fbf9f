"""sha256 of files, streamed (weights and graphs can be hundreds of MB)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_file_cached(path: str | os.PathLike[str], cache_file: str | os.PathLike[str]) -> str:
    """:func:`sha256_file`, remembered in ``cache_file`` (JSON) by the file's identity — real
    path, size, modification time (ns) and inode — so a large weights file is hashed once, not
    on every run. A changed file (any of the four) is hashed again; an unreadable or broken
    cache is ignored and rewritten."""
    import json

    real = os.path.realpath(path)
    st = os.stat(real)
    ident = f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    cache_path = os.fspath(cache_file)
    try:
        with open(cache_path, encoding="utf-8") as f:
            table = json.load(f)
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    sha = table.get(ident)
    if isinstance(sha, str) and len(sha) == 64:
        return sha
    sha = sha256_file(real)
    table = {k: v for k, v in table.items() if not k.startswith(real + "\0")}
    table[ident] = sha
    try:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        tmp = f"{cache_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=0)
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return sha
