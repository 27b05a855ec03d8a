"""Where a campaign lives (its folder, local or a URI), the names it is found by, and its Optuna
study's database: what the results commands need, without importing Ray Tune
(``rectune.tune.campaign`` runs campaigns)."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from rectune.errors import ConfigError, first_line

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEFAULT_STORAGE = "campaigns"
STORAGE_ENV = "RECTUNE_STORAGE"
STUDY_DB_ENV = "RECTUNE_STUDY_DB"
TUNE_TRIAL_ATTR = "tune_trial_id"


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass
class CampaignFolder:
    """Where a campaign lives: a local folder or a URI (``s3://...``) read through pyarrow."""

    storage: str
    name: str

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ConfigError(f"--name '{self.name}': expected letters, digits, '_', '.', '-' (at most 100, "
                              f"starting with a letter or digit)")
        if not is_uri(self.storage):
            self.storage = str(Path(self.storage).expanduser().resolve())

    @property
    def root(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @property
    def local(self) -> Path | None:
        return None if is_uri(self.storage) else Path(self.root)

    def _fs(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.root)

    def read(self, name: str) -> str | None:
        """The file's text, or None where it is absent. Bytes that are not UTF-8 (a damaged file)
        are replaced, so that the file's own parser refuses it with a line naming it."""
        if self.local is not None:
            p = self.local / name
            try:
                return p.read_bytes().decode(errors="replace") if p.is_file() else None
            except FileNotFoundError:  # removed since it was listed
                return None
            except OSError as exc:
                raise ConfigError(f"{p}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        fs, base = self._fs()
        import pyarrow.fs

        if fs.get_file_info(f"{base}/{name}").type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(f"{base}/{name}") as f:
            return f.read().decode(errors="replace")

    def write(self, name: str, text: str) -> None:
        """Whole file or nothing (a local temp file renamed over the old one)."""
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            tmp = self.local / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.local / name)
            return
        fs, base = self._fs()
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(f"{base}/{name}") as f:
            f.write(text.encode())

    def meta(self) -> dict | None:
        text = self.read("campaign.json")
        if text is None:
            return None
        try:
            meta = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"{self.root}/campaign.json: not valid JSON; the campaign folder is damaged") from None
        if not isinstance(meta, dict):
            raise ConfigError(f"{self.root}/campaign.json: expected a JSON object, got {_json_kind(meta)}; "
                              f"the campaign folder is damaged")
        return meta

    def save_meta(self, meta: dict) -> None:
        self.write("campaign.json", json.dumps(meta, indent=1, default=str))

    def study_url(self, given: str | None) -> str:
        url = given or os.environ.get(STUDY_DB_ENV)
        if url:
            return url
        if self.local is None:
            raise ConfigError(f"--storage {self.storage}: a remote campaign storage needs --study-db (a database "
                              f"every node reaches, e.g. postgresql://user@host:5432/db); SQLite is for one machine")
        return f"sqlite:///{self.local / 'study.db'}"


def _json_kind(value) -> str:
    """What JSON calls ``value``'s type (as a user reads the file)."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else "null"


def redact(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def study_storage(url: str, attempts: int = 5):
    """The campaign's Optuna ``RDBStorage`` (its tables made on first use), or a one-line ConfigError."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.DBAPIError as exc:
            # another process set the same fresh database up at the same moment (two campaigns, or
            # a campaign and a reader, starting at once; Optuna's table set-up is not atomic):
            # "table ... already exists", a duplicate alembic version. The tables are there now,
            # so opening the database again succeeds.
            why = first_line(exc.orig)
            if not (isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in why):
                raise _storage_error(url, exc, why) from None
            if attempt == attempts - 1:
                raise ConfigError(f"--study-db {redact(url)}: could not set the study database up ({why}); "
                                  f"nothing was changed") from None
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as exc:
            raise ConfigError(f"--study-db {redact(url)}: not a usable SQLAlchemy database URL ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None


def _storage_error(url: str, exc, why: str) -> ConfigError:
    """A database error other than a set-up collision, as a one-line error."""
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.OperationalError) and "not a database" not in why:
        return ConfigError(f"--study-db {redact(url)}: cannot connect ({why})")
    # e.g. a SQLite file cut short: "file is not a database"
    return ConfigError(f"--study-db {redact(url)}: not a usable study database ({why}); nothing was changed")
