"""``querygpt-backend``: validate configuration, then run uvicorn; or, with
``reindex``, rebuild collections from the documents bucket; or, with ``migrate``,
bring the database schema to this release's revision.

Configuration is validated here, in the parent process, so a bad variable
stops the systemd unit immediately with one readable line (exit code 2)
instead of a traceback repeated by every worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .config import Settings, is_valid_collection_name
from .envfile import DEFAULT_ENV_FILE, EnvFileError, merged_environment
from .errors import ConfigError
from .logs import setup_logging

if TYPE_CHECKING:
    from .database import Database
    from .identity import IdentityStore

log = logging.getLogger("querygpt.cli")

USAGE = """\
usage: querygpt-backend [--version]
       querygpt-backend reindex (--collection NAME [--collection NAME ...] | --all)
                                [--env-file PATH]
       querygpt-backend migrate [--check] [--env-file PATH]
       querygpt-backend create-admin --username NAME [--env-file PATH]
                                     (the password is read from stdin, one line)
       querygpt-backend create-token --username NAME --name LABEL
                                     [--expires-in-days N] [--env-file PATH]
Without arguments the API server runs; all its settings come from QUERYGPT_*
environment variables (see README.md)."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-V", "--version"):
        print(__version__)
        return 0
    if args and args[0] == "reindex":
        return reindex_command(args[1:])
    if args and args[0] == "migrate":
        return migrate_command(args[1:])
    if args and args[0] == "create-admin":
        return create_admin_command(args[1:])
    if args and args[0] == "create-token":
        return create_token_command(args[1:])
    if args:
        print(USAGE, file=sys.stderr)
        return 2
    return serve()


def serve() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"querygpt-backend: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, secrets=settings.secrets())

    # Read the variable directly: importing querygpt.metrics would create its gauges, which in
    # multiprocess mode open files in the directory before it has been created and reset.
    prom_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if prom_dir:
        try:
            _reset_multiprocess_dir(Path(prom_dir))
        except OSError as exc:
            print(
                f"querygpt-backend: PROMETHEUS_MULTIPROC_DIR {prom_dir!r} is not usable: {exc}",
                file=sys.stderr,
            )
            return 2
    elif settings.workers > 1:
        log.warning(
            "QUERYGPT_WORKERS > 1 without PROMETHEUS_MULTIPROC_DIR: each scrape of "
            "/metrics sees only the worker that answered it"
        )

    import uvicorn  # imported late: --version and config errors stay fast

    from querygpt.transport import NoDelayHTTPProtocol

    uvicorn.run(
        "querygpt.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,  # keep our JSON handler
        access_log=False,  # the middleware writes the access line
        log_level=settings.log_level.lower(),
        server_header=False,
        http=NoDelayHTTPProtocol,  # no delayed-ACK stall on kept-alive connections
        **_tls_options(settings),
    )
    return 0


# TLS 1.2 and 1.3 only (Python's server default minimum is TLS 1.2), and for TLS 1.2 forward-
# secret AEAD suites only: uvicorn's own default cipher string ("TLSv1") would also offer CBC
# and RSA key exchange. The same list as the Ollama proxy and the public edge.
TLS_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def _tls_options(settings: Settings) -> dict[str, object]:
    """uvicorn's TLS arguments: none when the settings name no certificate."""
    if not settings.tls_cert_file:
        return {}
    return {
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
        "ssl_ciphers": TLS_CIPHERS,
    }


def _command_settings(prog: str, env_file: Path | None) -> Settings | int:
    """The settings of a maintenance command (environment file, then environment), or its
    exit code 2 after saying what is wrong."""
    if env_file is None and DEFAULT_ENV_FILE.exists():
        env_file = DEFAULT_ENV_FILE
    try:
        environ = merged_environment(env_file, os.environ) if env_file else dict(os.environ)
        return Settings.from_env(environ)
    except EnvFileError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        source = f" (read from {env_file} and the environment)" if env_file else ""
        print(f"{prog}: invalid configuration{source}: {exc}", file=sys.stderr)
        return 2


def _add_env_file_option(parser: argparse.ArgumentParser) -> None:
    """--env-file, as every maintenance command takes it (they read the service's settings)."""
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help=(
            f"the service's environment file (default: {DEFAULT_ENV_FILE} when it exists); "
            "variables already set in the environment take precedence"
        ),
    )


def migrate_command(args: list[str]) -> int:
    """``querygpt-backend migrate``: 0 when the schema is at this release's head, 1 when a
    migration failed (or, with --check, when revisions are pending), 2 for usage or
    configuration, 3 when --check could not read the database."""
    prog = "querygpt-backend migrate"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Apply this release's pending schema migrations (alembic upgrade head) under a "
            "PostgreSQL advisory lock, so hosts running it at once take turns. Each revision "
            "is one transaction: a failure leaves the previous revision in place. Prints the "
            "revision before and after on stdout; logs go to stderr."
        ),
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing: exit 0 when the schema is at head, 1 listing pending revisions",
    )
    _add_env_file_option(parser)
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    settings = _command_settings(prog, options.env_file)
    if isinstance(settings, int):
        return settings
    setup_logging(settings.log_level, secrets=settings.secrets(), to_stderr=True)

    from . import migrate  # imported late: alembic and SQLAlchemy are slow to import
    from .database import make_engine

    engine = make_engine(settings, for_migrations=True)
    try:
        if options.check:
            return _migrate_check(prog, engine)
        try:
            before, after = migrate.upgrade(engine)
        except migrate.MigrationError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # noqa: BLE001 - the database's message, without a traceback
            print(f"{prog}: could not migrate: {_db_reason(exc)}", file=sys.stderr)
            return 1
        print(f"revision before: {before.current or 'none (empty database)'}")
        print(f"revision after: {after or 'none'}")
        if before.ahead:
            print(
                f"the database is at {before.current}, newer than this release's head "
                f"{before.head}: nothing to do (expand/contract keeps this release working)"
            )
        elif before.pending:
            print(f"applied: {' '.join(before.pending)}")
        else:
            print("already at head: nothing to do")
        return 0
    finally:
        engine.dispose()


def _migrate_check(prog: str, engine: object) -> int:
    from . import migrate

    try:
        with engine.connect() as connection:
            state = migrate.status(connection)
    except Exception as exc:  # noqa: BLE001
        print(f"{prog} --check: could not read the schema revision: {_db_reason(exc)}", file=sys.stderr)
        return 3
    print(f"revision: {state.current or 'none (empty database)'}")
    print(f"head: {state.head}")
    if state.ahead:
        print("the database is newer than this release (expand/contract: compatible)")
        return 0
    if state.pending:
        print(f"pending: {' '.join(state.pending)}")
        return 1
    print("at head")
    return 0


def _db_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def reindex_command(args: list[str]) -> int:
    """``querygpt-backend reindex``: 0 if every document was indexed, 1 if any
    failed (the JSON summary on stdout lists them), 2 for usage or configuration."""
    parser = argparse.ArgumentParser(
        prog="querygpt-backend reindex",
        description=(
            "Rebuild Qdrant collections from the originals in the documents bucket "
            "(current object versions; sha256 verified). Safe to rerun: the same "
            "objects give the same points. Prints a JSON summary on stdout; logs go "
            "to stderr."
        ),
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="collection to rebuild (repeatable)",
    )
    which.add_argument(
        "--all", action="store_true", help="every collection folder under the key prefix"
    )
    _add_env_file_option(parser)
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:  # argparse's own --help (0) and usage errors (2)
        return int(exc.code or 0)
    for name in options.collection or ():
        if not is_valid_collection_name(name):
            print(
                f"querygpt-backend reindex: --collection {name!r} is not a collection name "
                "(1-64 letters, digits, '_' or '-')",
                file=sys.stderr,
            )
            return 2

    settings = _command_settings("querygpt-backend reindex", options.env_file)
    if isinstance(settings, int):
        return settings
    # stdout carries only the summary, so it can be piped to jq.
    setup_logging(settings.log_level, secrets=settings.secrets(), to_stderr=True)

    from . import reindex  # imported late: qdrant-client and boto3 are slow to import

    summary = reindex.run(settings, None if options.all else options.collection)
    print(json.dumps(summary.as_dict()))
    return 0 if summary.ok else 1


def _identity_store(settings: Settings) -> tuple[IdentityStore, Database]:
    """(IdentityStore, Database) on the service's database, for the identity commands."""
    from .database import Database
    from .identity import IdentityStore

    database = Database.connect(settings)
    return IdentityStore(database), database


def create_admin_command(args: list[str]) -> int:
    """``querygpt-backend create-admin``: 0 when the admin exists with the new password, 1
    when the database failed, 2 for usage, configuration or a refused password."""
    prog = "querygpt-backend create-admin"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Create an admin, or make an existing user an (enabled) admin with a new password. "
            "The password is read from stdin (one line; never an argument or a variable)."
        ),
    )
    parser.add_argument("--username", required=True, metavar="NAME")
    _add_env_file_option(parser)
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)

    from .auth import (
        audit,
        audit_values,
        check_password_rules,
        check_username,
        hash_password,
    )
    from .errors import InvalidRequest

    try:
        check_username(options.username)
    except InvalidRequest as exc:
        print(f"{prog}: {exc.detail}", file=sys.stderr)
        return 2
    settings = _command_settings(prog, options.env_file)
    if isinstance(settings, int):
        return settings
    setup_logging(settings.log_level, secrets=settings.secrets(), to_stderr=True)
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password (at least 12 characters): ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_password_rules(password)
    except InvalidRequest as exc:
        print(f"{prog}: refused: {exc.detail}", file=sys.stderr)
        return 2
    from .errors import QueryGPTError

    store, database = _identity_store(settings)
    try:
        user, created = store.upsert_admin(options.username, hash_password(password))
        audit(
            store,
            audit_values(
                "user_create" if created else "user_update",
                outcome="success",
                actor_username="cli",
                auth_method="cli",
                target=user.username,
                details={"role": "admin", "changed": ["password", "role", "disabled"]}
                if not created else {"role": "admin"},
            ),
        )
    except QueryGPTError as exc:
        print(f"{prog}: {exc.operator_detail}", file=sys.stderr)
        return 1
    finally:
        database.close()
    print(f"{'created' if created else 'updated'} admin {user.username}", file=sys.stderr)
    return 0


def create_token_command(args: list[str]) -> int:
    """``querygpt-backend create-token``: prints only the new token on stdout; 0 done, 1 the
    database failed, 2 usage or configuration, 3 no such user (or a disabled one)."""
    prog = "querygpt-backend create-token"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Create an API token for a user and print it (once) on stdout.",
    )
    parser.add_argument("--username", required=True, metavar="NAME")
    parser.add_argument("--name", required=True, metavar="LABEL", help="what the token is for")
    parser.add_argument(
        "--expires-in-days", type=int, default=90, metavar="N", help="1-365 (default 90)"
    )
    _add_env_file_option(parser)
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    from .auth import TOKEN_DAYS_MAX, audit, audit_values, new_token

    if not 1 <= options.expires_in_days <= TOKEN_DAYS_MAX:
        print(f"{prog}: --expires-in-days must be between 1 and {TOKEN_DAYS_MAX}", file=sys.stderr)
        return 2
    label = options.name.strip()
    if not label or len(label) > 100 or not label.isprintable():
        print(f"{prog}: --name must be 1-100 printable characters", file=sys.stderr)
        return 2
    settings = _command_settings(prog, options.env_file)
    if isinstance(settings, int):
        return settings
    setup_logging(settings.log_level, secrets=settings.secrets(), to_stderr=True)
    from .errors import QueryGPTError

    store, database = _identity_store(settings)
    try:
        user = store.user(options.username)
        if user is None or user.disabled:
            state = "does not exist" if user is None else "is disabled"
            print(f"{prog}: user {options.username!r} {state}", file=sys.stderr)
            return 3
        token = new_token()
        record = store.create_token(
            user.id, label, token.sha256, token.prefix, options.expires_in_days
        )
        audit(
            store,
            audit_values(
                "token_create",
                outcome="success",
                actor_username="cli",
                auth_method="cli",
                target=str(record.id),
                details={"name": label, "owner": user.username, "prefix": record.prefix,
                         "expires_in_days": options.expires_in_days},
            ),
        )
    except QueryGPTError as exc:
        print(f"{prog}: {exc.operator_detail}", file=sys.stderr)
        return 1
    finally:
        database.close()
    print(token.token)
    return 0


def _reset_multiprocess_dir(path: Path) -> None:
    """Remove metric files left by previous runs, as prometheus_client requires.

    Stale files from dead processes would otherwise be summed forever.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    if not os.access(path, os.W_OK):
        raise PermissionError("directory is not writable")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
