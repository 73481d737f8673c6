"""Storage and tracking URLs: the embedded defaults, and redaction for anything printed."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_STORE_DIR = Path("mlruns")


def default_storage(store_dir: Path = DEFAULT_STORE_DIR) -> str:
    """The embedded Optuna storage: a SQLite file under ``store_dir``."""
    return f"sqlite:///{(store_dir / 'optuna.db').resolve()}"


def default_tracking_uri(store_dir: Path = DEFAULT_STORE_DIR) -> str:
    """The embedded MLflow store: a SQLite file under ``store_dir``."""
    return f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for any other URL (in-memory included)."""
    match = re.match(r"sqlite:///(.+?)(\?.*)?$", url)
    return Path(match.group(1)) if match and match.group(1) != ":memory:" else None


def store_dir(storage_url: str) -> Path:
    """Where local state beside a study storage goes: the SQLite file's folder, else
    ``mlruns``."""
    db = sqlite_path(storage_url)
    return (db.parent if db else DEFAULT_STORE_DIR).resolve()


def default_artifact_root(tracking_uri: str) -> Path | None:
    """Where runs of a database-backed tracking store keep their artifacts.

    Beside the SQLite file (``mlruns/artifacts`` for the default); ``mlruns/artifacts`` for
    another database; None for a tracking server, which decides itself.
    """
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    db = sqlite_path(tracking_uri)
    return (db.parent if db else DEFAULT_STORE_DIR).resolve() / "artifacts"


# scheme://user:password@ -- the password up to the last "@" of the word, as broad as any
# parser reads it: SQLAlchemy takes "hunter/2" in "bob:hunter/2@host" whole, where urlsplit
# sees no password at all, and "hun[ter2" makes urlsplit raise.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s]*@")
# ...?password=... as libpq and SQLAlchemy accept it.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a URL, or a message that holds URLs) with every password in a URL replaced
    by ``***``: safe for logs, tags and errors."""
    text = _USERINFO.sub(r"\g<head>:***@", text)
    return _QUERY_PASSWORD.sub(r"\g<head>***", text)
